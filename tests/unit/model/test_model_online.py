"""Online recalibration on the paper model: only cases closed before the instant count."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from sf311.model.champion import LoadedModel, ModelService
from sf311.model.online import ONLINE, TRAINING, OnlineRule, recalibrate, replay
from sf311.model.scorer import Scorer

# 18:00 UTC is 10:00 or 11:00 in San Francisco: category B before 12:00 scores raw 3.0.
AS_OF = datetime(2019, 3, 31, 18, tzinfo=UTC)
# A fixed level: the adaptive one has tests of its own (test_model_online_adaptive.py).
RULE = OnlineRule(window_cases=100, min_cases=20, level=0.8, adaptive_gamma=0.0)


def closed_cases(residuals: list[float], first: datetime) -> pd.DataFrame:
    """Return B cases requested a minute apart from `first`, each closed after log1p(hours)
    = 3.0 + its residual: on the paper model they score raw 3.0, so the residual is exact."""
    requested = [first + timedelta(minutes=i) for i in range(len(residuals))]
    hours = np.expm1(3.0 + np.asarray(residuals, dtype=float))
    return pd.DataFrame(
        {
            "requested_datetime": pd.to_datetime(requested, utc=True),
            "closed_date": pd.to_datetime(
                [r + timedelta(hours=float(h)) for r, h in zip(requested, hours, strict=True)],
                utc=True,
            ),
            "service_name": "B",
        }
    )


def days_before(days: int) -> datetime:
    return AS_OF - timedelta(days=days)


# 41 residuals -1.0 .. 1.0 by 0.05: the 10 % and 90 % quantiles are exactly -0.8 and 0.8.
EVEN = list(np.linspace(-1.0, 1.0, 41))


def test_quantiles_come_from_the_cases_closed_before_the_instant(paper_scorer: Scorer) -> None:
    before = closed_cases(EVEN, days_before(10))
    # Requested before the instant but closed about 124 days later: never used.
    after = closed_cases([5.0] * 30, days_before(2))
    recal = recalibrate(paper_scorer, pd.concat([before, after]), AS_OF, RULE)
    assert recal.source == ONLINE
    assert recal.n_cases == 41
    np.testing.assert_allclose(recal.calibration["global"], [-0.8, 0.0, 0.8], atol=1e-9)


def test_too_few_closed_cases_fall_back_to_training(paper_scorer: Scorer) -> None:
    cases = closed_cases(EVEN[:19], days_before(10))
    recal = recalibrate(paper_scorer, cases, AS_OF, RULE)
    assert recal.source == TRAINING
    assert recal.n_cases == 19
    assert recal.calibration == paper_scorer.calibration
    assert "fewer than 20" in recal.reason


def test_window_holds_the_newest_closures_only(paper_scorer: Scorer) -> None:
    # Closed about 13 days before the instant, while the newer cases close 3 to 5 days before.
    old = closed_cases([3.0] * 50, days_before(30))
    new = closed_cases(EVEN, days_before(5))
    recal = recalibrate(paper_scorer, pd.concat([old, new]), AS_OF, replace(RULE, window_cases=41))
    np.testing.assert_allclose(recal.calibration["global"], [-0.8, 0.0, 0.8], atol=1e-9)


def test_cases_requested_before_the_model_data_end_are_left_out(paper_scorer: Scorer) -> None:
    # Opened before the model's data end (fit by the model) but closed after the fresh ones.
    seen = closed_cases([3.0] * 50, days_before(20))
    fresh = closed_cases(EVEN, days_before(10))
    cases = pd.concat([seen, fresh])
    assert recalibrate(paper_scorer, cases, AS_OF, RULE).n_cases == 91
    recal = recalibrate(paper_scorer, cases, AS_OF, RULE, days_before(15))
    assert recal.n_cases == 41
    np.testing.assert_allclose(recal.calibration["global"], [-0.8, 0.0, 0.8], atol=1e-9)


def test_open_negative_and_too_long_cases_are_not_used(paper_scorer: Scorer) -> None:
    good = closed_cases(EVEN, days_before(10))
    bad = pd.DataFrame(
        {
            "requested_datetime": [days_before(5)] * 3,
            "closed_date": [
                None,
                days_before(6),
                days_before(5) + timedelta(hours=RULE.max_hours + 1),
            ],
            "service_name": "B",
        }
    )
    bad = bad.assign(
        requested_datetime=pd.to_datetime(bad["requested_datetime"], utc=True),
        closed_date=pd.to_datetime(bad["closed_date"], utc=True),
    )
    recal = recalibrate(paper_scorer, pd.concat([good, bad]), AS_OF, RULE)
    assert recal.n_cases == 41


def test_online_ends_move_but_the_point_stays(paper_scorer: Scorer) -> None:
    cases = closed_cases(EVEN, days_before(10))
    recal = recalibrate(paper_scorer, cases, AS_OF, RULE)
    rows = [{"service_name": "A", "hour": 10.0}, {"service_name": "B", "hour": 10.0}]
    trained = paper_scorer.predict_features(rows)
    online = paper_scorer.predict_features(rows, recal.calibration)
    # A keeps its group's training centre +0.1; the ends are now raw -0.8 / +0.8.
    np.testing.assert_allclose(online.log_hours, trained.log_hours)
    np.testing.assert_allclose(online.log_hours, [2.1, 3.0])
    np.testing.assert_allclose(online.log_lower, [1.2, 2.2])
    np.testing.assert_allclose(online.log_upper, [2.8, 3.8])


def test_replay_serves_each_request_what_was_known_when_it_came(paper_scorer: Scorer) -> None:
    cases = closed_cases(EVEN, days_before(10))
    requests = pd.DataFrame(
        {
            # The first request comes before any of those closures, the second after all.
            "requested_datetime": [days_before(11), AS_OF],
            "service_name": "B",
        }
    )
    requests["requested_datetime"] = pd.to_datetime(requests["requested_datetime"], utc=True)
    bands, online = replay(paper_scorer, cases, requests, RULE)
    assert online.tolist() == [False, True]
    # 10:00 San Francisco time both days: raw 3.0; training ends +-1, online +-0.8.
    np.testing.assert_allclose(bands, [[2.0, 3.0, 4.0], [2.2, 3.0, 3.8]], atol=1e-9)


def test_service_swaps_in_the_recalibration_and_reports_it(paper_scorer: Scorer) -> None:
    cases = closed_cases(EVEN, days_before(10))
    service = ModelService(
        LoadedModel(paper_scorer, "7"),
        recalibrator=lambda scorer, at: recalibrate(scorer, cases, at, RULE),
    )
    case = {"requested_datetime": AS_OF, "service_name": "B"}
    assert service.model is not None
    assert service.model.calibration_info()["source"] == TRAINING
    _, before, _ = service.predict([case])
    service.recalibrate(AS_OF)
    info = service.model.calibration_info()
    assert (info["source"], info["n_cases"], info["as_of"]) == (ONLINE, 41, AS_OF.isoformat())
    _, after, _ = service.predict([case])
    assert before.upper_hours[0] == pytest.approx(math.expm1(4.0))
    assert after.upper_hours[0] == pytest.approx(math.expm1(3.8))


def test_replay_without_any_closed_case_keeps_training(paper_scorer: Scorer) -> None:
    cases = closed_cases([], days_before(10))
    requests = pd.DataFrame(
        {"requested_datetime": pd.to_datetime([AS_OF], utc=True), "service_name": "B"}
    )
    bands, online = replay(paper_scorer, cases, requests, RULE)
    assert online.tolist() == [False]
    np.testing.assert_allclose(bands, [[2.0, 3.0, 4.0]])


def test_a_wider_level_widens_the_ends(paper_scorer: Scorer) -> None:
    cases = closed_cases(EVEN, days_before(10))
    wide = replace(RULE, level=0.9)
    recal = recalibrate(paper_scorer, cases, AS_OF, wide)
    # 5 % and 95 % of -1.0 .. 1.0 by 0.05: -0.9 and 0.9.
    np.testing.assert_allclose(recal.calibration["global"], [-0.9, 0.0, 0.9], atol=1e-9)


def test_an_interval_always_holds_its_point(paper_scorer: Scorer) -> None:
    # Residuals 1.0 .. 2.0 by 0.025: 10 % and 90 % at 1.1 and 1.9, both above the centre 0.0.
    cases = closed_cases(list(np.linspace(1.0, 2.0, 41)), days_before(20))
    recal = recalibrate(paper_scorer, cases, AS_OF, RULE)
    np.testing.assert_allclose(recal.calibration["global"], [0.0, 0.0, 1.9], atol=1e-9)
    np.testing.assert_allclose(recal.calibration["groups"]["A"], [0.1, 0.1, 1.9], atol=1e-9)
