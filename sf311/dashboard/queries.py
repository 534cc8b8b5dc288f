"""Read-only SQL behind each metric, chart and map layer of the dashboard, aggregated or sampled
in Postgres so that a page moves a few thousand rows whatever the size of `cases`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import pandas as pd
import psycopg

from sf311.contract.city import LOCAL_TZ
from sf311.contract.quality import LOCATION_FLAGS, RESOLVED
from sf311.dashboard.filters import Filters, where

# Coordinates outside this box (0/0 for cases without an address) never reach the map.
SF_BOX = {"lat_min": 37.6, "lat_max": 37.9, "long_min": -122.6, "long_max": -122.3}
# A flagged location never reaches the map, whatever the row holds.
_IN_BOX = (
    "lat BETWEEN %(lat_min)s AND %(lat_max)s AND long BETWEEN %(long_min)s AND %(long_max)s"
    f" AND NOT quality_flags && ARRAY[{', '.join(repr(f) for f in LOCATION_FLAGS)}]"
)
# Resolution figures count resolved closures only: a duplicate or a transfer resolves nothing,
# and a case closed before it opened has a null resolution_hours.
_RESOLVED = f"closure_kind = '{RESOLVED}' AND resolution_hours >= 0"
# Upper edges of the resolution-time bins, in hours; the last bin is "more than a year".
HOUR_EDGES: tuple[float, ...] = (1, 4, 12, 24, 72, 168, 336, 720, 2160, 4320, 8760)
HOUR_LABELS: tuple[str, ...] = (
    "< 1 h",
    "1-4 h",
    "4-12 h",
    "12-24 h",
    "1-3 d",
    "3-7 d",
    "1-2 wk",
    "2-4 wk",
    "1-3 mo",
    "3-6 mo",
    "6-12 mo",
    "> 1 yr",
)
NONE_LABEL = "(none)"
CONTEXT_SAMPLE = 5000
BREAKDOWNS: dict[str, str] = {
    "category": "service_name",
    "neighborhood": "neighborhood",
    "source": "source",
    "status": "status_description",
}


def connect(dsn: str) -> psycopg.Connection:
    """Return an autocommit connection with a statement timeout, for read-only queries."""
    return psycopg.connect(
        dsn, autocommit=True, connect_timeout=5, options="-c statement_timeout=30000"
    )


def _where(filters: Filters, time_column: str | None = "requested_datetime") -> tuple[str, dict]:
    """Return where()'s condition for `filters`, leaving out cases the source deleted."""
    cond, params = where(filters, time_column)
    return f"{cond} AND deleted_at IS NULL", params


def _frame(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> pd.DataFrame:
    cur = conn.execute(query, params)
    columns = [d.name for d in cur.description or []]
    return pd.DataFrame(cur.fetchall(), columns=columns)


@dataclass(frozen=True)
class PeriodStats:
    """Figures of one period: cases opened, cases closed, resolution percentiles (hours)."""

    cases: int
    closed: int
    p50_hours: float | None
    p90_hours: float | None


@dataclass(frozen=True)
class Metrics:
    """The headline figures of the filtered range, of the period before it, and open cases."""

    current: PeriodStats
    previous: PeriodStats
    open_now: int


def metrics(conn: psycopg.Connection, filters: Filters) -> Metrics:
    """Return the headline figures of `filters` and of the period of the same length before.

    `open_now`: cases opened in the range that have no closed_date yet. Resolution percentiles
    are over resolved cases closed in the range (closure_kind resolved), leaving out duplicates,
    transfers, cancellations, unknown closures and the few that close before they open.
    """
    span = replace(filters, start=filters.previous().start)
    cut = filters.bounds()[0]
    opened_where, params = _where(span, "requested_datetime")
    opened = conn.execute(
        "SELECT"
        " count(*) FILTER (WHERE requested_datetime >= %(cut)s),"
        " count(*) FILTER (WHERE requested_datetime >= %(cut)s AND closed_date IS NULL),"
        " count(*) FILTER (WHERE requested_datetime < %(cut)s)"
        f" FROM cases WHERE {opened_where}",
        {**params, "cut": cut},
    ).fetchone()
    closed_where, params = _where(span, "closed_date")
    closed = conn.execute(
        "SELECT"
        " count(*) FILTER (WHERE closed_date >= %(cut)s),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_hours)"
        f"   FILTER (WHERE closed_date >= %(cut)s AND {_RESOLVED}),"
        " percentile_cont(0.9) WITHIN GROUP (ORDER BY resolution_hours)"
        f"   FILTER (WHERE closed_date >= %(cut)s AND {_RESOLVED}),"
        " count(*) FILTER (WHERE closed_date < %(cut)s),"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_hours)"
        f"   FILTER (WHERE closed_date < %(cut)s AND {_RESOLVED}),"
        " percentile_cont(0.9) WITHIN GROUP (ORDER BY resolution_hours)"
        f"   FILTER (WHERE closed_date < %(cut)s AND {_RESOLVED})"
        f" FROM cases WHERE {closed_where}",
        {**params, "cut": cut},
    ).fetchone()
    assert opened is not None and closed is not None  # an aggregate always returns one row
    return Metrics(
        current=PeriodStats(opened[0], closed[0], closed[1], closed[2]),
        previous=PeriodStats(opened[2], closed[3], closed[4], closed[5]),
        open_now=opened[1],
    )


