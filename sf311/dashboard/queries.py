"""Read-only SQL behind each metric, chart, map layer and table of the dashboard: aggregates
from the gold tables, case rows (map points, case list, CSV) from `cases`, the open backlog
from view open_case_status; each moves a few thousand rows whatever the size of `cases`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, BinaryIO

import pandas as pd
import psycopg

from sf311.contract.city import LOCAL_TZ
from sf311.contract.quality import LOCATION_FLAGS
from sf311.dashboard.filters import (
    BY_MONTH,
    GOLD_COLUMNS,
    OPEN_CASE_COLUMNS,
    Filters,
    gold_where,
    where,
)

# Coordinates outside this box (0/0 for cases without an address) never reach the map.
SF_BOX = {"lat_min": 37.6, "lat_max": 37.9, "long_min": -122.6, "long_max": -122.3}
# A flagged location never reaches the map, whatever the row holds.
_IN_BOX = (
    "lat BETWEEN %(lat_min)s AND %(lat_max)s AND long BETWEEN %(long_min)s AND %(long_max)s"
    f" AND NOT quality_flags && ARRAY[{', '.join(repr(f) for f in LOCATION_FLAGS)}]"
)
NONE_LABEL = "(none)"
CONTEXT_SAMPLE = 5000
CENTROID_SAMPLE = 50_000
# The centroids' sample takes the same pages of `cases` every time: once read they stay cached,
# and no neighborhood's circle moves or drops out of the map between two loads.
CENTROID_SEED = 311
HEAT_POINTS = 50_000
_NEWEST_FIRST = "ORDER BY requested_datetime DESC, service_request_id DESC"
BREAKDOWNS: dict[str, str] = {
    "category": "category",
    "neighborhood": "neighborhood",
    "source": "source",
    "police district": "police_district",
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


_VOLUME = "category, neighborhood, supervisor_district, police_district, source, opened, closed"


def _volume(filters: Filters, prefix: str = "", months: bool = True) -> tuple[str, dict]:
    """Return a subquery of gold.daily_volume's rows over `filters` and its parameters.

    With `months`, the range's whole calendar months come from gold.monthly_volume instead, a
    row per month dated its first day, and only the days around them from daily_volume: the
    same sums over any grouping but by day or week, from a fifth of the rows.
    """
    before, whole, after = filters.month_parts() if months else (filters, None, None)
    branches, params = [], {}
    for part, table, tag in (
        (before, "gold.daily_volume", "b"),
        (whole, "gold.monthly_volume", "m"),
        (after, "gold.daily_volume", "a"),
    ):
        if part is not None:
            cond, part_params = gold_where(part, table, prefix=f"{prefix}{tag}_")
            day = "month AS day" if table in BY_MONTH else "day"
            branches.append(f"SELECT {day}, {_VOLUME} FROM {table} WHERE {cond}")
            params.update(part_params)
    return f"({' UNION ALL '.join(branches)})", params


_TIMESTAMPTZ = 1184  # pg_type oid


def _frame(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> pd.DataFrame:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description or []]
    rows = cur.fetchall()
    if not rows:
        return pd.DataFrame(rows, columns=names)
    columns = {}
    for d, values in zip(cur.description or [], zip(*rows, strict=True), strict=True):
        first = next((v for v in values if v is not None), None)
        # Instants converted a column at once: pandas infers them value by value, slower than
        # the query that read them.
        if d.type_code == _TIMESTAMPTZ and first is not None:
            columns[d.name] = pd.to_datetime(list(values), utc=True).tz_convert(first.tzinfo)
        else:
            columns[d.name] = pd.Series(values, dtype=object).infer_objects()
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class PeriodStats:
    """Figures of one period: cases opened, cases closed, resolution percentiles (hours)."""

    cases: int
    closed: int
    p50_hours: float | None
    p90_hours: float | None


@dataclass(frozen=True)
class Metrics:
    """The headline figures of the filtered range, of the period before it, and the backlog.

    `open_at_end`: cases open at the end of `open_day`, the range's last day that gold's
    backlog holds (None when it holds none).
    """

    current: PeriodStats
    previous: PeriodStats
    open_at_end: int | None
    open_day: date | None


def _resolution(conn: psycopg.Connection, filters: Filters) -> tuple[float | None, float | None]:
    """Return p50 and p90 hours over the months `filters` touches, from gold.resolution_stats.

    One (month, category, neighborhood) row gives its exact percentiles; several are merged
    as the mean of their percentiles weighted by closed cases, an approximation.
    """
    cond, params = gold_where(filters, "gold.resolution_stats")
    row = conn.execute(
        "SELECT sum(p50_hours * closed_cases) / nullif(sum(closed_cases), 0),"
        " sum(p90_hours * closed_cases) / nullif(sum(closed_cases), 0)"
        f" FROM gold.resolution_stats WHERE {cond} AND p50_hours IS NOT NULL",
        params,
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def metrics(conn: psycopg.Connection, filters: Filters) -> Metrics:
    """Return the headline figures of `filters` and of the period of the same length before.

    Opened and closed (any closure kind) from gold.daily_volume; resolution percentiles from
    gold.resolution_stats (resolved cases only); the backlog from gold.backlog_daily.
    """
    current, params = _volume(filters)
    previous, p_params = _volume(filters.previous(), prefix="p_")
    sums = "SELECT coalesce(sum(opened), 0) AS opened, coalesce(sum(closed), 0) AS closed FROM"
    row = conn.execute(
        f"SELECT c.opened, c.closed, p.opened, p.closed FROM ({sums} {current} v) c,"
        f" ({sums} {previous} v) p",
        {**params, **p_params},
    ).fetchone()
    cond, params = where(filters, None, columns=GOLD_COLUMNS["gold.backlog_daily"])
    backlog = conn.execute(
        "SELECT max(day), sum(open_cases) FROM gold.backlog_daily WHERE day = ("
        "  SELECT max(day) FROM gold.backlog_daily WHERE day <= %(end)s AND day >= %(start)s)"
        f" AND {cond}",
        {**params, "start": filters.start, "end": filters.end},
    ).fetchone()
    assert row is not None and backlog is not None  # an aggregate always returns one row
    return Metrics(
        current=PeriodStats(int(row[0]), int(row[1]), *_resolution(conn, filters)),
        previous=PeriodStats(int(row[2]), int(row[3]), *_resolution(conn, filters.previous())),
        open_at_end=None if backlog[1] is None else int(backlog[1]),
        open_day=backlog[0],
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
    """Return cases opened by category, neighborhood, source and police district (columns
    label, cases) and, under "districts", per police district and category (district,
    category, cases), from gold.daily_volume.

    One scan with GROUPING SETS; each breakdown is sorted by cases, largest first, labels
    without an opened case left out; a missing value is labelled "(none)".
    """
    volume, params = _volume(filters)
    columns = list(BREAKDOWNS.values())
    sets = ", ".join(f"({c})" for c in columns)
    rows = conn.execute(
        f"SELECT GROUPING({', '.join(columns)}), {', '.join(columns)}, sum(opened)"
        f" FROM {volume} v GROUP BY GROUPING SETS ({sets}, (police_district, category))",
        params,
    ).fetchall()

    def mask(*kept: str) -> int:
        # GROUPING(columns) of a row grouped by `kept`: a bit per column left out, first highest.
        return sum(1 << i for i, c in enumerate(reversed(columns)) if c not in kept)

    out = {}
    for i, (name, column) in enumerate(BREAKDOWNS.items(), start=1):
        alone = mask(column)
        picked = [
            (NONE_LABEL if r[i] is None else str(r[i]), int(r[-1]))
            for r in rows
            if r[0] == alone and r[-1]
        ]
        frame = pd.DataFrame(picked, columns=["label", "cases"])
        out[name] = frame.sort_values(["cases", "label"], ascending=[False, True]).reset_index(
            drop=True
        )
    district, category = columns.index("police_district") + 1, columns.index("category") + 1
    pair = mask("police_district", "category")
    pairs = [
        (NONE_LABEL if r[district] is None else r[district], r[category], int(r[-1]))
        for r in rows
        if r[0] == pair and r[-1]
    ]
    out["districts"] = (
        pd.DataFrame(pairs, columns=["district", "category", "cases"])
        .sort_values(["district", "category"])
        .reset_index(drop=True)
    )
    return out


def daily_volume(conn: psycopg.Connection, filters: Filters, top: int = 5) -> pd.DataFrame:
    """Return cases opened per San Francisco day, week or month (filters.grain; `day` is its
    first day) of the `top` categories (day, category, cases), from gold.daily_volume (whole
    months from gold.monthly_volume by month)."""
    volume, params = _volume(filters, months=filters.grain == "month")
    params["grain"] = filters.grain
    return _frame(
        conn,
        # One pass over the rows: the top categories are picked from the periods' sums.
        "WITH p AS (SELECT date_trunc(%(grain)s, day)::date AS day, category,"
        f"  sum(opened) AS cases FROM {volume} v GROUP BY 1, 2)"
        " SELECT day, category, cases::int FROM p WHERE cases > 0 AND category IN ("
        "  SELECT category FROM p WHERE category IS NOT NULL"
        "  GROUP BY 1 HAVING sum(cases) > 0 ORDER BY sum(cases) DESC, 1 LIMIT %(top)s)"
        " ORDER BY 1, 2",
        {**params, "top": top},
    )


def resolution_monthly(conn: psycopg.Connection, filters: Filters) -> pd.DataFrame:
    """Return per month the range touches: resolved cases closed, p50 and p90 hours (month,
    closed_cases, p50_hours, p90_hours), from gold.resolution_stats.

    Several category x neighborhood rows of a month are merged as in _resolution().
    """
    cond, params = gold_where(filters, "gold.resolution_stats")
    return _frame(
        conn,
        "SELECT month, sum(closed_cases)::int AS closed_cases,"
        " sum(p50_hours * closed_cases) FILTER (WHERE p50_hours IS NOT NULL)"
        "   / nullif(sum(closed_cases) FILTER (WHERE p50_hours IS NOT NULL), 0) AS p50_hours,"
        " sum(p90_hours * closed_cases) FILTER (WHERE p90_hours IS NOT NULL)"
        "   / nullif(sum(closed_cases) FILTER (WHERE p90_hours IS NOT NULL), 0) AS p90_hours"
        f" FROM gold.resolution_stats WHERE {cond} GROUP BY 1 ORDER BY 1",
        params,
    )


def backlog_history(conn: psycopg.Connection, filters: Filters) -> pd.DataFrame:
    """Return cases open at the end of each San Francisco day of the range by age bucket (day,
    age_bucket, open_cases), from gold.backlog_daily; over a long range only each week's or
    month's (filters.grain) last day, or the last day gold holds."""
    cond, params = gold_where(filters, "gold.backlog_daily")
    params.update(grain=filters.grain, step=f"1 {filters.grain}")
    return _frame(
        conn,
        "SELECT day, age_bucket, sum(open_cases)::int AS open_cases FROM gold.backlog_daily"
        f" WHERE {cond} AND day = ANY (ARRAY("
        # The period ends, computed: an index lookup each, not a pass over every day's rows.
        "  SELECT least((p + %(step)s::interval - interval '1 day')::date, last)"
        "  FROM (SELECT least(%(d1)s, (SELECT max(day) FROM gold.backlog_daily)) AS last) l,"
        "   generate_series(date_trunc(%(grain)s, %(d0)s::timestamp), last::timestamp,"
        "    %(step)s::interval) p"
        " )) GROUP BY 1, 2 ORDER BY 1, 2",
        params,
    )


