"""Adaptive level (ACI with delayed feedback) on the paper model: worked out by hand.

The window is 41 B cases closed 8-10 days before AS_OF with residuals -1.0 .. 1.0 by 0.05, so
at level L the ends are -/+ L exactly (the (1 - L) / 2 quantile is -L). Later B requests score
raw 3.0, and each outcome is set by its own residual."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from sf311.model.features import record_features
from sf311.model.online import (
    REQUESTS,
    OnlineRule,
    _eligible_closures,
    _served,
    aci_step,
    adaptive_levels,
    closure_recalibration,
    recalibrate,
    replay,
    sorted_quantile,
    usable_requests,
)
from sf311.model.scorer import Scorer

# 18:00 UTC is 11:00 in San Francisco (daylight time): B before 12:00 scores raw 3.0.
AS_OF = datetime(2019, 3, 31, 18, tzinfo=UTC)
T0 = AS_OF - timedelta(days=5)
EVEN = list(np.linspace(-1.0, 1.0, 41))
# gamma 0.05 and target 0.8: a hit moves the level by -0.01, a miss by +0.04.
RULE = OnlineRule(window_cases=100, min_cases=20, level=0.8, adaptive_gamma=0.05)


def cases_at(residuals: list[float | None], first: datetime, gap: timedelta) -> pd.DataFrame:
    """Return B cases requested `gap` apart from `first`, each closed after log1p(hours) = 3.0 +
    its residual (None: never closed)."""
    requested = [first + i * gap for i in range(len(residuals))]
    closed = [
        None if r is None else at + timedelta(hours=math.expm1(3.0 + r))
        for at, r in zip(requested, residuals, strict=True)
    ]
    return pd.DataFrame(
        {
            "requested_datetime": pd.to_datetime(requested, utc=True),
            "closed_date": pd.to_datetime(closed, utc=True),
            "service_name": "B",
        }
    )


def window() -> pd.DataFrame:
    """Return the 41 window cases, the largest |residual| requested first: those a short
    horizon replays are well inside the training ends -/+1, hits whatever the rounding."""
    ordered = sorted(EVEN, key=abs, reverse=True)
    return cases_at(ordered, AS_OF - timedelta(days=10), timedelta(minutes=1))


def at(hours: float) -> float:
    """Return the instant `hours` after T0 in epoch seconds."""
    return (T0 + timedelta(hours=hours)).timestamp()


# R1 at T0 (+0.9: above +0.8, still open 43.7 h on: a miss then, closed at 48.4 h);
# R2 at T0 + 45 h (+0.83: a hit at 0.84, a miss at 0.82 or less; closed at 90.1 h);
# R3 at T0 + 46 h (-0.9: below, a miss known at its closure, 53.2 h).
def three_requests() -> pd.DataFrame:
    return pd.concat(
        [
            cases_at([0.9], T0, timedelta(0)),
            cases_at([0.83, -0.9], T0 + timedelta(hours=45), timedelta(hours=1)),
        ]
    )


def test_a_hit_lowers_and_a_miss_raises_the_level_by_gamma_times_the_error() -> None:
    assert aci_step(0.8, False, 0.8, RULE) == pytest.approx(0.79)
    assert aci_step(0.8, True, 0.8, RULE) == pytest.approx(0.84)


def test_every_step_is_clipped_to_the_level_range() -> None:
    rule = OnlineRule(level=0.8, adaptive_gamma=0.5, adaptive_min_level=0.5, adaptive_max_level=0.9)
    assert aci_step(0.8, True, 0.8, rule) == 0.9
    assert aci_step(0.55, False, 0.8, rule) == 0.5


def test_the_level_moves_once_per_outcome_when_it_is_revealed(paper_scorer: Scorer) -> None:
    cases = pd.concat([window(), three_requests()])
    rule = replace(RULE, adaptive_horizon=3)
    instants = np.array([at(46.1), at(48.0), at(54.0), AS_OF.timestamp()])
    levels = adaptive_levels(paper_scorer, cases, instants, rule)
    # Replayed over R1..R3 from 0.8: R1 served -/+0.8, its miss known at 43.7 h; R2 and R3
    # served -/+0.84; R3's miss known at its closure, 53.2 h; R2's hit at its closure, 90.1 h.
    # R1's own closure at 48.4 h moves nothing more.
    assert [lv.level for lv in levels] == pytest.approx([0.84, 0.84, 0.88, 0.87])
    assert [(lv.n_revealed, lv.n_missed) for lv in levels] == [(1, 1), (1, 1), (2, 2), (3, 2)]
    assert {lv.n_requests for lv in levels} == {3}


def test_each_request_gets_the_level_of_what_was_revealed_before_it(paper_scorer: Scorer) -> None:
    cases = pd.concat([window(), three_requests()])
    rule = replace(RULE, adaptive_horizon=3)
    requests = three_requests().sort_values("requested_datetime")
    bands, online = replay(paper_scorer, cases, requests, rule)
    assert online.tolist() == [True] * 3
    # Each request's level is replayed over the 3 requests before it. R1: the last 3 window
    # cases, hits: 0.77, and +0.9 is a miss known at expm1(3.77) = 42.4 h. R2: 2 window hits
    # and R1's miss: 0.82. R3: 1 window hit and R1's miss (R2's outcome comes later): 0.83.
    np.testing.assert_allclose(
        bands, [[2.23, 3.0, 3.77], [2.18, 3.0, 3.82], [2.17, 3.0, 3.83]], atol=1e-9
    )


def test_a_case_still_open_past_the_upper_end_is_a_miss_from_then(paper_scorer: Scorer) -> None:
    cases = pd.concat([window(), cases_at([None], T0, timedelta(0))])
    rule = replace(RULE, adaptive_horizon=1)
    # Upper end 3.8: open past expm1(3.8) = 43.70 h.
    before, after = adaptive_levels(paper_scorer, cases, np.array([at(43.6), at(43.8)]), rule)
    assert (before.level, before.n_revealed) == (0.8, 0)
    assert (after.level, after.n_revealed, after.n_missed) == (pytest.approx(0.84), 1, 1)


def test_a_closure_not_yet_known_moves_nothing(paper_scorer: Scorer) -> None:
    # R2's hit is known only at 90.1 h: a level asked for just before counts it nowhere.
    cases = pd.concat([window(), three_requests()])
    rule = replace(RULE, adaptive_horizon=3)
    (level,) = adaptive_levels(paper_scorer, cases, np.array([at(89.0)]), rule)
    assert (level.level, level.n_revealed) == (pytest.approx(0.88), 2)


def test_the_level_is_clipped_before_the_next_outcome(paper_scorer: Scorer) -> None:
    # gamma 0.5: R1's miss takes 0.8 to 1.2, clipped to 0.99; R2 (+0.95) is then served
    # -/+0.99, a hit: 0.89. Clipping only at the end would give min(1.2 - 0.1, 0.99) = 0.99.
    r2 = cases_at([0.95], T0 + timedelta(hours=45), timedelta(0))
    cases = pd.concat([window(), cases_at([0.9], T0, timedelta(0)), r2])
    rule = replace(RULE, adaptive_gamma=0.5, adaptive_horizon=2)
    (level,) = adaptive_levels(paper_scorer, cases, np.array([AS_OF.timestamp()]), rule)
    assert (level.level, level.n_revealed, level.n_missed) == (pytest.approx(0.89), 2, 1)


def test_the_api_recalibration_uses_the_replayed_level(paper_scorer: Scorer) -> None:
    cases = pd.concat([window(), three_requests()])
    rule = replace(RULE, adaptive_horizon=3)
    recal = recalibrate(paper_scorer, cases, AS_OF, rule)
    info = recal.info()
    assert info["level"] == pytest.approx(0.87)
    assert info["adaptive"]["n_revealed"] == 3 and info["adaptive"]["n_missed"] == 2
    # 44 residuals: EVEN, +0.9, +0.83 and -0.9. At 0.87 the 6.5 % and 93.5 % quantiles fall
    # between the two -0.9 and the two +0.9 (at the fixed 0.8: -0.835 and 0.844).
    np.testing.assert_allclose(recal.calibration["global"], [-0.9, 0.0, 0.9], atol=1e-6)


def test_without_gamma_the_level_stays_fixed(paper_scorer: Scorer) -> None:
    cases = pd.concat([window(), three_requests()])
    recal = recalibrate(paper_scorer, cases, AS_OF, replace(RULE, adaptive_gamma=0.0))
    assert (recal.level, recal.adaptive) == (0.8, None)
    # 10 % of the 44: -0.85 + 0.3 * 0.05; 90 %: 0.83 + 0.7 * 0.02.
    np.testing.assert_allclose(recal.calibration["global"], [-0.835, 0.0, 0.844], atol=1e-6)


def test_the_adaptive_level_needs_the_closures_method() -> None:
    with pytest.raises(ValueError, match="closures"):
        OnlineRule(method=REQUESTS, adaptive_gamma=0.01)


@pytest.mark.parametrize("n", [1, 2, 7, 41, 100, 257])
def test_sorted_quantile_is_numpys_linear_quantile(n: int) -> None:
    values = np.sort(np.random.default_rng(n).normal(size=n))
    probs = [0.0, 0.005, 0.08, 0.1, 1 / 3, 0.5, 0.75, 0.9, 0.92, 0.995, 1.0]
    mine = [sorted_quantile(values.tolist(), p) for p in probs]
    assert mine == np.quantile(values, probs).tolist()


def test_replayed_ends_are_the_served_bands(paper_scorer: Scorer) -> None:
    # Residuals 1.0 .. 2.0: the window sits above both centres (B 0.0, A 0.1), so the low end
    # is the centre; A and B requests, one before the window closes (training ends).
    closures = cases_at(list(np.linspace(1.0, 2.0, 41)), AS_OF - timedelta(days=20), timedelta(0))
    early = cases_at([0.0], AS_OF - timedelta(days=20), timedelta(0))
    late = cases_at([0.0, 0.0], T0, timedelta(hours=1)).assign(service_name=["A", "B"])
    cases = pd.concat([closures, early, late])
    rule = OnlineRule(100, 20, level=0.8, adaptive_gamma=0.01)
    requests = usable_requests(pd.concat([early, late]))
    served = _served(
        paper_scorer, requests, _eligible_closures(paper_scorer, cases, rule, None), rule
    )
    for j, row in enumerate(requests.to_dict("records")):
        for level in (0.6, 0.8, 0.95):
            at_level = replace(RULE, level=level, adaptive_gamma=0.0)
            window_at = cases[pd.to_datetime(cases["closed_date"]) < row["requested_datetime"]]
            resid = (
                np.log1p(
                    (window_at["closed_date"] - window_at["requested_datetime"]).dt.total_seconds()
                    / 3600
                )
                - 3.0
            )
            recal = closure_recalibration(
                paper_scorer.calibration, resid.to_numpy(), row["requested_datetime"], at_level
            )
            pred = paper_scorer.predict_features([record_features(row)], recal.calibration)
            assert served.ends(j, level) == pytest.approx((pred.log_lower[0], pred.log_upper[0]))
