"""Time split, conformal quantiles, calibration and metrics on small explicit inputs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from sf311.model.train import (
    TrainConfig,
    apply_calibration,
    calibrate,
    calibration_window,
    check_windows,
    interval_figures,
    recency_weights,
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
    cal = {
        "group_column": "service_name",
        "groups": {"A": [-1.0, 0.5, 2.0]},
        "global": [-3.0, 0.0, 1.0],
    }
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


def test_interval_figures_count_the_ends_as_inside() -> None:
    label = np.array([1.0, 2.0, 3.0, 9.0])
    bands = np.array([[0.0, 1.0, 1.0], [1.0, 2.5, 2.0], [3.0, 3.0, 5.0], [0.0, 1.0, 2.0]])
    fig = interval_figures(label, bands)
    assert fig["coverage"] == 0.75
    assert fig["width_log"] == pytest.approx((1 + 1 + 2 + 2) / 4)
    assert fig["mae_log"] == pytest.approx((0 + 0.5 + 0 + 8) / 4)


def test_recency_weights_halve_per_half_life() -> None:
    requested = pd.Series(pd.to_datetime(["2018-06-30", "2018-06-20", "2018-06-10"], utc=True))
    w = recency_weights(requested, utc(2018, 6, 30), half_life_days=10.0)
    np.testing.assert_allclose(w, [1.0, 0.5, 0.25])
    # A naive instant, as Spark returns it, is read in Spark's session zone (UTC).
    naive = recency_weights(requested, datetime(2018, 6, 30), half_life_days=10.0)
    np.testing.assert_allclose(naive, [1.0, 0.5, 0.25])


def test_raw_bin_calibration_follows_the_predicted_level() -> None:
    # Short predictions (raw 1) miss by up to 0.1, long ones (raw 5) by up to 2: the two bins
    # keep their own 20 % / 80 % residual quantiles (linear: 0.8 of the way from -0.1 to -0.05).
    resid = np.tile([-1.0, -0.5, 0.0, 0.5, 1.0], 4)
    raw = np.repeat([1.0, 5.0], 10)
    frame = pd.DataFrame(
        {
            "group": "A",
            "label": raw + resid * np.where(raw < 3, 0.1, 2.0),
            "requested_datetime": pd.Timestamp("2018-06-01", tz="UTC"),
            "raw": raw,
        }
    )
    cfg = TrainConfig(test_start=utc(2018, 7, 1), raw_bins=2, min_group=5, coverage=0.6)
    cal = calibrate(frame, utc(2018, 7, 1), replace(cfg, calibration_half_life_days=None))
    assert cal["group_column"] == "raw_bin" and cal["raw_edges"] == [3.0]
    assert cal["groups"]["0"] == pytest.approx([-0.06, 0.0, 0.06])
    assert cal["groups"]["1"] == pytest.approx([-1.2, 0.0, 1.2])
    bands = apply_calibration(np.array([0.9, 6.0]), pd.Series(["x", "y"]), cal)
    np.testing.assert_allclose(bands, [[0.84, 0.9, 0.96], [4.8, 6.0, 7.2]])


def test_calibration_window_leaves_the_older_half_to_fit_on(spark) -> None:
    df = spark.createDataFrame(
        [(1, utc(2024, 1, 1)), (2, utc(2024, 6, 1))],
        "service_request_id long, requested_datetime timestamp",
    )
    # Two years of history: the configured window fits.
    assert calibration_window(df, utc(2026, 1, 1), 365) == 365
    # 183 days of history (the demo's short year): the window shrinks to half of it.
    assert calibration_window(df, utc(2024, 7, 2), 365) == 91
    with pytest.raises(ValueError, match="no closed cases"):
        calibration_window(df.limit(0), utc(2024, 7, 2), 365)


def test_scaled_calibration_sizes_each_interval_by_its_predicted_residual() -> None:
    # Residuals are exactly +-1 or +-0.5 times each case's scale: normalized, they are all +-1,
    # so the quantiles are in scale units and the bands widen with the predicted |residual|.
    scale = np.array([0.5, 0.5, 2.0, 2.0, 1.0, 1.0])
    frame = pd.DataFrame(
        {
            "group": "A",
            "label": 3.0 + np.array([-1, 1, -1, 1, -1, 1]) * scale,
            "requested_datetime": pd.Timestamp("2018-06-01", tz="UTC"),
            "raw": np.full(6, 3.0),
            "scale": scale,
        }
    )
    cfg = TrainConfig(test_start=utc(2018, 7, 1), calibration_half_life_days=None)
    cal = calibrate(frame, utc(2018, 7, 1), cfg)
    assert cal["scaled"] is True
    assert cal["global"] == pytest.approx([-1.0, 0.0, 1.0])
    bands = apply_calibration(
        np.array([3.0, 3.0]), pd.Series(["A", "A"]), cal, pd.Series([0.5, 2.0])
    )
    np.testing.assert_allclose(bands, [[2.5, 3.0, 3.5], [1.0, 3.0, 5.0]])
    with pytest.raises(ValueError, match="predicted scale"):
        apply_calibration(np.array([3.0]), pd.Series(["A"]), cal)


def test_too_short_windows_fail_with_one_clear_line() -> None:
    cfg = TrainConfig(test_start=utc(2018, 7, 1), train_start=utc(2018, 6, 1))
    with pytest.raises(ValueError, match="12 usable closed cases from 2018-06-01 to 2018-07-01"):
        check_windows(12, 40, cfg)
    with pytest.raises(ValueError, match="no usable closed cases from 2018-07-01 to test on"):
        check_windows(500, 0, cfg)
    check_windows(500, 1, cfg)