def overdue_history(conn: psycopg.Connection, filters: Filters) -> pd.DataFrame:
    """Return the open scored cases overdue and at risk (day, overdue, at_risk) as recorded on
    each San Francisco day of the range (table overdue_history); over a long range only each
    week's or month's (filters.grain) last recorded day."""
    cond, params = gold_where(filters, "overdue_history")
    params["grain"] = filters.grain
    return _frame(
        conn,
        "SELECT day, sum(overdue)::int AS overdue, sum(at_risk)::int AS at_risk"
        f" FROM overdue_history WHERE {cond} AND day IN ("
        "  SELECT max(day) FROM overdue_history WHERE day >= %(d0)s AND day <= %(d1)s"
        "  GROUP BY date_trunc(%(grain)s, day)"
        " ) GROUP BY day ORDER BY day",
        params,
    )


def sla(conn: psycopg.Connection, filters: Filters) -> pd.DataFrame:
    """Return per San Francisco day, week or month opened (filters.grain; `day` is its first
    day): opened, met, missed, pending and the share met (met / (met + missed)), from
    gold.sla_daily."""
    cond, params = gold_where(filters, "gold.sla_daily")
    params["grain"] = filters.grain
    return _frame(
        conn,
        "SELECT date_trunc(%(grain)s, day)::date AS day, sum(opened)::int AS opened,"
        " sum(met)::int AS met,"
        " sum(missed)::int AS missed, sum(pending)::int AS pending,"
        " sum(met)::float8 / nullif(sum(met) + sum(missed), 0) AS share_met"
        f" FROM gold.sla_daily WHERE {cond} GROUP BY 1 ORDER BY 1",
        params,
    )


