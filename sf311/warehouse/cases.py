"""Table `cases` and its ledger `stream_batches`: idempotent upserts of streaming batches; and
`lake_batches`, the metrics of the batches the job writes to Delta."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Column order of the CSV text a batch hands over; it matches migration 0001 minus loaded_at.
CASE_COLUMNS = [
    "service_request_id",
    "requested_datetime",
    "updated_datetime",
    "closed_date",
    "status_description",
    "status_notes",
    "agency_responsible",
    "service_name",
    "service_subtype",
    "service_details",
    "address",
    "street",
    "supervisor_district",
    "neighborhood",
    "analysis_neighborhood",
    "police_district",
    "lat",
    "long",
    "location_issue",
    "source",
    "media_url",
    "bos_2012",
    "data_as_of",
    "data_loaded_at",
    "extra",
    "origin",
    "resolution_hours",
    "kafka_timestamp",
    "batch_id",
]


# Every value quoted and NULL as an empty unquoted field: Postgres CSV then tells NULL from ''.
CSV_WRITE = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
CSV_CHUNK_ROWS = 50_000


def csv_chunks(table: pa.Table) -> list[bytes]:
    """Return the CASE_COLUMNS of an Arrow table as Postgres CSV text in chunks for COPY;
    instants are written as UTC wall-clock times, which copy_cases reads in UTC."""
    cols = []
    for name in CASE_COLUMNS:
        col = table[name]
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            # Postgres text cannot hold NUL characters.
            col = pc.replace_substring(col, "\u0000", "")
        elif pa.types.is_timestamp(col.type) and col.type.tz is not None:
            # Arrow formats zoned timestamps through the time-zone database, 10-20x slower
            # than the same UTC instants without a zone.
            col = col.cast(pa.timestamp(col.type.unit))
        cols.append(col)
    out = []
    for batch in pa.table(cols, names=CASE_COLUMNS).to_batches(max_chunksize=CSV_CHUNK_ROWS):
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(batch, sink, CSV_WRITE)
        out.append(sink.getvalue().to_pybytes())
    return out


def copy_cases(cur: psycopg.Cursor, table: str, chunks: Iterable[bytes]) -> None:
    """COPY csv_chunks text into a table shaped like `cases`, inside the caller's transaction."""
    # csv_chunks writes instants without a zone: read them as UTC whatever the session's zone.
    cur.execute("SET LOCAL TIME ZONE 'UTC'")
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, CASE_COLUMNS))
    )
    with cur.copy(copy_sql) as copy:
        for chunk in chunks:
            copy.write(chunk)


@dataclass(frozen=True)
class OffsetRange:
    """The first and last offset of a batch's messages in one Kafka partition."""

    partition: int
    first: int
    last: int


@dataclass(frozen=True)
class BatchLoad:
    """One micro-batch for the warehouse: curated rows as CSV text plus the batch's figures."""

    query_id: str
    batch_id: int
    csv_chunks: Sequence[bytes]
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    rows_curated: int
    kafka_ts_min: datetime | None
    kafka_ts_max: datetime | None
    # Kafka timestamps at the 5th and 50th percentile: lag p95 and p50 once committed.
    kafka_ts_p05: datetime | None
    kafka_ts_p50: datetime | None
    started_at: datetime
    # The batch's messages per partition of `topic`, loaded or rejected; they move
    # warehouse_offsets on (see advance_offsets).
    topic: str = ""
    offsets: Sequence[OffsetRange] = ()
    # True for the warehouse query's batches: its checkpoint has seen every earlier message.
    own_checkpoint: bool = True


def loaded_offsets(conn: psycopg.Connection, topic: str) -> dict[int, int]:
    """Return {partition: next_offset}: every message of the topic below it is loaded."""
    return dict(
        conn.execute(
            "SELECT kafka_partition, next_offset FROM warehouse_offsets WHERE topic = %s", [topic]
        ).fetchall()
    )


