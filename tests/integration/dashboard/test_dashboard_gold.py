"""The gold-backed queries against the test warehouse equal the same aggregates computed here
from `cases` (SQL over the rows, or Python over the known cases), on the default range and on
the whole history; the CSV download's content and cap."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sf311.dashboard import queries, ui
from sf311.dashboard.filters import Filters
from tests.support.dashboard_server import FIXTURE_TARGET_HOURS

pytestmark = pytest.mark.integration
LA = ZoneInfo("America/Los_Angeles")
DEFAULT = Filters(start=date(2024, 3, 1), end=date(2024, 3, 30))
WHOLE = Filters(start=date(2024, 1, 10), end=date(2024, 3, 30))
NARROW = Filters(
    start=date(2024, 1, 10),
    end=date(2024, 3, 30),
    categories=("Graffiti", "Tree Maintenance"),
    police_districts=("MISSION", "SUNSET", "BAYVIEW"),
    sources=("Phone", "Web"),
)
CASES_WHERE = (
    "(requested_datetime AT TIME ZONE 'America/Los_Angeles')::date BETWEEN %(d0)s AND %(d1)s"
    " AND (%(cats)s::text[] IS NULL OR service_name = ANY(%(cats)s))"
    " AND (%(pds)s::text[] IS NULL OR police_district = ANY(%(pds)s))"
    " AND (%(srcs)s::text[] IS NULL OR source = ANY(%(srcs)s))"
)


def _params(f: Filters) -> dict:
    return {
        "d0": f.start,
        "d1": f.end,
        "cats": list(f.categories) or None,
        "pds": list(f.police_districts) or None,
        "srcs": list(f.sources) or None,
    }


@pytest.fixture(scope="module")
def conn(dashboard_db):
    with queries.connect(dashboard_db.analyst_dsn) as c:
        yield c


@pytest.mark.parametrize("filters", [DEFAULT, WHOLE, NARROW], ids=["default", "whole", "narrow"])
def test_volume_and_breakdowns_equal_counts_over_cases(conn, filters):
    expected = conn.execute(
        "SELECT (requested_datetime AT TIME ZONE 'America/Los_Angeles')::date, service_name,"
        f" count(*) FROM cases WHERE {CASES_WHERE} GROUP BY 1, 2",
        _params(filters),
    ).fetchall()
    daily = queries.daily_volume(conn, filters, top=10)
    assert sorted(daily.itertuples(index=False, name=None)) == sorted(expected)
    for name, column in (("neighborhood", "neighborhood"), ("police district", "police_district")):
        rows = conn.execute(
            f"SELECT {column}, count(*) FROM cases WHERE {CASES_WHERE} GROUP BY 1",
            _params(filters),
        ).fetchall()
        shown = queries.breakdowns(conn, filters)[name]
        assert dict(shown.itertuples(index=False, name=None)) == dict(rows)
    stacked = queries.breakdowns(conn, filters)["districts"]
    rows = conn.execute(
        f"SELECT police_district, service_name, count(*) FROM cases WHERE {CASES_WHERE}"
        " GROUP BY 1, 2",
        _params(filters),
    ).fetchall()
    assert sorted(stacked.itertuples(index=False, name=None)) == sorted(rows)


def _bucket(age: timedelta) -> str:
    for limit, label in ((1, "0-1 d"), (7, "1-7 d"), (30, "7-30 d"), (90, "30-90 d")):
        if age < timedelta(days=limit):
            return label
    return "90+ d"


@pytest.mark.parametrize("filters", [DEFAULT, NARROW], ids=["default", "narrow"])
def test_backlog_history_is_the_open_cases_at_each_day_end(conn, cases, filters):
    shown = {
        (d, b): n for d, b, n in queries.backlog_history(conn, filters).itertuples(index=False)
    }
    expected: dict[tuple[date, str], int] = {}
    day = filters.start
    while day <= filters.end:
        cut = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=LA)
        for c in cases:
            if filters.categories and c["service_name"] not in filters.categories:
                continue
            still_open = c["closed_date"] is None or c["closed_date"] > cut
            if c["requested_datetime"] < cut and still_open:
                key = (day, _bucket(cut - c["requested_datetime"]))
                expected[key] = expected.get(key, 0) + 1
        day += timedelta(days=1)
    assert shown == expected
    assert sum(n for (d, _), n in shown.items() if d == date(2024, 3, 30)) > 10


def test_a_long_range_sums_weeks_and_months_and_takes_the_backlog_at_their_ends(conn):
    # The fixture's cases all fall in the last 80 days of both ranges.
    for start, unit in ((date(2023, 6, 1), "week"), (date(2021, 1, 1), "month")):
        long, daily = Filters(start=start, end=WHOLE.end), WHOLE
        assert long.grain == unit and daily.grain == "day"

        def period(day: date, unit: str = unit) -> date:
            return day - timedelta(day.weekday()) if unit == "week" else day.replace(day=1)

        volume: dict[tuple, int] = {}
        for r in queries.daily_volume(conn, daily, top=10).itertuples():
            key = (period(r.day), r.category)
            volume[key] = volume.get(key, 0) + r.cases
        got = queries.daily_volume(conn, long, top=10)
        assert {(r.day, r.category): r.cases for r in got.itertuples()} == volume
        sla: dict[date, list[int]] = {}
        for r in queries.sla(conn, daily).itertuples():
            sums = sla.setdefault(period(r.day), [0, 0, 0, 0])
            for i, v in enumerate((r.opened, r.met, r.missed, r.pending)):
                sums[i] += v
        got = queries.sla(conn, long)
        assert {r.day: [r.opened, r.met, r.missed, r.pending] for r in got.itertuples()} == sla
        days = queries.backlog_history(conn, daily)
        last = days["day"].max()  # the range's end or the last day gold holds

        def period_end(day: date, unit: str = unit, last: date = last) -> date:
            after = period(day) + (timedelta(weeks=1) if unit == "week" else timedelta(days=32))
            return min(period(after) - timedelta(days=1), last)

        want = days[days["day"] == days["day"].map(period_end)].reset_index(drop=True)
        assert len(want) < len(days)
        assert queries.backlog_history(conn, long).equals(want)


def test_sla_days_equal_outcomes_against_the_target(conn, cases):
    sla = queries.sla(conn, WHOLE).set_index("day")
    target = timedelta(hours=FIXTURE_TARGET_HOURS)
    # The fixture's cases all opened in 2024, far more than 72 h ago: none is still pending.
    outcomes: dict[date, list[int]] = {}
    for c in cases:
        row = outcomes.setdefault(c["requested_datetime"].astimezone(LA).date(), [0, 0, 0])
        met = c["closed_date"] is not None and c["closed_date"] - c["requested_datetime"] <= target
        row[0 if met else 1] += 1
    assert sla[["met", "missed", "pending"]].to_dict("index") == {
        d: {"met": m, "missed": x, "pending": 0} for d, (m, x, _) in outcomes.items()
    }
    day = date(2024, 3, 1)
    m, x, _ = outcomes[day]
    assert sla.loc[day, "share_met"] == pytest.approx(m / (m + x))


def test_resolution_months_of_one_group_are_exact_percentiles(conn):
    filters = Filters(
        start=date(2024, 1, 10),
        end=date(2024, 3, 30),
        categories=("Graffiti",),
        neighborhoods=("Mission",),
    )
    expected = conn.execute(
        "SELECT date_trunc('month', closed_date AT TIME ZONE 'America/Los_Angeles')::date,"
        " count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_hours),"
        " percentile_cont(0.9) WITHIN GROUP (ORDER BY resolution_hours) FROM cases"
        " WHERE service_name = 'Graffiti' AND neighborhood = 'Mission'"
        " AND closure_kind = 'resolved' AND resolution_hours >= 0"
        " AND closed_date < '2024-03-31 00:00 America/Los_Angeles' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    shown = queries.resolution_monthly(conn, filters)
    assert [r[:2] for r in shown.itertuples(index=False, name=None)] == [r[:2] for r in expected]
    assert shown["p50_hours"].tolist() == pytest.approx([r[2] for r in expected])
    assert shown["p90_hours"].tolist() == pytest.approx([r[3] for r in expected])


def test_whole_history_metrics_count_every_case(conn, cases):
    metrics = queries.metrics(conn, WHOLE)
    assert metrics.current.cases == len(cases)
    assert metrics.current.closed == sum(
        c["closed_date"] is not None
        and WHOLE.start <= c["closed_date"].astimezone(LA).date() <= WHOLE.end
        for c in cases
    )
    assert metrics.open_day == date(2024, 3, 30)


def _csv(dashboard_db, filters: Filters, cap: int) -> list[dict]:
    with ui.csv_file(dashboard_db.analyst_dsn, filters, cap) as out:
        return list(csv.DictReader(io.TextIOWrapper(out, encoding="utf-8")))


def test_csv_holds_the_newest_filtered_cases_up_to_the_cap(dashboard_db, cases):
    filters = Filters(start=date(2024, 1, 10), end=date(2024, 3, 30), sources=("Phone",))
    phone = sorted(
        (c for c in cases if c["source"] == "Phone"),
        key=lambda c: (c["requested_datetime"], c["service_request_id"]),
        reverse=True,
    )
    rows = _csv(dashboard_db, filters, cap=10_000)
    assert list(rows[0]) == list(queries.CASE_COLUMNS)
    assert [int(r["service_request_id"]) for r in rows] == [c["service_request_id"] for c in phone]
    first = phone[0]
    assert datetime.fromisoformat(rows[0]["requested_datetime"]) == first["requested_datetime"]
    assert rows[0]["requested_datetime"].endswith("+00")  # times in UTC
    capped = _csv(dashboard_db, filters, cap=7)
    assert [int(r["service_request_id"]) for r in capped] == [
        c["service_request_id"] for c in phone[:7]
    ]
    with queries.connect(dashboard_db.analyst_dsn) as conn:
        assert queries.count_capped(conn, filters, cap=7) == 8
        assert queries.count_capped(conn, filters, cap=10_000) == len(phone)