def heat_cells(
    conn: psycopg.Connection,
    filters: Filters,
    cell: float = 0.002,
    limit: int = 5000,
    points: int = HEAT_POINTS,
) -> pd.DataFrame:
    """Return counts of the newest `points` located filtered cases on a lat/long grid of `cell`
    degrees (columns lat, long, cases), the densest `limit` cells only.

    The newest points, read backwards along the requested_datetime index, so that a wide date
    range costs no more than a narrow one and the heatmap's size does not grow with the table.
    """
    cond, params = _where(filters)
    return _frame(
        conn,
        "SELECT round(lat / %(cell)s) * %(cell)s AS lat, round(long / %(cell)s) * %(cell)s AS long,"
        f" count(*) AS cases FROM (SELECT lat, long FROM cases WHERE {cond} AND {_IN_BOX}"
        f"  {_NEWEST_FIRST} LIMIT %(points)s) newest"
        " GROUP BY 1, 2 ORDER BY 3 DESC LIMIT %(limit)s",
        {**params, **SF_BOX, "cell": cell, "limit": limit, "points": points},
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
        f" {_NEWEST_FIRST} LIMIT %(limit)s",
        {**params, **SF_BOX, "limit": limit},
    )


def neighborhood_centroids(conn: psycopg.Connection) -> pd.DataFrame:
    """Return each neighborhood's mean location (neighborhood, lat, long) over a sample of
    about `CENTROID_SAMPLE` located cases (the same sample each time while the table holds the
    same pages), which stands in for a boundary file."""
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'cases'::regclass").fetchone()
    rows = float(row[0]) if row and row[0] and row[0] > 0 else 0.0
    percent = 100.0 if rows <= CENTROID_SAMPLE else 100.0 * CENTROID_SAMPLE / rows
    return _frame(
        conn,
        "SELECT neighborhood, avg(lat) AS lat, avg(long) AS long"
        " FROM cases TABLESAMPLE SYSTEM (%(percent)s) REPEATABLE (%(seed)s)"
        f" WHERE neighborhood IS NOT NULL AND deleted_at IS NULL AND {_IN_BOX} GROUP BY 1",
        {**SF_BOX, "percent": percent, "seed": CENTROID_SEED},
    )


