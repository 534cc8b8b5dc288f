"""Ledgers of the streaming job: `stream_batches` (each warehouse load, written with it, so a
replayed batch changes nothing) and `lake_batches` (the figures of each batch written to Delta)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from psycopg.types.json import Jsonb

from sf311.lakehouse.figures import BatchFigures
from sf311.warehouse.cases import mark_deleted, upsert_newer
from sf311.warehouse.offsets import OffsetRange, advance_offsets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchLoad:
    """One micro-batch for the warehouse: its figures and curated rows (CASE_COLUMNS)."""

    query_id: str
    batch_id: int
    figures: BatchFigures
    rows: pa.Table
    started_at: datetime
    # The batch's messages per partition of `topic`, loaded or rejected: see advance_offsets.
    topic: str = ""
    offsets: Sequence[OffsetRange] = ()
    # True for the warehouse query's batches: its checkpoint has seen every earlier message.
    own_checkpoint: bool = True
    # (id, instant) of the cases the batch's tombstones delete.
    deleted: Sequence[tuple[int, datetime]] = ()


def load_batch(conn: psycopg.Connection, batch: BatchLoad) -> int | None:
    """Upsert one batch, mark the cases its tombstones delete and record it in the ledger,
    atomically; return rows changed, or None when the ledger shows the batch was already
    loaded."""
    f = batch.figures
    with conn.transaction():
        seen = conn.execute(
            "SELECT 1 FROM stream_batches WHERE query_id = %s AND batch_id = %s",
            [batch.query_id, batch.batch_id],
        ).fetchone()
        if seen:
            return None
        changed = upsert_newer(conn, batch.rows) + mark_deleted(conn, batch.deleted)
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
                "rows_in": f.rows_in,
                "rows_valid": f.rows_valid,
                "rows_quarantined": f.rows_quarantined,
                "rows_curated": batch.rows.num_rows,
                "changed": changed,
                "ts_min": f.ts_min,
                "ts_max": f.ts_max,
                "ts_p50": f.ts_p50,
                "ts_p05": f.ts_p05,
                "started_at": batch.started_at,
            },
        )
    return changed


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


def lake_batch_row(
    query_id: str,
    batch_id: int,
    figures: BatchFigures,
    silver_action: str,
    phase_seconds: dict[str, float],
    started_at: datetime,
    finished_at: datetime,
) -> dict[str, Any]:
    """Return a lake batch's lake_batches row as JSON-ready values."""
    f = figures
    return {
        "query_id": query_id,
        "batch_id": batch_id,
        "rows_in": f.rows_in,
        "rows_valid": f.rows_valid,
        "quarantined": f.rows_quarantined,
        "ts_min": f.ts_min.isoformat() if f.ts_min else None,
        "ts_max": f.ts_max.isoformat() if f.ts_max else None,
        "lag_p50": (finished_at - f.ts_p50).total_seconds() if f.ts_p50 else None,
        "lag_p95": (finished_at - f.ts_p05).total_seconds() if f.ts_p05 else None,
        "action": silver_action,
        "phases": phase_seconds,
        "started": started_at.isoformat(),
        "finished": finished_at.isoformat(),
    }


def insert_lake_batch(conn: psycopg.Connection, row: dict[str, Any]) -> None:
    """Store one lake_batch_row; a replayed batch keeps its first row."""
    conn.execute(
        "INSERT INTO lake_batches (query_id, batch_id, rows_in, rows_valid, rows_quarantined,"
        " kafka_ts_min, kafka_ts_max, lag_p50_seconds, lag_p95_seconds, silver_action,"
        " phase_seconds, started_at, finished_at)"
        " VALUES (%(query_id)s, %(batch_id)s, %(rows_in)s, %(rows_valid)s, %(quarantined)s,"
        " %(ts_min)s::timestamptz, %(ts_max)s::timestamptz, %(lag_p50)s, %(lag_p95)s,"
        " %(action)s, %(phases)s, %(started)s::timestamptz, %(finished)s::timestamptz)"
        " ON CONFLICT (query_id, batch_id) DO NOTHING",
        {**row, "phases": Jsonb(row["phases"])},
    )


SPOOL_LOCK = threading.Lock()


class LakeLedger:
    """lake_batches rows written first to a spool folder, then to Postgres, so that a batch
    committed to Delta while Postgres is down is recorded at a later batch or run."""

    def __init__(self, dsn: str, spool: Path) -> None:
        self.dsn = dsn
        self.spool = spool
        self._left = 0

    def record(self, row: dict[str, Any]) -> None:
        """Spool one lake_batch_row, then store every spooled row of its query."""
        self.spool.mkdir(parents=True, exist_ok=True)
        path = self.spool / f"{row['query_id']}-{row['batch_id']:012d}.json"
        part = path.with_suffix(".part")
        part.write_text(json.dumps(row))
        part.replace(path)
        self.flush(row["query_id"])

    def flush(self, query_id: str) -> int:
        """Store the spooled rows of one query in batch order and drop them; return how many
        are left because Postgres is unreachable or refused them."""
        # The lake batch and the driver's idle tick both flush: one at a time in this process.
        with SPOOL_LOCK:
            return self._flush(query_id)

    def _flush(self, query_id: str) -> int:
        paths = sorted(self.spool.glob(f"{query_id}-*.json"))
        stored = 0
        try:
            if paths:
                with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                    for path in paths:
                        try:
                            row = json.loads(path.read_text())
                        except FileNotFoundError:  # stored by another process's flush
                            stored += 1
                            continue
                        with conn.transaction():
                            insert_lake_batch(conn, row)  # idempotent: ON CONFLICT DO NOTHING
                        path.unlink(missing_ok=True)
                        stored += 1
        except psycopg.Error as err:
            # Kept for a later attempt; logged when the count changes, not at every attempt.
            if len(paths) - stored != self._left:
                first = (str(err).strip() or "unreachable").splitlines()[0]
                log.warning("%d lake batch(es) kept in %s until Postgres answers: %s",
                            len(paths) - stored, self.spool, first)  # fmt: skip
        self._left = len(paths) - stored
        return self._left


def lake_spool(state_dir: Path) -> Path:
    """Return the spool folder of lake_batches rows not yet stored in Postgres."""
    return state_dir / "spool" / "lake_batches"