@dataclass(frozen=True)
class Freshness:
    """How recent the streaming job's last committed batch is, and its lag over the last hour."""

    last_commit: datetime | None
    seconds_since: float | None
    batches_last_hour: int
    rows_last_hour: int
    lag_p50_seconds: float | None
    lag_p95_seconds: float | None


def freshness(conn: psycopg.Connection) -> Freshness:
    """Return the pipeline's freshness from view stream_freshness and table stream_batches."""
    row = conn.execute(
        "SELECT b.last_commit, extract(epoch FROM now() - b.last_commit),"
        " f.batches_last_hour, f.rows_last_hour, f.lag_p50_seconds, f.lag_p95_seconds_max"
        " FROM stream_freshness f,"
        " (SELECT max(committed_at) AS last_commit FROM stream_batches) b"
    ).fetchone()
    assert row is not None
    return Freshness(
        last_commit=row[0],
        seconds_since=float(row[1]) if row[1] is not None else None,
        batches_last_hour=int(row[2]),
        rows_last_hour=int(row[3]),
        lag_p50_seconds=row[4],
        lag_p95_seconds=row[5],
    )


def breakdowns(conn: psycopg.Connection, filters: Filters) -> dict[str, pd.DataFrame]:
    """Return case counts by category, neighborhood, source and status (columns label, cases).

    One scan with GROUPING SETS; each frame is sorted by cases, largest first; a missing value
    is labelled "(none)".
    """
    cond, params = _where(filters)
    columns = list(BREAKDOWNS.values())
    flags = ", ".join(f"GROUPING({c})" for c in columns)
    sets = ", ".join(f"({c})" for c in columns)
    rows = conn.execute(
        f"SELECT {flags}, {', '.join(columns)}, count(*) FROM cases WHERE {cond}"
        f" GROUP BY GROUPING SETS ({sets})",
        params,
    ).fetchall()
    n = len(columns)
    out = {}
    for i, name in enumerate(BREAKDOWNS):
        picked = [
            (NONE_LABEL if r[n + i] is None else str(r[n + i]), r[2 * n]) for r in rows if r[i] == 0
        ]
        frame = pd.DataFrame(picked, columns=["label", "cases"])
        out[name] = frame.sort_values(["cases", "label"], ascending=[False, True]).reset_index(
            drop=True
        )
    return out


def daily_volume(conn: psycopg.Connection, filters: Filters, top: int = 5) -> pd.DataFrame:
    """Return cases per San Francisco day of the `top` categories (day, category, cases)."""
    cond, params = _where(filters)
    return _frame(
        conn,
        f"SELECT (requested_datetime AT TIME ZONE '{LOCAL_TZ}')::date AS day,"
        " service_name AS category, count(*) AS cases"
        f" FROM cases WHERE {cond} AND service_name IN ("
        f"   SELECT service_name FROM cases WHERE {cond} AND service_name IS NOT NULL"
        "   GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT %(top)s)"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        {**params, "top": top},
    )


def resolution_histogram(conn: psycopg.Connection, filters: Filters) -> pd.DataFrame:
    """Return resolved cases closed in the range per resolution-time bin (bin, cases), every bin
    present."""
    cond, params = _where(filters, "closed_date")
    rows = conn.execute(
        "SELECT width_bucket(resolution_hours, %(edges)s::float8[]), count(*)"
        f" FROM cases WHERE {cond} AND {_RESOLVED} GROUP BY 1",
        {**params, "edges": list(HOUR_EDGES)},
    ).fetchall()
    counts: dict[int, int] = dict(rows)
    return pd.DataFrame(
        {"bin": list(HOUR_LABELS), "cases": [counts.get(i, 0) for i in range(len(HOUR_LABELS))]}
    )


