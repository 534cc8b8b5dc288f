"""The overdue flag's replay figures (bench/overdue.py) on a handful of explicit cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.overdue import overdue_figures

NOW = pd.Timestamp("2019-01-01", tz="UTC")
START = pd.Timestamp("2018-01-01", tz="UTC")
HOUR = pd.Timedelta(hours=1)


def test_overdue_figures_follow_their_definitions() -> None:
    # (hours to close or None while open, upper end, SLA target); one case requested an hour
    # before now, too soon to tell.
    cases = [(10, 20, 5), (30, 20, 100), (500, 20, 100), (None, 20, 100), (3, 20, np.nan)]
    frame = pd.DataFrame(
        {
            "requested_datetime": [START] * 5 + [NOW - HOUR],
            "closed_date": [START + h * HOUR if h is not None else pd.NaT for h, _, _ in cases]
            + [pd.NaT],
            "upper_hours": [u for _, u, _ in cases] + [20.0],
            "target_hours": [t for _, _, t in cases] + [100.0],
        }
    )
    out = overdue_figures(frame, NOW)
    assert (out["cases"], out["judged"], out["flagged"]) == (6, 5, 3)
    assert out["flagged_share"] == 0.6
    # Of the flagged (closed at 30 h, at 500 h, open): open 24 h and 7 days past 20 h.
    assert out["flagged_still_open_24h"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["flagged_still_open_7d"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["flagged_median_days_to_close_after_flag"] == pytest.approx((10 / 24 + 20) / 2, 0.01)
    # Late: closed at 10 h past a 5 h target (never flagged), at 500 h, and the open one.
    assert (out["late"], out["late_share"]) == (3, 0.75)
    assert out["late_never_flagged"] == 1
    assert out["late_never_flagged_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert out["flagged_late_share"] == pytest.approx(2 / 3, abs=1e-4)
    # The SLA clock's flag: of the three late, the 500 h and open cases are open a week later.
    assert out["sla_flag_still_open_7d"] == pytest.approx(2 / 3, abs=1e-4)


def test_no_flagged_case_gives_no_share() -> None:
    frame = pd.DataFrame(
        {
            "requested_datetime": [START],
            "closed_date": [START + HOUR],
            "upper_hours": [20.0],
            "target_hours": [np.nan],
        }
    )
    out = overdue_figures(frame, NOW)
    assert out["flagged"] == 0 and out["flagged_still_open_7d"] is None
    assert out["late_never_flagged_share"] is None