def neighborhood_stats(
    conn: psycopg.Connection, filters: Filters, centroids: pd.DataFrame
) -> pd.DataFrame:
    """Return per neighborhood: cases opened, median resolution hours, centroid (lat, long).

    Cases from gold.daily_volume, the median from gold.resolution_stats (merged as in
    _resolution()); neighborhoods without a centroid are left out.
    """
    relation, params = _volume(filters)
    r_cond, r_params = gold_where(filters, "gold.resolution_stats", prefix="r_")
    volume = _frame(
        conn,
        "WITH r AS (SELECT neighborhood,"
        "  sum(p50_hours * closed_cases) / nullif(sum(closed_cases), 0) AS p50_hours"
        f"  FROM gold.resolution_stats WHERE {r_cond} AND p50_hours IS NOT NULL GROUP BY 1)"
        " SELECT v.neighborhood, v.cases, r.p50_hours FROM ("
        f"  SELECT neighborhood, sum(opened)::int AS cases FROM {relation} n"
        "  WHERE neighborhood IS NOT NULL GROUP BY 1 HAVING sum(opened) > 0) v"
        " LEFT JOIN r USING (neighborhood)",
        {**params, **r_params},
    )
    merged = volume.merge(centroids, on="neighborhood", how="inner")
    return merged.sort_values(["cases", "neighborhood"], ascending=[False, True]).reset_index(
        drop=True
    )