def advance_offsets(
    conn: psycopg.Connection, topic: str, ranges: Sequence[OffsetRange], own_checkpoint: bool
) -> None:
    """Move each partition's next_offset past a loaded batch's last offset, inside the
    caller's transaction; it never moves back.

    The warehouse query's own batches follow its checkpoint, which has seen every earlier
    message, so they always move it on. Any other writer (a bounded run's lake query) moves it
    only where its batch starts at or below next_offset, or at offset 0 of a partition not yet
    recorded, so next_offset never passes a message that nobody loaded."""
    if not ranges:
        return
    conn.execute(
        "INSERT INTO warehouse_offsets AS w (topic, kafka_partition, next_offset)"
        " SELECT %(topic)s, r.p, r.last + 1"
        " FROM unnest(%(p)s::integer[], %(first)s::bigint[], %(last)s::bigint[])"
        " AS r(p, first, last)"
        " WHERE %(own)s OR r.first = 0 OR EXISTS (SELECT 1 FROM warehouse_offsets o"
        "  WHERE o.topic = %(topic)s AND o.kafka_partition = r.p AND o.next_offset >= r.first)"
        " ON CONFLICT (topic, kafka_partition) DO UPDATE"
        " SET next_offset = EXCLUDED.next_offset, updated_at = now()"
        " WHERE w.next_offset < EXCLUDED.next_offset",
        {
            "topic": topic,
            "p": [r.partition for r in ranges],
            "first": [r.first for r in ranges],
            "last": [r.last for r in ranges],
            "own": own_checkpoint,
        },
    )


def _upsert_sql() -> sql.Composed:
    cols = sql.SQL(", ").join(map(sql.Identifier, CASE_COLUMNS))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
        for c in CASE_COLUMNS
        if c != "service_request_id"
    )
    return sql.SQL(
        "INSERT INTO cases ({cols}) SELECT {cols} FROM cases_stage "
        "ON CONFLICT (service_request_id) DO UPDATE SET {updates}, loaded_at = now() "
        "WHERE cases.updated_datetime < EXCLUDED.updated_datetime"
    ).format(cols=cols, updates=updates)


def load_batch(conn: psycopg.Connection, batch: BatchLoad) -> int | None:
    """Upsert one batch and record it in the ledger, atomically; return rows changed, or None
    when the ledger shows the batch was already loaded."""
    with conn.transaction():
        seen = conn.execute(
            "SELECT 1 FROM stream_batches WHERE query_id = %s AND batch_id = %s",
            [batch.query_id, batch.batch_id],
        ).fetchone()
        if seen:
            return None
        conn.execute("CREATE TEMP TABLE cases_stage (LIKE cases INCLUDING DEFAULTS) ON COMMIT DROP")
        with conn.cursor() as cur:
            copy_cases(cur, "cases_stage", batch.csv_chunks)
            cur.execute(_upsert_sql())
            changed = cur.rowcount
        advance_offsets(conn, batch.topic, batch.offsets, batch.own_checkpoint)
        conn.execute(
            "INSERT INTO stream_batches (query_id, batch_id, rows_in, rows_valid,"
            " rows_quarantined, rows_curated, rows_upserted, kafka_ts_min, kafka_ts_max,"
            " lag_p50_seconds, lag_p95_seconds, started_at,"
            " committed_at)"
            " SELECT %(query_id)s, %(batch_id)s, %(rows_in)s, %(rows_valid)s,"
            " %(rows_quarantined)s, %(rows_curated)s, %(changed)s, %(ts_min)s, %(ts_max)s,"
            " extract(epoch FROM now_ - %(ts_p50)s::timestamptz),"
            " extract(epoch FROM now_ - %(ts_p05)s::timestamptz),"
            " %(started_at)s, now_"
            " FROM (SELECT clock_timestamp() AS now_) AS t",
            {
                "query_id": batch.query_id,
                "batch_id": batch.batch_id,
                "rows_in": batch.rows_in,
                "rows_valid": batch.rows_valid,
                "rows_quarantined": batch.rows_quarantined,
                "rows_curated": batch.rows_curated,
                "changed": changed,
                "ts_min": batch.kafka_ts_min,
                "ts_max": batch.kafka_ts_max,
                "ts_p50": batch.kafka_ts_p50,
                "ts_p05": batch.kafka_ts_p05,
                "started_at": batch.started_at,
            },
        )
    return changed


