"""Schema `gold`: the Postgres mirror of the lake's gold tables, replaced slice by slice in one
transaction with the silver version it reflects (gold.progress), so a replayed batch changes
nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
import pyarrow as pa
from psycopg import sql

from sf311.warehouse.copy import copy_arrow
from sf311.warehouse.indexes import rebuilt_after

# Where migration 0013 puts the gold tables: `gold` beside the warehouse's public schema, or
# <schema>_gold beside the schema a DSN's search_path scopes to (a test's own schema).
SCHEMA_SQL = (
    "SELECT CASE WHEN current_schema() = 'public' THEN 'gold' ELSE current_schema() || '_gold' END"
)


@dataclass(frozen=True)
class GoldTable:
    """A gold table: its unique key, its values, and the columns a slice of it is named by
    (with ranged, the last of them is a first day: the slice runs from it on)."""

    name: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    slice_cols: tuple[str, ...]
    ranged: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        """Return the table's columns in contract order."""
        return (*self.keys, *self.values)


DAILY_VOLUME = GoldTable(
    "daily_volume",
    ("day", "category", "neighborhood", "supervisor_district", "police_district", "source"),
    ("opened", "closed"),
    ("day", "category"),
)
BACKLOG_DAILY = GoldTable(
    "backlog_daily", ("day", "category", "age_bucket"), ("open_cases",), ("category", "day"), True
)
RESOLUTION_STATS = GoldTable(
    "resolution_stats",
    ("month", "category", "neighborhood"),
    ("closed_cases", "p50_hours", "p90_hours"),
    ("month", "category"),
)
SLA_DAILY = GoldTable(
    "sla_daily",
    ("day", "category", "agency"),
    ("target_hours", "opened", "met", "missed", "pending", "share_met"),
    ("day", "category"),
)
SLA_TARGETS = GoldTable("sla_targets", ("category",), ("target_hours",), ("category",))
TABLES = (DAILY_VOLUME, BACKLOG_DAILY, RESOLUTION_STATS, SLA_DAILY, SLA_TARGETS)


@dataclass(frozen=True)
class Change:
    """New rows of a gold table for its slices (None: the whole table), both Arrow tables."""

    table: GoldTable
    rows: pa.Table
    slices: pa.Table | None


@dataclass(frozen=True)
class Progress:
    """The silver table (Delta table id) and version gold reflects, and its as_of (the
    newest instant in silver)."""

    silver_table: str
    silver_version: int
    as_of: datetime


def gold_schema(conn: psycopg.Connection) -> str:
    """Return the name of the schema holding the gold tables for this connection."""
    return conn.execute(SCHEMA_SQL).fetchone()[0]


def read_progress(conn: psycopg.Connection) -> Progress | None:
    """Return the silver version and as_of the gold tables reflect, or None before the first
    build."""
    row = conn.execute(
        sql.SQL("SELECT silver_table, silver_version, as_of FROM {}.progress").format(
            sql.Identifier(gold_schema(conn))
        )
    ).fetchone()
    return None if row is None else Progress(*row)


def _empty(cur: psycopg.Cursor, table: sql.Identifier) -> bool:
    # Other writers wait until commit, readers do not: the table stays empty until the copy.
    cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table))
    return cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(table)).fetchone()[0]


# Never null: compared with plain equality, which an index can serve.
NOT_NULL = frozenset({"day", "month", "age_bucket"})


def _same(a: str, b: str, cols: tuple[str, ...]) -> sql.Composable:
    # Nullable columns compared as one row's text, where NULL differs from '' and equals NULL:
    # a hashable equality, unlike IS NOT DISTINCT FROM, which forces nested loops.
    plain = [c for c in cols if c in NOT_NULL]
    nullable = [c for c in cols if c not in NOT_NULL]
    cond = [
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(a), sql.Identifier(c), sql.Identifier(b), sql.Identifier(c)
        )
        for c in plain
    ]
    if nullable:
        cond.append(
            sql.SQL("ROW({}, NULL)::text = ROW({}, NULL)::text").format(
                sql.SQL(", ").join(sql.Identifier(a, c) for c in nullable),
                sql.SQL(", ").join(sql.Identifier(b, c) for c in nullable),
            )
        )
    return sql.SQL(" AND ").join(cond)


