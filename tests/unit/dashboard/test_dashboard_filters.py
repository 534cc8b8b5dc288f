"""Filters: periods, San Francisco day bounds across DST, and the WHERE clause they build."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from sf311.dashboard.filters import Filters, where


def test_previous_period_has_the_same_length_and_ends_the_day_before():
    f = Filters(start=date(2024, 3, 1), end=date(2024, 3, 30), categories=("Graffiti",))
    prev = f.previous()
    assert (prev.start, prev.end) == (date(2024, 1, 31), date(2024, 2, 29))
    assert prev.days == f.days == 30
    assert prev.categories == ("Graffiti",)


def test_bounds_are_local_midnights_across_the_spring_dst_change():
    # 2024-03-10 is the day San Francisco moves from PST (UTC-8) to PDT (UTC-7).
    t0, t1 = Filters(start=date(2024, 3, 10), end=date(2024, 3, 10)).bounds()
    assert t0 == datetime(2024, 3, 10, 8, tzinfo=UTC)
    assert t1 == datetime(2024, 3, 11, 7, tzinfo=UTC)


def test_reversed_range_is_rejected():
    with pytest.raises(ValueError, match="before it starts"):
        Filters(start=date(2024, 3, 2), end=date(2024, 3, 1))


def test_where_puts_values_in_parameters_only():
    f = Filters(
        start=date(2024, 1, 1),
        end=date(2024, 1, 31),
        neighborhoods=("Mission'; DROP TABLE cases; --",),
        districts=(3, 9),
    )
    clause, params = where(f, "closed_date", prefix="p_")
    assert "DROP" not in clause
    assert "closed_date >= %(p_t0)s AND closed_date < %(p_t1)s" in clause
    assert "neighborhood = ANY(%(p_neighborhoods)s)" in clause
    assert "supervisor_district = ANY(%(p_districts)s)" in clause
    assert params["p_neighborhoods"] == ["Mission'; DROP TABLE cases; --"]
    assert params["p_districts"] == [3, 9]
    assert "service_name" not in clause  # empty filters add no condition


def test_where_without_time_column_and_filters_is_true():
    clause, params = where(Filters(start=date(2024, 1, 1), end=date(2024, 1, 1)), None)
    assert (clause, params) == ("TRUE", {})


def test_where_rejects_an_unknown_time_column():
    with pytest.raises(ValueError, match="unknown time column"):
        where(Filters(start=date(2024, 1, 1), end=date(2024, 1, 1)), "loaded_at; --")