def replace_cases(
    conn: psycopg.Connection, chunks: Iterable[bytes], offsets: Iterable[tuple[str, int, int]]
) -> tuple[int, int, int]:
    """Make `cases` hold exactly the given rows, atomically and without blocking readers, and
    warehouse_offsets exactly the given (topic, partition, next_offset), where the messages the
    rows came from end; return (rows inserted or changed, rows deleted, rows now in the table)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, CASE_COLUMNS))
    # Only rows that differ are rewritten, so a second replay changes nothing.
    changed = sql.SQL(" OR ").join(
        sql.SQL("cases.{0} IS DISTINCT FROM EXCLUDED.{0}").format(sql.Identifier(c))
        for c in CASE_COLUMNS
    )
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
        for c in CASE_COLUMNS
        if c != "service_request_id"
    )
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE cases_replay (LIKE cases INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        with conn.cursor() as cur:
            copy_cases(cur, "cases_replay", chunks)
            cur.execute("ALTER TABLE cases_replay ADD PRIMARY KEY (service_request_id)")
            cur.execute(
                "DELETE FROM cases WHERE NOT EXISTS (SELECT 1 FROM cases_replay r"
                " WHERE r.service_request_id = cases.service_request_id)"
            )
            deleted = cur.rowcount
            cur.execute(
                sql.SQL(
                    "INSERT INTO cases ({cols}) SELECT {cols} FROM cases_replay "
                    "ON CONFLICT (service_request_id) DO UPDATE SET {updates}, loaded_at = now() "
                    "WHERE {changed}"
                ).format(cols=cols, updates=updates, changed=changed)
            )
            upserted = cur.rowcount
            cur.execute("DELETE FROM warehouse_offsets")
            cur.executemany(
                "INSERT INTO warehouse_offsets (topic, kafka_partition, next_offset)"
                " VALUES (%s, %s, %s)",
                list(offsets),
            )
        total = conn.execute("SELECT count(*) FROM cases").fetchone()[0]
    return upserted, deleted, total


def _best_effort(dsn: str, what: str, statement: str, params: dict) -> None:
    """Run one statement for metrics; an unreachable Postgres costs the metrics (logged), never
    the batch, whose data is already committed."""
    try:
        conn = psycopg.connect(dsn, connect_timeout=5)
    except psycopg.OperationalError as err:
        log.warning("%s not recorded: %s", what, err)
        return
    with conn:
        conn.execute(statement, params)


def record_phases(
    dsn: str, query_id: str, batch_id: int, seconds: dict[str, float], finished_at: datetime
) -> None:
    """Store a loaded batch's seconds per phase and its finish time in the ledger."""
    _best_effort(
        dsn,
        f"batch {batch_id} timings",
        "UPDATE stream_batches SET phase_seconds = %(phases)s, finished_at = %(finished)s"
        " WHERE query_id = %(query_id)s AND batch_id = %(batch_id)s",
        {
            "phases": Jsonb(seconds),
            "finished": finished_at,
            "query_id": query_id,
            "batch_id": batch_id,
        },
    )


@dataclass(frozen=True)
class LakeBatch:
    """One micro-batch written to bronze, the quarantine and silver, with its figures."""

    query_id: str
    batch_id: int
    rows_in: int
    rows_valid: int
    kafka_ts_min: datetime
    kafka_ts_max: datetime
    kafka_ts_p05: datetime
    kafka_ts_p50: datetime
    silver_action: str
    phase_seconds: dict[str, float]
    started_at: datetime
    finished_at: datetime


def record_lake_batch(dsn: str, batch: LakeBatch) -> None:
    """Store a lake batch's figures in lake_batches; a replayed batch keeps its first row."""
    _best_effort(
        dsn,
        f"lake batch {batch.batch_id}",
        "INSERT INTO lake_batches (query_id, batch_id, rows_in, rows_valid, rows_quarantined,"
        " kafka_ts_min, kafka_ts_max, lag_p50_seconds, lag_p95_seconds, silver_action,"
        " phase_seconds, started_at, finished_at)"
        " VALUES (%(query_id)s, %(batch_id)s, %(rows_in)s, %(rows_valid)s, %(quarantined)s,"
        " %(ts_min)s, %(ts_max)s, %(lag_p50)s, %(lag_p95)s, %(action)s, %(phases)s,"
        " %(started)s, %(finished)s) ON CONFLICT (query_id, batch_id) DO NOTHING",
        {
            "query_id": batch.query_id,
            "batch_id": batch.batch_id,
            "rows_in": batch.rows_in,
            "rows_valid": batch.rows_valid,
            "quarantined": batch.rows_in - batch.rows_valid,
            "ts_min": batch.kafka_ts_min,
            "ts_max": batch.kafka_ts_max,
            "lag_p50": (batch.finished_at - batch.kafka_ts_p50).total_seconds(),
            "lag_p95": (batch.finished_at - batch.kafka_ts_p05).total_seconds(),
            "action": batch.silver_action,
            "phases": Jsonb(batch.phase_seconds),
            "started": batch.started_at,
            "finished": batch.finished_at,
        },
    )


def retrying(
    dsn: str,
    work: Callable[[psycopg.Connection], _T],
    retry_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Return work(connection), reconnecting with backoff while Postgres is unreachable for up
    to retry_seconds; work must be safe to run again after an unknown outcome."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                return work(conn)
        except psycopg.OperationalError as err:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("postgres unavailable (%s); retrying in %.1f s", err, delay)
            sleep(delay)
            delay = min(delay * 2, 5.0)
