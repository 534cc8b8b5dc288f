"""The held-out categories are the largest in the validation test periods, scored on their bands."""

from __future__ import annotations

import pandas as pd

from bench.new_categories import largest_categories, scores


def test_largest_categories_count_only_validation_test_periods() -> None:
    # B leads overall, but only through cases before the first validation test period.
    labels = pd.DataFrame(
        {
            "requested_datetime": pd.to_datetime(
                ["2010-01-05"] * 5 + ["2013-08-01"] * 2 + ["2014-02-01"] * 3 + ["2016-01-01"] * 4,
                utc=True,
            ),
            "service_name": ["B"] * 5 + ["B"] * 2 + ["A"] * 3 + ["C"] * 4,
        }
    )
    assert largest_categories(labels, 2) == ["A", "B"]
    assert largest_categories(labels, 1) == ["A"]


def test_scores_count_the_cases_inside_their_bands() -> None:
    frame = pd.DataFrame(
        {"label": [1.0, 2.0, 3.0, 4.0], "low": [0.0] * 4, "point": [2.0] * 4, "high": [2.5] * 4}
    )
    assert scores(frame) == {"n": 4, "coverage": 0.5, "width_log": 2.5, "mae_log": 1.0}