CASE_COLUMNS = (
    "service_request_id",
    "requested_datetime",
    "closed_date",
    "status_description",
    "service_name",
    "service_subtype",
    "agency_responsible",
    "neighborhood",
    "supervisor_district",
    "police_district",
    "source",
    "closure_kind",
    "resolution_hours",
    "lat",
    "long",
)


def latest_cases(conn: psycopg.Connection, filters: Filters, limit: int = 50) -> pd.DataFrame:
    """Return the newest `limit` filtered cases (CASE_COLUMNS), newest first."""
    cond, params = _where(filters)
    return _frame(
        conn,
        f"SELECT {', '.join(CASE_COLUMNS)} FROM cases WHERE {cond} {_NEWEST_FIRST} LIMIT %(limit)s",
        {**params, "limit": limit},
    )


def count_capped(conn: psycopg.Connection, filters: Filters, cap: int) -> int:
    """Return the number of filtered cases, counting no further than `cap` + 1."""
    cond, params = _where(filters)
    row = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM cases WHERE {cond} LIMIT %(n)s) capped",
        {**params, "n": cap + 1},
    ).fetchone()
    assert row is not None
    return int(row[0])


def write_csv(conn: psycopg.Connection, filters: Filters, out: BinaryIO, cap: int) -> None:
    """Write the newest `cap` filtered cases to `out` as CSV with a header, times in UTC.

    Streamed from Postgres with COPY, chunk by chunk, so no more than a chunk is held here.
    """
    cond, params = _where(filters)
    conn.execute("SET TIME ZONE 'UTC'")
    with conn.cursor() as cur:
        with cur.copy(
            f"COPY (SELECT {', '.join(CASE_COLUMNS)} FROM cases WHERE {cond} {_NEWEST_FIRST}"
            " LIMIT %(cap)s) TO STDOUT WITH (FORMAT csv, HEADER)",
            {**params, "cap": cap},
        ) as copy:
            for chunk in copy:
                out.write(chunk)


OPEN_STATUSES = ("overdue", "at_risk", "on_time")


def open_status_counts(conn: psycopg.Connection, filters: Filters) -> dict[str, int]:
    """Return the number of open scored cases per status (every status of OPEN_STATUSES).

    From view open_case_status; the filters apply but the date range does not: an open case
    is in the backlog however long ago it opened.
    """
    cond, params = where(filters, None, columns=OPEN_CASE_COLUMNS)
    # A count per status, not GROUP BY status: one plain aggregate, which Postgres splits
    # between parallel workers over the index on upper_at (a third of the time at 450k).
    counts = ", ".join(f"count(*) FILTER (WHERE status = '{s}')" for s in OPEN_STATUSES)
    row = conn.execute(f"SELECT {counts} FROM open_case_status WHERE {cond}", params).fetchone()
    assert row is not None  # an aggregate always returns one row
    return {s: int(n) for s, n in zip(OPEN_STATUSES, row, strict=True)}


def open_cases(conn: psycopg.Connection, filters: Filters, limit: int = 2000) -> pd.DataFrame:
    """Return the `limit` latest open scored cases by hours late (latest first), from view
    open_case_status; filters as in open_status_counts()."""
    cond, params = where(filters, None, columns=OPEN_CASE_COLUMNS)
    return _frame(
        conn,
        "SELECT service_request_id, status, category, service_subtype, neighborhood,"
        " police_district, requested_datetime, age_hours, predicted_close_at, upper_at,"
        " hours_late, lat, long"
        f" FROM open_case_status WHERE {cond}"
        # Latest by hours late is earliest upper end: an index walk that stops at `limit`.
        " ORDER BY upper_at, service_request_id LIMIT %(limit)s",
        {**params, "limit": limit},
    )


@dataclass(frozen=True)
class Options:
    """The values each filter offers, and the first and last day that hold cases."""

    subtypes_by_category: dict[str, tuple[str, ...]]
    neighborhoods: tuple[str, ...]
    districts: tuple[int, ...]
    police_districts: tuple[str, ...]
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
    # cases has no index on police_district; gold.monthly_volume is far smaller than cases.
    police = conn.execute(
        "SELECT DISTINCT police_district FROM gold.monthly_volume WHERE police_district IS NOT NULL"
    ).fetchall()
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
        police_districts=tuple(sorted(r[0] for r in police)),
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