def heat_cells(
    conn: psycopg.Connection, filters: Filters, cell: float = 0.002, limit: int = 5000
) -> pd.DataFrame:
    """Return case counts on a lat/long grid of `cell` degrees (columns lat, long, cases).

    The densest `limit` cells only, so the heatmap's size does not grow with the table.
    """
    cond, params = _where(filters)
    return _frame(
        conn,
        "SELECT round(lat / %(cell)s) * %(cell)s AS lat, round(long / %(cell)s) * %(cell)s AS long,"
        f" count(*) AS cases FROM cases WHERE {cond} AND {_IN_BOX}"
        " GROUP BY 1, 2 ORDER BY 3 DESC LIMIT %(limit)s",
        {**params, **SF_BOX, "cell": cell, "limit": limit},
    )


MARKER_COLUMNS = (
    "service_request_id, service_name, service_subtype, agency_responsible, neighborhood,"
    " supervisor_district, police_district, source, requested_datetime, closed_date,"
    " status_description, lat, long"
)


def recent_markers(conn: psycopg.Connection, filters: Filters, limit: int = 300) -> pd.DataFrame:
    """Return the newest `limit` filtered cases that have a San Francisco location."""
    cond, params = _where(filters)
    return _frame(
        conn,
        f"SELECT {MARKER_COLUMNS} FROM cases WHERE {cond} AND {_IN_BOX}"
        " ORDER BY requested_datetime DESC, service_request_id DESC LIMIT %(limit)s",
        {**params, **SF_BOX, "limit": limit},
    )


def neighborhood_stats(conn: psycopg.Connection, filters: Filters) -> pd.DataFrame:
    """Return per neighborhood: cases, median resolution hours, centroid (lat, long).

    The centroid is the mean location of the neighborhood's filtered cases, which stands in for
    a boundary file; neighborhoods without any located case are left out.
    """
    cond, params = _where(filters)
    return _frame(
        conn,
        "SELECT neighborhood, count(*) AS cases,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_hours)"
        f"   FILTER (WHERE {_RESOLVED}) AS p50_hours,"
        f" avg(lat) FILTER (WHERE {_IN_BOX}) AS lat, avg(long) FILTER (WHERE {_IN_BOX}) AS long"
        f" FROM cases WHERE {cond} AND neighborhood IS NOT NULL GROUP BY 1"
        f" HAVING count(*) FILTER (WHERE {_IN_BOX}) > 0 ORDER BY 2 DESC, 1",
        {**params, **SF_BOX},
    )


