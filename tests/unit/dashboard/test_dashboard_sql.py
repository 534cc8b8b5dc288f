"""SQL the gold-backed queries build: which relation each reads, and values as parameters."""

from __future__ import annotations

import io
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from sf311.dashboard import queries
from sf311.dashboard.filters import Filters

WHOLE_HISTORY = Filters(
    start=date(2008, 7, 1),
    end=date(2026, 12, 1),
    categories=("Graffiti'; --",),
    neighborhoods=("Mission",),
    police_districts=("MISSION",),
)


class _Cursor:
    description: list = []

    def __init__(self, row: tuple | None = None) -> None:
        self.row = row

    def fetchone(self) -> tuple | None:
        return self.row

    def fetchall(self) -> list:
        return []


class Recorder:
    """Stands in for a connection: keeps each statement and its parameters, returns no rows."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def execute(self, query: str, params: dict[str, Any] | None = None) -> _Cursor:
        self.calls.append((query, params or {}))
        if "gold.daily_volume" in query:
            return _Cursor((0, 0, 0, 0))
        # Zero counts per status (the open-case counts), or no value (max, sum).
        return _Cursor((0, 0, 0) if "open_case_status" in query else (None, None))


def _relations(query: str) -> set[str]:
    """Return the tables and views `query` reads, its own WITH names left out."""
    named = set(re.findall(r"\bWITH\s+(\w+)\s+AS\b", query))
    return set(re.findall(r"\bFROM\s+([\w.]+)", query)) - named


@pytest.mark.parametrize(
    ("function", "table"),
    [
        (queries.resolution_monthly, "gold.resolution_stats"),
        (queries.backlog_history, "gold.backlog_daily"),
        (queries.sla, "gold.sla_daily"),
    ],
)
def test_aggregates_read_only_their_gold_table(function, table):
    conn = Recorder()
    function(conn, WHOLE_HISTORY)
    [(query, params)] = conn.calls
    assert _relations(query) == {table}
    assert "Graffiti'" not in query and "Mission" not in query
    assert params["categories"] == "Graffiti'; --"


VOLUME = {"gold.daily_volume", "gold.monthly_volume"}


@pytest.mark.parametrize("function", [queries.daily_volume, queries.breakdowns])
def test_volume_reads_whole_months_by_month_and_the_days_around_them(function):
    conn = Recorder()
    function(conn, WHOLE_HISTORY)
    [(query, params)] = conn.calls
    assert _relations(query) == VOLUME
    assert "Graffiti'" not in query and "Mission" not in query
    # 2008-07-01 to 2026-11-30 by month, then the range's last day by day.
    assert (params["m_d0"], params["m_d1"]) == (date(2008, 7, 1), date(2026, 11, 30))
    assert (params["a_d0"], params["a_d1"]) == (date(2026, 12, 1), date(2026, 12, 1))
    assert "b_d0" not in params
    assert params["m_categories"] == params["a_categories"] == "Graffiti'; --"


def test_volume_by_day_or_week_reads_days_only():
    conn = Recorder()
    short = Filters(start=date(2024, 1, 1), end=date(2024, 6, 30), categories=("Graffiti",))
    queries.daily_volume(conn, short)
    [(query, params)] = conn.calls
    assert short.grain == "day" and _relations(query) == {"gold.daily_volume"}
    assert (params["b_d0"], params["b_d1"]) == (short.start, short.end)


def test_breakdowns_and_metrics_never_scan_cases():
    conn = Recorder()
    queries.breakdowns(conn, WHOLE_HISTORY)
    metrics = queries.metrics(conn, WHOLE_HISTORY)
    read = set().union(*(_relations(q) for q, _ in conn.calls))
    assert read == VOLUME | {"gold.backlog_daily", "gold.resolution_stats"}
    assert metrics.open_at_end is None and metrics.current.cases == 0
    # Opened/closed of both periods in one statement: the previous period starts 18 years back.
    volume = next(p for q, p in conn.calls if "gold.daily_volume" in q and "p_m_d0" in p)
    previous = WHOLE_HISTORY.previous()
    assert (volume["p_b_d0"], volume["p_m_d0"]) == (previous.start, date(1990, 2, 1))
    assert (volume["m_d0"], volume["a_d1"]) == (date(2008, 7, 1), date(2026, 12, 1))
    # The backlog takes the category filter only: gold.backlog_daily has no neighborhood.
    backlog = next(q for q, _ in conn.calls if "gold.backlog_daily" in q)
    assert "category = %(categories)s" in backlog and "neighborhood" not in backlog


def test_open_case_queries_read_the_view_without_a_date_range():
    conn = Recorder()
    counts = queries.open_status_counts(conn, WHOLE_HISTORY)
    queries.open_cases(conn, WHOLE_HISTORY, limit=10)
    assert counts == {"overdue": 0, "at_risk": 0, "on_time": 0}
    for query, _ in conn.calls:
        assert _relations(query) == {"open_case_status"}
        assert "requested_datetime >=" not in query
        assert "category = %(categories)s" in query and "service_name" not in query
    assert conn.calls[1][1]["limit"] == 10


class _Copy:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __enter__(self) -> list[bytes]:
        return self.chunks

    def __exit__(self, *exc: object) -> None:
        return None


class CopyRecorder(Recorder):
    """A Recorder whose cursor answers COPY with fixed chunks."""

    def cursor(self) -> CopyRecorder:
        return self

    def __enter__(self) -> CopyRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def copy(self, query: str, params: dict[str, Any]) -> _Copy:
        self.calls.append((query, params))
        return _Copy([b"a,b\n", b"1,2\n"])


def test_csv_is_copied_newest_first_with_the_cap_as_a_parameter():
    conn = CopyRecorder()
    out = io.BytesIO()
    queries.write_csv(conn, WHOLE_HISTORY, out, cap=1234)
    assert out.getvalue() == b"a,b\n1,2\n"
    assert conn.calls[0][0] == "SET TIME ZONE 'UTC'"
    query, params = conn.calls[1]
    assert query.startswith("COPY (SELECT service_request_id,")
    assert "FROM cases WHERE" in query and "deleted_at IS NULL" in query
    assert "ORDER BY requested_datetime DESC, service_request_id DESC LIMIT %(cap)s" in query
    assert params["cap"] == 1234


def test_heat_cells_grid_only_the_newest_points_of_cases():
    conn = Recorder()
    queries.heat_cells(conn, WHOLE_HISTORY, points=1000)
    [(query, params)] = conn.calls
    inner = query.split("FROM (", 1)[1]
    assert "FROM cases WHERE" in inner
    assert "ORDER BY requested_datetime DESC, service_request_id DESC LIMIT %(points)s" in inner
    assert params["points"] == 1000


def test_centroids_sample_the_same_pages_of_cases_each_time():
    conn = Recorder()
    queries.neighborhood_centroids(conn)
    queries.neighborhood_centroids(conn)
    first, second = [(q, p) for q, p in conn.calls if "TABLESAMPLE" in q]
    assert first == second
    assert "FROM cases TABLESAMPLE SYSTEM (%(percent)s) REPEATABLE (%(seed)s)" in first[0]
    assert first[1]["seed"] == queries.CENTROID_SEED


class _Column:
    def __init__(self, name: str, type_code: int) -> None:
        self.name, self.type_code = name, type_code


class _Rows:
    """Answers one query with fixed rows and their column descriptions."""

    def __init__(self, description: list[_Column], rows: list[tuple]) -> None:
        self.description, self.rows = description, rows

    def execute(self, query: str, params: dict[str, Any]) -> _Rows:
        return self

    def fetchall(self) -> list[tuple]:
        return self.rows


def test_frames_hold_the_rows_with_instants_as_one_datetime_column():
    utc = ZoneInfo("Etc/UTC")
    at = datetime(2024, 3, 10, 20, 0, 1, 250000, tzinfo=utc)
    rows = [(1, at, None, Decimal("1.5"), None), (2, None, None, Decimal("-2"), 3)]
    description = [_Column("id", 20), _Column("opened", 1184), _Column("closed", 1184),
                   _Column("late", 1700), _Column("n", 23)]  # fmt: skip
    frame = queries._frame(_Rows(description, rows), "SELECT", {})
    # What pandas builds row by row, value by value (10x slower at 2,000 rows).
    expected = pd.DataFrame(rows, columns=[c.name for c in description])
    pd.testing.assert_frame_equal(frame, expected)
    assert str(frame["opened"].dtype) == "datetime64[ns, Etc/UTC]"
    assert frame["opened"][0] == pd.Timestamp(at) and frame["opened"].isna()[1]
    assert frame["closed"].tolist() == [None, None]  # no instant at all: left as it came
    empty = queries._frame(_Rows(description, []), "SELECT", {})
    assert list(empty.columns) == ["id", "opened", "closed", "late", "n"] and empty.empty