def _in_slice(t: GoldTable) -> sql.Composable:
    exact = t.slice_cols[:-1] if t.ranged else t.slice_cols
    cond = [_same("g", "s", exact)]
    if t.ranged:
        last = sql.Identifier(t.slice_cols[-1])
        cond.append(sql.SQL("g.{} >= s.{}").format(last, last))
    return sql.SQL(" AND ").join(cond)


def replace_slices(cur: psycopg.Cursor, schema: str, change: Change) -> tuple[int, int]:
    """Make the gold table hold exactly change.rows inside change.slices (all of it when
    None), touching only rows that differ; return (rows inserted or updated, rows deleted)."""
    t = change.table
    target = sql.Identifier(schema, t.name)
    if change.slices is None and _empty(cur, target):
        # A first build or a replay into a new warehouse: nothing to compare, copied straight in.
        with rebuilt_after(cur, target):
            copy_arrow(cur, target, t.columns, [change.rows])
        return change.rows.num_rows, 0
    cur.execute(sql.SQL("CREATE TEMP TABLE gold_new (LIKE {}) ON COMMIT DROP").format(target))
    copy_arrow(cur, sql.Identifier("gold_new"), t.columns, [change.rows])
    gone = sql.SQL("NOT EXISTS (SELECT 1 FROM gold_new n WHERE {})").format(_same("n", "g", t.keys))
    if change.slices is None:
        cur.execute(sql.SQL("DELETE FROM {} g WHERE {}").format(target, gone))
    else:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE gold_slices AS SELECT {} FROM {} WITH NO DATA").format(
                sql.SQL(", ").join(map(sql.Identifier, t.slice_cols)), target
            )
        )
        copy_arrow(cur, sql.Identifier("gold_slices"), t.slice_cols, [change.slices])
        cur.execute(
            sql.SQL("DELETE FROM {} g WHERE EXISTS (SELECT 1 FROM gold_slices s WHERE {}) AND {}")
            .format(target, _in_slice(t), gone)
        )  # fmt: skip
    deleted = cur.rowcount
    values = sql.SQL(", ").join(map(sql.Identifier, t.values))
    cur.execute(
        sql.SQL(
            "INSERT INTO {t} AS g SELECT * FROM gold_new ON CONFLICT ({keys}) DO UPDATE SET "
            "({values}) = ROW({excluded}) WHERE ({gvalues}) IS DISTINCT FROM ({excluded})"
        ).format(
            t=target,
            keys=sql.SQL(", ").join(map(sql.Identifier, t.keys)),
            values=values,
            excluded=sql.SQL(", ").join(
                sql.SQL("EXCLUDED.{}").format(sql.Identifier(v)) for v in t.values
            ),  # fmt: skip
            gvalues=sql.SQL(", ").join(
                sql.SQL("g.{}").format(sql.Identifier(v)) for v in t.values
            ),  # fmt: skip
        )
    )
    changed = cur.rowcount
    cur.execute("DROP TABLE gold_new")
    if change.slices is not None:
        cur.execute("DROP TABLE gold_slices")
    return changed, deleted


def _analyze(cur: psycopg.Cursor, schema: str) -> None:
    # Whole tables rewritten (a first build, a replay): the planner gets their statistics at
    # commit, not at autovacuum's next look a minute later, when the dashboard's plans are made.
    tables = cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema])
    for (name,) in tables.fetchall():
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))


def mirror(conn: psycopg.Connection, changes: list[Change], progress: Progress) -> dict[str, int]:
    """Replace each change's slices in Postgres and record progress, in one transaction (the
    schema analyzed when a whole table was replaced); return the rows changed and deleted over
    all tables."""
    changed = deleted = 0
    with conn.transaction(), conn.cursor() as cur:
        schema = gold_schema(conn)
        for change in changes:
            c, d = replace_slices(cur, schema, change)
            changed, deleted = changed + c, deleted + d
        if any(change.slices is None for change in changes):
            _analyze(cur, schema)
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (singleton, silver_table, silver_version, as_of, refreshed_at) "
                "VALUES (true, %s, %s, %s, now()) ON CONFLICT (singleton) DO UPDATE SET "
                "silver_table = EXCLUDED.silver_table, silver_version = "
                "EXCLUDED.silver_version, as_of = EXCLUDED.as_of, refreshed_at = now()"
            ).format(sql.Identifier(schema, "progress")),
            [progress.silver_table, progress.silver_version, progress.as_of],
        )
    return {"gold_changed": changed, "gold_deleted": deleted}