@dataclass(frozen=True)
class Options:
    """The values each filter offers, and the first and last day that hold cases."""

    subtypes_by_category: dict[str, tuple[str, ...]]
    neighborhoods: tuple[str, ...]
    districts: tuple[int, ...]
    statuses: tuple[str, ...]
    sources: tuple[str, ...]
    first_day: date | None
    last_day: date | None

    @property
    def categories(self) -> tuple[str, ...]:
        """Return every category, sorted."""
        return tuple(sorted(self.subtypes_by_category))

    def subtypes(self, categories: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Return the subtypes of `categories` (all categories when empty), sorted."""
        picked = categories or tuple(self.subtypes_by_category)
        return tuple(sorted({s for c in picked for s in self.subtypes_by_category.get(c, ())}))


# Option column -> Options field; the names are fixed, never user input.
_OPTION_COLUMNS = {
    "neighborhood": "neighborhoods",
    "supervisor_district": "districts",
    "status_description": "statuses",
    "source": "sources",
}


def _index_leads(conn: psycopg.Connection) -> set[tuple[str, ...]]:
    """Return the leading column and leading pair of each full (non-partial) index of cases."""
    leads: set[tuple[str, ...]] = set()
    for (definition,) in conn.execute(
        "SELECT indexdef FROM pg_indexes"
        " WHERE schemaname = current_schema() AND tablename = 'cases'"
    ).fetchall():
        if " WHERE " in definition or "(" not in definition:
            continue
        columns = [c.strip() for c in definition.split("(", 1)[1].split(")", 1)[0].split(",")]
        leads.update({tuple(columns[:1]), tuple(columns[:2])})
    return leads


def _loose_distinct(conn: psycopg.Connection, column: str) -> list[Any]:
    # One index probe per distinct value (a "skip scan") instead of reading the whole table.
    rows = conn.execute(
        "WITH RECURSIVE t(v) AS ("
        f" (SELECT {column} FROM cases WHERE {column} IS NOT NULL ORDER BY 1 LIMIT 1)"
        f" UNION ALL SELECT (SELECT {column} FROM cases WHERE {column} > t.v ORDER BY 1 LIMIT 1)"
        " FROM t WHERE t.v IS NOT NULL) SELECT v FROM t WHERE v IS NOT NULL"
    ).fetchall()
    return [r[0] for r in rows]


def _subtype_pairs(conn: psycopg.Connection, indexed: bool) -> list[tuple[str, str]]:
    both = "service_name IS NOT NULL AND service_subtype IS NOT NULL"
    if not indexed:
        query = f"SELECT service_name, service_subtype FROM cases WHERE {both} GROUP BY 1, 2"
    else:
        query = (
            "WITH RECURSIVE t(c, s) AS ("
            f" (SELECT service_name, service_subtype FROM cases WHERE {both} ORDER BY 1, 2 LIMIT 1)"
            " UNION ALL SELECT n.c, n.s FROM t CROSS JOIN LATERAL ("
            f"  SELECT service_name, service_subtype FROM cases WHERE {both}"
            "   AND (service_name, service_subtype) > (t.c, t.s) ORDER BY 1, 2 LIMIT 1) n(c, s)"
            ") SELECT c, s FROM t"
        )
    return [(r[0], r[1]) for r in conn.execute(query).fetchall()]


def options(conn: psycopg.Connection) -> Options:
    """Return the distinct non-null values of each filter column and the span of the data.

    Columns that lead an index are read with a skip scan; the others share one GROUP BY scan
    of the table (see the indexes proposed for the dashboard).
    """
    leads = _index_leads(conn)
    values: dict[str, list[Any]] = {}
    scanned = [c for c in _OPTION_COLUMNS if (c,) not in leads]
    for column in _OPTION_COLUMNS:
        if (column,) in leads:
            values[column] = _loose_distinct(conn, column)
    if scanned:
        flags = ", ".join(f"GROUPING({c})" for c in scanned)
        rows = conn.execute(
            f"SELECT {flags}, {', '.join(scanned)} FROM cases"
            f" GROUP BY GROUPING SETS ({', '.join(f'({c})' for c in scanned)})"
        ).fetchall()
        for i, column in enumerate(scanned):
            values[column] = [r[len(scanned) + i] for r in rows if r[i] == 0]
    if ("service_name",) in leads:
        categories = _loose_distinct(conn, "service_name")
    else:
        categories = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT service_name FROM cases WHERE service_name IS NOT NULL"
            ).fetchall()
        ]
    subtypes: dict[str, set[str]] = {c: set() for c in categories}
    for category, subtype in _subtype_pairs(conn, ("service_name", "service_subtype") in leads):
        subtypes.setdefault(category, set()).add(subtype)
    span = conn.execute(
        f"SELECT (min(requested_datetime) AT TIME ZONE '{LOCAL_TZ}')::date,"
        f" (max(requested_datetime) AT TIME ZONE '{LOCAL_TZ}')::date FROM cases"
    ).fetchone()
    assert span is not None

    def distinct(column: str) -> tuple:
        return tuple(sorted(v for v in set(values[column]) if v is not None))

    return Options(
        subtypes_by_category={c: tuple(sorted(s)) for c, s in subtypes.items()},
        neighborhoods=distinct("neighborhood"),
        districts=distinct("supervisor_district"),
        statuses=distinct("status_description"),
        sources=distinct("source"),
        first_day=span[0],
        last_day=span[1],
    )


@dataclass(frozen=True)
class CaseContext:
    """What a prediction request needs beyond the form: the usual agency and districts."""

    agency_responsible: str | None
    supervisor_district: int | None
    police_district: str | None
    lat: float | None
    long: float | None


def case_context(
    conn: psycopg.Connection, category: str, subtype: str | None, neighborhood: str | None
) -> CaseContext:
    """Return the most frequent agency of a category/subtype and districts of a neighborhood.

    Also the neighborhood's centroid, the default location of the prediction form. Each is
    taken over at most `CONTEXT_SAMPLE` matching cases, enough for a mode and a mean.
    """
    agency = conn.execute(
        "SELECT mode() WITHIN GROUP (ORDER BY agency_responsible) FROM ("
        " SELECT agency_responsible FROM cases WHERE service_name = %(c)s"
        "  AND (%(s)s::text IS NULL OR service_subtype = %(s)s)"
        "  AND agency_responsible IS NOT NULL LIMIT %(n)s) sample",
        {"c": category, "s": subtype, "n": CONTEXT_SAMPLE},
    ).fetchone()
    place = conn.execute(
        "SELECT mode() WITHIN GROUP (ORDER BY supervisor_district),"
        " mode() WITHIN GROUP (ORDER BY police_district),"
        f" avg(lat) FILTER (WHERE {_IN_BOX}), avg(long) FILTER (WHERE {_IN_BOX}) FROM ("
        " SELECT supervisor_district, police_district, lat, long, quality_flags FROM cases"
        "  WHERE neighborhood = %(nb)s AND deleted_at IS NULL LIMIT %(n)s) sample",
        {"nb": neighborhood, "n": CONTEXT_SAMPLE, **SF_BOX},
    ).fetchone()
    assert agency is not None and place is not None
    return CaseContext(agency[0], *place)
