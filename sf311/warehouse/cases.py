"""Table `cases`: its columns, their COPY, and the one guarded upsert into it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from sf311.contract.schema import CASE_FIELDS
from sf311.warehouse.copy import copy_arrow
from sf311.warehouse.offsets import reset_offsets

# The columns a batch hands over: migrations 0001 and 0009 minus loaded_at and
# deleted_at (set by reconciliation and by the tombstones it sends: mark_deleted).
DERIVED_COLUMNS = [
    "resolution_hours",
    "kafka_timestamp",
    "batch_id",
    "quality_flags",
    "closure_kind",
]
CASE_COLUMNS = [*CASE_FIELDS, *DERIVED_COLUMNS]

# The stream's guard: a version replaces the stored one if it is newer or, at the same
# updated_datetime, was sent later and differs (the source changed it silently).
NEWER = sql.SQL(
    "cases.updated_datetime < EXCLUDED.updated_datetime OR (cases.updated_datetime = "
    "EXCLUDED.updated_datetime AND cases.kafka_timestamp < EXCLUDED.kafka_timestamp "
    "AND ({}) IS DISTINCT FROM ({}))"
).format(
    sql.SQL(", ").join(sql.SQL("cases.{}").format(sql.Identifier(c)) for c in CASE_FIELDS),
    sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in CASE_FIELDS),
)
# Replay's guard: only rows that differ are rewritten, so a second replay changes nothing.
CHANGED = sql.SQL(" OR ").join(
    sql.SQL("cases.{0} IS DISTINCT FROM EXCLUDED.{0}").format(sql.Identifier(c))
    for c in CASE_COLUMNS
)


def copy_cases(cur: psycopg.Cursor, table: str, parts: Iterable[pa.Table]) -> None:
    """COPY the CASE_COLUMNS of parts (Arrow tables) into a table shaped like `cases`, inside the
    caller's transaction."""
    copy_arrow(cur, sql.Identifier(table), CASE_COLUMNS, parts)


def upsert_sql(source: str, guard: sql.Composable) -> sql.Composed:
    """Return the statement that upserts every row of `source` into `cases`, updating a stored
    row only where guard (NEWER or CHANGED) holds."""
    cols = sql.SQL(", ").join(map(sql.Identifier, CASE_COLUMNS))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
        for c in CASE_COLUMNS
        if c != "service_request_id"
    )
    return sql.SQL(
        "INSERT INTO cases ({cols}) SELECT {cols} FROM {source} "
        "ON CONFLICT (service_request_id) DO UPDATE SET {updates}, loaded_at = now() "
        "WHERE {guard}"
    ).format(cols=cols, source=sql.Identifier(source), updates=updates, guard=guard)


# Marks the cases that tombstones delete, as silver.mark_deleted does: not marked yet, and their
# stored version sent before the tombstone (a case restored since keeps its newer version).
_MARK_DELETED = (
    "UPDATE cases SET deleted_at = d.deleted_at, loaded_at = now()"
    " FROM unnest(%s::bigint[], %s::timestamptz[]) AS d(service_request_id, deleted_at)"
    " WHERE cases.service_request_id = d.service_request_id AND cases.deleted_at IS NULL"
    " AND cases.kafka_timestamp < d.deleted_at"
)


def mark_deleted(conn: psycopg.Connection, deleted: Sequence[tuple[int, datetime]]) -> int:
    """Set deleted_at of the (id, instant) pairs' cases by _MARK_DELETED; return how many."""
    if not deleted:
        return 0
    ids, instants = zip(*deleted, strict=True)
    return conn.execute(_MARK_DELETED, [list(ids), list(instants)]).rowcount


def lock_writers(conn: psycopg.Connection) -> None:
    """Wait until no other transaction writes `cases` through this module, and hold that until
    the caller's transaction ends; readers, autovacuum and other warehouses are not held."""
    conn.execute("SELECT pg_advisory_xact_lock('cases'::regclass::oid::bigint)")


def upsert_newer(conn: psycopg.Connection, rows: pa.Table) -> int:
    """Upsert rows (CASE_COLUMNS, one per id) into `cases` where newer, inside the caller's
    transaction; return the rows inserted or changed.

    Rows above the highest id stored cannot conflict: they are copied straight in, which spares
    them the staging copy and the guarded insert (15.5 s against 21 s for 2M new cases)."""
    # No other writer can then store a higher id before this transaction ends.
    lock_writers(conn)
    top = conn.execute("SELECT max(service_request_id) FROM cases").fetchone()[0]
    ids = rows["service_request_id"]
    new = rows if top is None else rows.filter(pc.greater(ids, top))
    with conn.cursor() as cur:
        if new.num_rows:
            copy_cases(cur, "cases", [new])
        if new.num_rows == rows.num_rows:
            return new.num_rows
        conn.execute("CREATE TEMP TABLE cases_stage (LIKE cases INCLUDING DEFAULTS) ON COMMIT DROP")
        copy_cases(cur, "cases_stage", [rows.filter(pc.less_equal(ids, top))])
        cur.execute(upsert_sql("cases_stage", NEWER))
        return new.num_rows + cur.rowcount


def vacuum_cases(conn: psycopg.Connection) -> None:
    """VACUUM (ANALYZE) `cases` on conn, which must not have begun a transaction."""
    # A backfill leaves pages not all-visible until autovacuum comes (28 % of them at 8M cases),
    # and the open-case views then read the heap, not their covering index (430 -> 64 ms).
    conn.autocommit = True
    conn.execute("VACUUM (ANALYZE) cases")


def replace_cases(
    conn: psycopg.Connection,
    parts: Iterable[pa.Table],
    offsets: Iterable[tuple[str, int, int]],
    marks: Sequence[tuple[int, datetime]] = (),
) -> tuple[int, int, int]:
    """Make `cases` hold exactly the given rows, those of the (id, instant) marks deleted
    (mark_deleted), atomically and without blocking readers, and warehouse_offsets exactly the
    given (topic, partition, next_offset), where the messages the rows came from end; return
    (rows inserted or changed, rows deleted, rows now in the table)."""
    with conn.transaction():
        lock_writers(conn)
        conn.execute(
            "CREATE TEMP TABLE cases_replay (LIKE cases INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        with conn.cursor() as cur:
            copy_cases(cur, "cases_replay", parts)
            cur.execute("ALTER TABLE cases_replay ADD PRIMARY KEY (service_request_id)")
            cur.execute(
                "DELETE FROM cases WHERE NOT EXISTS (SELECT 1 FROM cases_replay r"
                " WHERE r.service_request_id = cases.service_request_id)"
            )
            deleted = cur.rowcount
            cur.execute(upsert_sql("cases_replay", CHANGED))
            upserted = cur.rowcount + mark_deleted(conn, marks)
            reset_offsets(cur, offsets)
        total = conn.execute("SELECT count(*) FROM cases").fetchone()[0]
    return upserted, deleted, total
