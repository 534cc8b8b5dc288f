"""Gold transforms on a few explicit cases, expected values worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest
from pyspark.sql import Row

from sf311.lakehouse.gold import EPOCH, daily_volume, resolution_stats, touched
from sf311.lakehouse.gold_backlog import backlog_daily
from sf311.lakehouse.gold_sla import pending_slices, sla_daily, sla_targets
from sf311.lakehouse.gold_tables import differing
from sf311.warehouse.gold import RESOLUTION_STATS

SCHEMA = (
    "requested_datetime timestamp, closed_date timestamp, service_name string, "
    "neighborhood string, supervisor_district int, police_district string, source string, "
    "agency_responsible string, resolution_hours double, closure_kind string, "
    "quality_flags array<string>"
)


def utc(*args: int) -> datetime:
    """Return a UTC instant."""
    return datetime(*args, tzinfo=UTC)


def case(requested, closed=None, category="Graffiti", kind=None, flags=(), **extra):
    """Return one silver row."""
    hours = None
    if closed is not None and "closed_before_opened" not in flags:
        hours = (closed - requested).total_seconds() / 3600
    kind = kind or ("resolved" if closed else "unknown")
    return (
        requested, closed, category, extra.get("neighborhood", "Mission"), 1, "MISSION",
        "Web", extra.get("agency", "DPW"), hours, kind, list(flags),
    )  # fmt: skip


@pytest.fixture
def frame(spark):
    """Return a function: silver rows -> DataFrame."""
    return lambda rows: spark.createDataFrame(rows, SCHEMA)


def test_backlog_counts_a_case_on_each_day_it_is_open_at_midnight_by_its_age_then(spark, frame):
    # 10:00 PST on 10 January, closed 09:00 PST on 20 January: open at the end of 10..19.
    cases = frame([case(utc(2019, 1, 10, 18), utc(2019, 1, 20, 17))])
    starts = spark.createDataFrame([("Graffiti", date(2019, 1, 1))], "category string, day date")
    got = backlog_daily(cases, starts, date(2019, 1, 22)).collect()
    by_day = {r.day: (r.age_bucket, r.open_cases) for r in got}
    expected = {date(2019, 1, 10): ("0-1 d", 1)}
    expected |= {date(2019, 1, d): ("1-7 d", 1) for d in range(11, 17)}
    expected |= {date(2019, 1, d): ("7-30 d", 1) for d in range(17, 20)}
    assert by_day == expected
    # From a later start day only, the same counts.
    later = spark.createDataFrame([("Graffiti", date(2019, 1, 15))], "category string, day date")
    got = {r.day for r in backlog_daily(cases, later, date(2019, 1, 22)).collect()}
    assert got == {date(2019, 1, d) for d in range(15, 20)}


def test_backlog_edges_at_midnight_and_invalid_closures(spark, frame):
    midnight = utc(2019, 1, 12, 8)  # 00:00 PST on 12 January
    cases = frame([
        case(midnight, category=None),
        case(midnight, category=None, flags=("closed_date_invalid",), kind="resolved"),
        case(midnight - timedelta(days=3), midnight, category=None),  # closed at the boundary
    ])  # fmt: skip
    starts = spark.createDataFrame([(None, date(2019, 1, 8))], "category string, day date")
    got = sorted((r.day, r.age_bucket, r.open_cases)
                 for r in backlog_daily(cases, starts, date(2019, 1, 13)).collect())  # fmt: skip
    # Requested exactly at a midnight: open at the end of that day, aged exactly one day; the
    # case closed exactly at the end of the 11th is not open then.
    assert got == [
        (date(2019, 1, 9), "1-7 d", 1),
        (date(2019, 1, 10), "1-7 d", 1),
        (date(2019, 1, 12), "1-7 d", 1),
        (date(2019, 1, 13), "1-7 d", 1),
    ]


def test_sla_counts_met_missed_and_pending_against_the_target(spark, frame):
    r = utc(2019, 1, 10, 18)
    as_of = r + timedelta(hours=9)
    cases = frame([
        case(r, r + timedelta(hours=5)),
        case(r, r + timedelta(hours=11), kind="duplicate"),
        case(r, None),
        case(r - timedelta(hours=2), None),
        case(r, r + timedelta(hours=1), kind="cancelled_or_invalid"),
        case(r, r - timedelta(hours=1), flags=("closed_before_opened",)),
        case(r, None, category="Trees"),
    ])  # fmt: skip
    targets = spark.createDataFrame(
        [("Graffiti", 10.0), ("Trees", None)], "category string, target_hours double"
    )
    got = {x.category: x for x in sla_daily(cases, targets, as_of).collect()}
    g = got["Graffiti"]
    # The case opened two hours earlier falls on the same SF day (10:00 and 08:00 PST).
    assert (g.day, g.opened, g.met, g.missed, g.pending) == (date(2019, 1, 10), 6, 1, 2, 1)
    assert g.share_met == pytest.approx(1 / 3)
    t = got["Trees"]
    assert (t.opened, t.met, t.missed, t.pending, t.share_met) == (1, None, None, None, None)


def test_targets_take_conf_first_then_the_trailing_year_p90(spark, frame):
    as_of = utc(2019, 6, 1)
    cases = frame([
        *[case(utc(2019, 5, 1), utc(2019, 5, 1) + timedelta(hours=h)) for h in (1, 2, 3, 4, 5)],
        case(utc(2017, 1, 1), utc(2017, 3, 1)),  # closed more than a year before as_of
        case(utc(2019, 5, 1), utc(2019, 5, 2), category="Trees"),
        case(utc(2019, 5, 1), None, category="Signs"),
    ])  # fmt: skip
    conf = spark.createDataFrame([("Trees", 48.0)], "category string, target_hours double")
    got = dict(sla_targets(cases, conf, as_of).collect())
    assert got["Graffiti"] == pytest.approx(4.6)  # continuous p90 of 1..5
    assert (got["Trees"], got["Signs"]) == (48.0, None)


def test_volume_and_resolution_inside_slices_only(spark, frame):
    cases = frame([
        case(utc(2019, 1, 10, 18), utc(2019, 2, 3, 18)),
        case(utc(2019, 1, 11, 18), utc(2019, 2, 3, 20), kind="duplicate"),
        case(utc(2019, 1, 12, 18), utc(2019, 2, 4, 18)),
    ])  # fmt: skip
    slices = spark.createDataFrame([(date(2019, 2, 3), "Graffiti")], "day date, category string")
    got = [(r.day, r.opened, r.closed) for r in daily_volume(cases, slices).collect()]
    assert got == [(date(2019, 2, 3), 0, 2)]
    months = spark.createDataFrame([(date(2019, 2, 1), "Graffiti")], "month date, category string")
    (stats,) = resolution_stats(cases, months).collect()
    hours = sorted([24.0 * 24, 23.0 * 24])
    assert (stats.closed_cases, stats.p50_hours) == (2, pytest.approx(sum(hours) / 2))


def test_changed_rows_touch_their_days_opened_and_closed_months_and_first_days():
    key = Row("category", "day", "closed_day", "month", "newest")
    d = date(2019, 1, 1)
    late = utc(2019, 1, 12, 20)
    got = touched([
        key("Graffiti", d.replace(day=10), d.replace(day=12), d, 5),
        key("Graffiti", d.replace(day=8), None, None, (late - EPOCH) // timedelta(microseconds=1)),
        key(None, d.replace(day=9), None, None, None),
    ])  # fmt: skip
    assert got.volume == {
        (d.replace(day=10), "Graffiti"), (d.replace(day=12), "Graffiti"),
        (d.replace(day=8), "Graffiti"), (d.replace(day=9), None),
    }  # fmt: skip
    assert got.months == {(d, "Graffiti")}
    assert got.sla == {(d.replace(day=10), "Graffiti"), (d.replace(day=8), "Graffiti"),
                       (d.replace(day=9), None)}  # fmt: skip
    assert got.starts == {"Graffiti": d.replace(day=8), None: d.replace(day=9)}
    assert got.newest == late


def test_open_cases_may_pass_their_target_on_days_back_to_since_minus_the_target():
    since = utc(2019, 1, 10, 8)  # 00:00 PST on 10 January
    targets = {"A": 24.0, "B": None, "C": 0.5}
    got = pending_slices(targets, since, date(2019, 1, 11))
    # A: exactly the midnight starting the 9th; C: 23:30 PST on the 9th; B has no target.
    days = {date(2019, 1, n) for n in (9, 10, 11)}
    assert got == {(day, c) for day in days for c in ("A", "C")}


def test_only_rows_that_differ_are_merged_null_keys_and_values_equal():
    day = date(2024, 5, 1)
    old = pa.table(
        {
            "month": pa.array([day] * 4, pa.date32()),
            "category": ["A", "A", "B", None],
            "neighborhood": [None, "x", "y", None],
            "closed_cases": [3, 2, 1, 5],
            "p50_hours": [None, 1.5, 2.0, 4.0],
            "p90_hours": [9.0, 3.0, 2.0, 8.0],
        }
    )
    # (A, None) and (None, None) unchanged, (A, x) changed, (B, y) gone, (B, z) new.
    new = pa.table(
        {
            "month": pa.array([day] * 4, pa.date32()),
            "category": ["A", "A", "B", None],
            "neighborhood": [None, "x", "z", None],
            "closed_cases": [3, 2, 7, 5],
            "p50_hours": [None, 1.75, 1.0, 4.0],
            "p90_hours": [9.0, 3.0, 1.0, 8.0],
        }
    )
    changed, gone = differing(old, new, RESOLUTION_STATS)
    assert changed.to_pylist() == [new.slice(1, 1).to_pylist()[0], new.slice(2, 1).to_pylist()[0]]
    assert gone.to_pylist() == [{"month": day, "category": "B", "neighborhood": "y"}]
    assert differing(old, old, RESOLUTION_STATS)[0].num_rows == 0
