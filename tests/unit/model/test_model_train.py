"""Time split, conformal quantiles, calibration and metrics on small explicit inputs."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from sf311.model.train import (
    apply_calibration,
    regression_metrics,
    residual_quantiles,
    time_split,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_time_split_puts_the_boundary_instant_in_test(spark) -> None:
    times = [utc(2014, 12, 31, 23), utc(2015, 1, 1), utc(2018, 6, 30, 23), utc(2018, 7, 1)]
    times.append(utc(2019, 1, 1))
    df = spark.createDataFrame(
        [(i, t) for i, t in enumerate(times)],
        "service_request_id long, requested_datetime timestamp",
    )
    train, test = time_split(df, utc(2018, 7, 1), utc(2015, 1, 1), utc(2019, 1, 1))
    assert sorted(r[0] for r in train.collect()) == [1, 2]
    assert sorted(r[0] for r in test.collect()) == [3]
    train_all, test_all = time_split(df, utc(2018, 7, 1), None, None)
    assert sorted(r[0] for r in train_all.collect()) == [0, 1, 2]
    assert sorted(r[0] for r in test_all.collect()) == [3, 4]


def test_residual_quantiles_per_group_with_global_fallback() -> None:
    resid_a = np.arange(-5, 6, dtype=float)  # 11 residuals, deciles -4 and 4, median 0
    frame = pd.DataFrame(
        {
            "group": ["A"] * 11 + ["B"] * 2,
            "label": np.concatenate([resid_a + 3.0, [10.0, 10.0]]),
            "raw": np.full(13, 3.0),
        }
    )
    cal = residual_quantiles(frame, coverage=0.8, min_group=5, center=True)
    assert cal["groups"] == {"A": [-4.0, 0.0, 4.0]}
    low, mid, high = cal["global"]
    assert (low, mid, high) == pytest.approx((-3.8, 1.0, 6.6))
    uncentred = residual_quantiles(frame, coverage=0.8, min_group=5, center=False)
    assert uncentred["groups"]["A"][1] == 0.0 and uncentred["global"][1] == 0.0


def test_apply_calibration_shifts_and_clips_at_zero() -> None:
    cal = {"groups": {"A": [-1.0, 0.5, 2.0]}, "global": [-3.0, 0.0, 1.0]}
    bands = apply_calibration(np.array([2.0, 2.0]), pd.Series(["A", "Z"]), cal)
    np.testing.assert_allclose(bands, [[1.0, 2.5, 4.0], [0.0, 2.0, 3.0]])


def test_regression_metrics_on_known_errors() -> None:
    label = np.log1p(np.array([1.0, 3.0, 7.0]))
    pred = np.log1p(np.array([3.0, 3.0, 3.0]))
    m = regression_metrics(label, pred, "x_")
    assert m["x_mae_hours"] == pytest.approx(2.0)
    assert m["x_medae_hours"] == pytest.approx(2.0)
    assert m["x_medae_log"] == pytest.approx(np.log(2.0))
    assert m["x_r2_log"] == pytest.approx(1 - 2 * np.log(2) ** 2 / np.var(label) / 3)


def test_weighted_residual_quantiles_favour_heavy_cases() -> None:
    frame = pd.DataFrame(
        {
            "group": ["A"] * 5,
            "label": [1.0, 2.0, 3.0, 4.0, 5.0],
            "raw": np.zeros(5),
            # Recent cases weigh more; the weighted median moves to the heavy end.
            "weight": [0.1, 0.1, 0.1, 1.0, 1.0],
        }
    )
    cal = residual_quantiles(frame, coverage=0.8, min_group=1, center=True)
    # Cumulative weight shares: .04 .09 .13 .57 1.0, so the 10 % point is the third case.
    assert cal["groups"]["A"] == [3.0, 4.0, 5.0]
    assert cal["global"] == [3.0, 4.0, 5.0]
