"""Censoring-aware recalibration: the newest requests, open ones known only as lower bounds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from sf311.model.champion import LoadedModel, ModelService
from sf311.model.online import (
    CLOSED,
    ONLINE,
    REQUESTS,
    TRAINING,
    OnlineRule,
    km_quantiles,
    known_requested,
    recalibrate,
    replay,
)
from sf311.model.scorer import Scorer

# 18:00 UTC is 11:00 in San Francisco: category B before 12:00 scores raw 3.0.
AS_OF = datetime(2019, 3, 31, 18, tzinfo=UTC)
RULE = OnlineRule(window_cases=100, min_cases=20, level=0.8, method=REQUESTS, adaptive_gamma=0.0)
# 41 residuals -1.0 .. 1.0 by 0.05.
EVEN = list(np.linspace(-1.0, 1.0, 41))


def closed_cases(residuals: list[float], first: datetime) -> pd.DataFrame:
    """Return B cases requested a minute apart from `first`, closed after log1p(hours) = 3.0 +
    residual: the paper model scores them raw 3.0, so each residual is exact."""
    requested = [first + timedelta(minutes=i) for i in range(len(residuals))]
    hours = np.expm1(3.0 + np.asarray(residuals, dtype=float))
    closed = [r + timedelta(hours=float(h)) for r, h in zip(requested, hours, strict=True)]
    return pd.DataFrame(
        {
            "requested_datetime": pd.to_datetime(requested, utc=True),
            "closed_date": pd.to_datetime(closed, utc=True),
            "service_name": "B",
        }
    )


def open_cases(n: int, first: datetime, closed: datetime | None = None) -> pd.DataFrame:
    """Return `n` B cases requested a minute apart from `first`, closed at `closed` (or never)."""
    requested = [first + timedelta(minutes=i) for i in range(n)]
    return pd.DataFrame(
        {
            "requested_datetime": pd.to_datetime(requested, utc=True),
            "closed_date": pd.to_datetime([closed] * n, utc=True),
            "service_name": "B",
        }
    )


def days_before(days: int) -> datetime:
    return AS_OF - timedelta(days=days)


# Open 4 days (96 hours) at AS_OF: censored at log1p(96) - 3.0 = 1.57, past every closure.
PAST_ALL = days_before(4)


def test_km_quantiles_on_a_hand_worked_example() -> None:
    # Sorted: 1 closed, 2 open, 3 closed, 4 closed, 5 open, 6 closed. Survival after each
    # closure: 5/6; 5/6 * 3/4 = 0.625; 0.625 * 2/3 = 0.4167; 0. CDF: 1/6, 0.375, 0.583, 1.
    values = np.array([4.0, 2.0, 6.0, 1.0, 5.0, 3.0])
    closed = np.array([True, False, True, True, False, True])
    got = km_quantiles(values, closed, [0.1, 0.2, 0.375, 0.5, 0.6, 0.9])
    np.testing.assert_allclose(got, [1.0, 3.0, 3.0, 4.0, 6.0, 6.0])


def test_km_quantile_is_missing_when_the_last_value_is_still_open() -> None:
    # CDF 1/3 then 2/3; the open 3.0 may be anything above it.
    got = km_quantiles(np.array([1.0, 2.0, 3.0]), np.array([True, True, False]), [0.5, 0.9])
    assert got[0] == 2.0
    assert np.isnan(got[1])


def test_km_counts_a_closure_before_an_open_case_at_the_same_value() -> None:
    # At 2.0 the open case is still at risk: survival 3/4, then 3/4 * 2/3 = 0.5 at 2.0.
    values = np.array([1.0, 2.0, 2.0, 3.0])
    got = km_quantiles(values, np.array([True, False, True, True]), [0.5])
    np.testing.assert_allclose(got, [2.0])


def test_without_censoring_km_gives_the_plain_window_quantiles(paper_scorer: Scorer) -> None:
    # 10 % and 90 % of 41 closures: the 5th and the 37th, -0.8 and 0.8.
    recal = recalibrate(paper_scorer, closed_cases(EVEN, days_before(10)), AS_OF, RULE)
    assert (recal.source, recal.method, recal.n_cases, recal.n_open) == (ONLINE, REQUESTS, 41, 0)
    np.testing.assert_allclose(recal.calibration["global"], [-0.8, 0.0, 0.8], atol=1e-9)


def test_an_open_case_past_the_upper_end_counts_as_a_miss(paper_scorer: Scorer) -> None:
    cases = pd.concat([closed_cases(EVEN, days_before(10)), open_cases(2, PAST_ALL)])
    recal = recalibrate(paper_scorer, cases, AS_OF, RULE)
    # 43 cases, the 2 open ones above every closure: 90 % needs the 39th value, 0.9.
    assert (recal.source, recal.n_cases, recal.n_open) == (ONLINE, 43, 2)
    np.testing.assert_allclose(recal.calibration["global"], [-0.8, 0.0, 0.9], atol=1e-9)


def test_a_closure_after_the_instant_is_not_known_then(paper_scorer: Scorer) -> None:
    # Closed a day after AS_OF (120 hours): at AS_OF only 96 hours open are known.
    later = open_cases(2, PAST_ALL, closed=AS_OF + timedelta(days=1))
    cases = pd.concat([closed_cases(EVEN, days_before(10)), later])
    window = known_requested(cases, AS_OF, RULE)
    assert window[CLOSED].tolist() == [True] * 41 + [False, False]
    # Known at AS_OF: open for 96 hours (and 1 and 2 minutes less), not the later 120.
    np.testing.assert_allclose(
        window["label"].iloc[-2:], np.log1p([96.0, 96.0 - 1 / 60]), atol=1e-9
    )
    recal = recalibrate(paper_scorer, cases, AS_OF, RULE)
    assert recal.n_open == 2
    np.testing.assert_allclose(recal.calibration["global"], [-0.8, 0.0, 0.9], atol=1e-9)


def test_heavy_censoring_falls_back_to_training_with_a_reason(paper_scorer: Scorer) -> None:
    # 5 of 46 open past every closure: the estimated CDF stops at 41/46 = 0.89 < 0.9.
    cases = pd.concat([closed_cases(EVEN, days_before(10)), open_cases(5, PAST_ALL)])
    recal = recalibrate(paper_scorer, cases, AS_OF, RULE)
    assert recal.source == TRAINING
    assert recal.calibration == paper_scorer.calibration
    assert "never reaches the 90.0% quantile" in recal.reason
    assert "5 of 46 cases still open past the last closure" in recal.reason


def test_too_few_closures_among_the_requests_fall_back(paper_scorer: Scorer) -> None:
    cases = pd.concat([closed_cases(EVEN[:19], days_before(10)), open_cases(30, PAST_ALL)])
    recal = recalibrate(paper_scorer, cases, AS_OF, RULE)
    assert recal.source == TRAINING
    assert "19 of 49 requests closed in the window, fewer than 20" in recal.reason


def test_window_holds_the_newest_requests_old_enough(paper_scorer: Scorer) -> None:
    # Requested 30 days before: pushed out by the 41 newer requests of a 41-case window.
    old = closed_cases([3.0] * 50, days_before(30))
    cases = pd.concat([old, closed_cases(EVEN, days_before(10)), open_cases(2, PAST_ALL)])
    newest = replace(RULE, window_cases=43)
    recal = recalibrate(paper_scorer, cases, AS_OF, newest)
    np.testing.assert_allclose(recal.calibration["global"], [-0.8, 0.0, 0.9], atol=1e-9)
    # Requests younger than 5 days (the open two) are left out, the window reaches back.
    aged = replace(RULE, window_cases=41, min_age_days=5)
    recal = recalibrate(paper_scorer, cases, AS_OF, aged)
    assert (recal.n_cases, recal.n_open) == (41, 0)
    np.testing.assert_allclose(recal.calibration["global"], [-0.8, 0.0, 0.8], atol=1e-9)


def test_cases_closed_before_they_opened_are_left_out(paper_scorer: Scorer) -> None:
    negative = open_cases(3, days_before(2), closed=days_before(3))
    cases = pd.concat([closed_cases(EVEN, days_before(10)), negative])
    assert recalibrate(paper_scorer, cases, AS_OF, RULE).n_cases == 41


def test_replay_treats_later_closures_as_open(paper_scorer: Scorer) -> None:
    later = open_cases(2, PAST_ALL, closed=AS_OF + timedelta(days=1))
    cases = pd.concat([closed_cases(EVEN, days_before(10)), later])
    requests = pd.DataFrame(
        {
            # Before any closure: training; at AS_OF: the 2 still open count as misses.
            "requested_datetime": pd.to_datetime([days_before(11), AS_OF], utc=True),
            "service_name": "B",
        }
    )
    bands, online = replay(paper_scorer, cases, requests, RULE)
    assert online.tolist() == [False, True]
    np.testing.assert_allclose(bands, [[2.0, 3.0, 4.0], [2.2, 3.0, 3.9]], atol=1e-9)


def test_service_reports_the_censored_method(paper_scorer: Scorer) -> None:
    cases = pd.concat([closed_cases(EVEN, days_before(10)), open_cases(2, PAST_ALL)])
    service = ModelService(
        LoadedModel(paper_scorer, "7"),
        recalibrator=lambda scorer, at: recalibrate(scorer, cases, at, RULE),
    )
    service.recalibrate(AS_OF)
    assert service.model is not None
    info = service.model.calibration_info()
    assert (info["source"], info["method"], info["n_cases"], info["n_open"]) == (
        ONLINE,
        REQUESTS,
        43,
        2,
    )
    _, pred, _ = service.predict([{"requested_datetime": AS_OF, "service_name": "B"}])
    assert pred.log_upper[0] == pytest.approx(3.9)
