"""Filters: periods, San Francisco day bounds across DST, and the WHERE clause they build."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from sf311.dashboard.filters import (
    GOLD_COLUMNS,
    OPEN_CASE_COLUMNS,
    BadLinkRange,
    Filters,
    gold_where,
    link_range,
    unapplied,
    where,
)


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


def _span(f: Filters | None) -> tuple[date, date] | None:
    return None if f is None else (f.start, f.end)


@pytest.mark.parametrize(
    ("start", "end", "parts"),
    [
        # Days before the first whole month, whole months (a leap February), days after.
        (
            date(2023, 12, 2),
            date(2024, 3, 29),
            [
                (date(2023, 12, 2), date(2023, 12, 31)),
                (date(2024, 1, 1), date(2024, 2, 29)),
                (date(2024, 3, 1), date(2024, 3, 29)),
            ],
        ),
        # Exactly whole months: no days around them.
        (date(2024, 1, 1), date(2024, 12, 31),
         [None, (date(2024, 1, 1), date(2024, 12, 31)), None]),
        # A month and a day after it; a day before a month.
        (date(2024, 2, 1), date(2024, 3, 1), [None, (date(2024, 2, 1), date(2024, 2, 29)),
                                              (date(2024, 3, 1), date(2024, 3, 1))]),
        (date(2024, 1, 31), date(2024, 2, 29), [(date(2024, 1, 31), date(2024, 1, 31)),
                                                (date(2024, 2, 1), date(2024, 2, 29)), None]),
        # No whole month, inside one month or across two: all days.
        (date(2024, 1, 1), date(2024, 1, 30), [(date(2024, 1, 1), date(2024, 1, 30)), None, None]),
        (date(2024, 1, 2), date(2024, 2, 27), [(date(2024, 1, 2), date(2024, 2, 27)), None, None]),
    ],
)  # fmt: skip
def test_month_parts_split_a_range_at_its_whole_months(start, end, parts):
    f = Filters(start=start, end=end, categories=("Graffiti",))
    got = f.month_parts()
    assert [_span(p) for p in got] == parts
    assert all(p.categories == ("Graffiti",) for p in got if p is not None)


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
    assert "neighborhood = %(p_neighborhoods)s" in clause
    assert "supervisor_district = ANY(%(p_districts)s)" in clause
    assert params["p_neighborhoods"] == "Mission'; DROP TABLE cases; --"
    assert params["p_districts"] == [3, 9]
    assert "service_name" not in clause  # empty filters add no condition


def test_where_without_time_column_and_filters_is_true():
    clause, params = where(Filters(start=date(2024, 1, 1), end=date(2024, 1, 1)), None)
    assert (clause, params) == ("TRUE", {})


def test_where_rejects_an_unknown_time_column():
    with pytest.raises(ValueError, match="unknown time column"):
        where(Filters(start=date(2024, 1, 1), end=date(2024, 1, 1)), "loaded_at; --")


def test_police_district_filter_reaches_cases_and_gold():
    f = Filters(start=date(2024, 1, 1), end=date(2024, 1, 31), police_districts=("MISSION",))
    clause, params = where(f, None)
    assert clause == "police_district = %(police_districts)s"
    assert params == {"police_districts": "MISSION"}
    clause, params = gold_where(f, "gold.daily_volume")
    assert "police_district = %(police_districts)s" in clause


def test_gold_where_applies_only_the_columns_a_table_carries():
    f = Filters(
        start=date(2024, 3, 10),
        end=date(2024, 4, 2),
        categories=("Graffiti",),
        subtypes=("Graffiti on Pole",),
        neighborhoods=("Mission",),
    )
    clause, params = gold_where(f, "gold.backlog_daily", prefix="b_")
    assert clause == ("day >= %(b_d0)s AND day <= %(b_d1)s AND category = %(b_categories)s")
    assert params == {
        "b_d0": date(2024, 3, 10),
        "b_d1": date(2024, 4, 2),
        "b_categories": "Graffiti",
    }
    assert unapplied(f, GOLD_COLUMNS["gold.backlog_daily"]) == ("subtype", "neighborhood")
    assert unapplied(f, GOLD_COLUMNS["gold.daily_volume"]) == ("subtype",)


def test_gold_where_takes_every_month_the_range_touches():
    f = Filters(start=date(2024, 3, 10), end=date(2024, 4, 2), neighborhoods=("Mission",))
    clause, params = gold_where(f, "gold.resolution_stats")
    assert clause.startswith("month >= %(d0)s AND month <= %(d1)s")
    assert (params["d0"], params["d1"]) == (date(2024, 3, 1), date(2024, 4, 2))
    assert "neighborhood = %(neighborhoods)s" in clause


def test_gold_where_rejects_an_unknown_table():
    with pytest.raises(ValueError, match="unknown gold table"):
        gold_where(Filters(start=date(2024, 1, 1), end=date(2024, 1, 1)), "cases")


def test_open_case_columns_name_the_category_as_the_views_do():
    f = Filters(start=date(2024, 1, 1), end=date(2024, 1, 1), categories=("Graffiti",))
    clause, _ = where(f, None, columns=OPEN_CASE_COLUMNS)
    assert clause == "category = %(categories)s"


def test_a_link_range_is_two_iso_days_in_order():
    assert link_range({"from": "2008-07-01", "to": "2026-11-30"}) == (
        date(2008, 7, 1),
        date(2026, 11, 30),
    )
    assert link_range({}) is None
    assert link_range({"page": "x"}) is None
    for bad in (
        {"from": "2024-01-01"},
        {"to": "2024-01-01"},
        {"from": "yesterday", "to": "2024-01-01"},
        {"from": "2024-02-02", "to": "2024-02-01"},
    ):
        with pytest.raises(BadLinkRange):
            link_range(bad)


def test_a_long_range_is_drawn_by_week_then_by_month():
    def grain(days: int) -> str:
        return Filters(start=date(2008, 7, 1), end=date(2008, 7, 1) + timedelta(days - 1)).grain

    assert [grain(n) for n in (1, 184, 185, 1096, 1097, 6600)] == [
        "day", "day", "week", "week", "month", "month",
    ]  # fmt: skip
