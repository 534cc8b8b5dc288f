"""Per-category conformal ends shrunk toward the global ones, chosen on an inner split."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from sf311.model.scorer import interval_method
from sf311.model.train import (
    TrainConfig,
    apply_calibration,
    calibrate,
    choose_shrinkage,
    conformal_ends,
    residual_quantiles,
    shrunk_ends,
)

AS_OF = datetime(2018, 7, 1, tzinfo=UTC)
CFG = TrainConfig(test_start=AS_OF)


def test_conformal_ends_take_the_finite_sample_ranks() -> None:
    # n = 19, a/2 = 0.1: ranks floor(20 * 0.1) = 2 and ceil(20 * 0.9) = 18 of 1..19.
    assert conformal_ends(np.arange(19, 0, -1, dtype=float), 0.8).tolist() == [2.0, 18.0]
    # n = 8: ceil(9 * 0.9) = 9 > n, so the largest residual; floor(0.9) = 0, the smallest.
    assert conformal_ends(np.arange(1, 9, dtype=float), 0.8).tolist() == [1.0, 8.0]


def frame(groups: dict[str, np.ndarray], start: str = "2017-07-01") -> pd.DataFrame:
    """Return a calibration frame: raw 3, label 3 + the residuals, requests spread over a year."""
    parts = []
    for name, resid in groups.items():
        times = pd.date_range(start, periods=len(resid), freq=pd.Timedelta(days=360 / len(resid)))
        parts.append(
            pd.DataFrame(
                {"group": name, "label": 3.0 + resid, "raw": 3.0, "requested_datetime": times}
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_shrink_weighs_a_category_by_its_cases() -> None:
    resid_a = np.linspace(-1.0, 1.0, 19)
    resid_b = np.linspace(-5.0, 5.0, 19)
    f = frame({"A": resid_a, "B": resid_b})
    overall = conformal_ends(np.concatenate([resid_a, resid_b]), 0.8)
    own_a = conformal_ends(resid_a, 0.8)
    g, own = shrunk_ends(f, 0.8, 0.0, 1.0)
    np.testing.assert_allclose(g, overall)
    np.testing.assert_allclose(own["A"], own_a)
    _, half = shrunk_ends(f, 0.8, 19.0, 1.0)
    np.testing.assert_allclose(half["A"], (own_a + overall) / 2)
    assert shrunk_ends(f, 0.8, float("inf"), 1.0)[1] == {}


def test_inner_split_keeps_categories_of_different_spread_apart() -> None:
    rng = np.random.default_rng(0)
    f = frame({"narrow": rng.normal(0, 0.2, 200), "wide": rng.normal(0, 3.0, 200)})
    choice = choose_shrinkage(f, CFG)
    assert np.isfinite(choice["shrink"]) and choice["inner_miss"] < 0.1
    cal = calibrate(f, AS_OF, CFG)
    narrow, wide = cal["groups"]["narrow"], cal["groups"]["wide"]
    assert narrow[2] - narrow[0] < 1.0 < 5.0 < wide[2] - wide[0]
    bands = apply_calibration(np.array([3.0, 3.0]), pd.Series(["narrow", "wide"]), cal)
    assert bands[0, 2] - bands[0, 0] < bands[1, 2] - bands[1, 0]
    assert "shrunk toward the global ones" in interval_method(cal)


def test_shrunk_ends_leave_the_point_centres_as_they_were() -> None:
    rng = np.random.default_rng(1)
    f = frame({"A": rng.normal(0.5, 1.0, 150), "B": rng.normal(-0.5, 1.0, 40)})
    before = residual_quantiles(
        f.drop(columns="requested_datetime"), 0.8, CFG.min_group, center=True
    )
    cal = calibrate(f, AS_OF, CFG)
    assert cal["global"][1] == before["global"][1]
    assert cal["groups"]["A"][1] == before["groups"]["A"][1]
    # B has fewer than min_group cases: its own ends, the global centre.
    assert cal["groups"]["B"][1] == before["global"][1]


def test_an_empty_grid_keeps_the_global_ends() -> None:
    f = frame({"A": np.linspace(-1, 1, 30), "B": np.linspace(-4, 4, 30)})
    cal = calibrate(f, AS_OF, replace(CFG, shrink_grid=()))
    assert "window_share" not in cal and cal["groups"] == {}


def test_too_few_newer_cases_to_judge_fall_back_to_the_global_ends() -> None:
    f = frame({"A": np.linspace(-1, 1, 20), "B": np.linspace(-4, 4, 20)})
    assert choose_shrinkage(f, CFG) == {"shrink": float("inf"), "share": 1.0, "inner_miss": None}
    cal = calibrate(f, AS_OF, CFG)
    assert cal["shrink"] is None and cal["groups"] == {}
    assert cal["global"][0] == pytest.approx(conformal_ends(f["label"].to_numpy() - 3.0, 0.8)[0])


def test_a_category_whose_ends_move_between_halves_gets_the_global_ends() -> None:
    rng = np.random.default_rng(2)
    steady = rng.normal(0, 1.0, 200)
    # Spread 0.5 in the older half, 4 in the newer: its ends move by about twice the global width.
    moving = np.concatenate([rng.normal(0, 0.5, 100), rng.normal(0, 4.0, 100)])
    f = frame({"steady": steady, "moving": moving})
    overall, plain = shrunk_ends(f, 0.8, 0.0, 1.0)
    g, own = shrunk_ends(f, 0.8, 0.0, 1.0, drift=0.5)
    np.testing.assert_allclose(g, overall)
    np.testing.assert_allclose(own["moving"], overall)
    np.testing.assert_allclose(own["steady"], plain["steady"], atol=0.3)
    assert abs(own["steady"] - overall).max() > 0.3


def test_a_category_too_thin_in_one_half_gets_the_global_ends() -> None:
    f = frame({"A": np.linspace(-1, 1, 40), "B": np.linspace(-4, 4, 40)})
    # A's cases all fall before the middle of the window, B's after it.
    f.loc[f["group"] == "B", "requested_datetime"] += pd.Timedelta(days=400)
    overall, own = shrunk_ends(f, 0.8, 0.0, 1.0, drift=0.5)
    np.testing.assert_allclose(own["B"], overall)
    np.testing.assert_allclose(own["A"], overall)
