"""The pipeline's health for `sf311 status` and the demo: topic lag, last batch, freshness."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from sf311.lakehouse.checkpoints import (
    LAKE_QUERY,
    QUERIES,
    WAREHOUSE_QUERY,
    checkpoint_location,
    parse_offsets,
)
from sf311.settings import Settings
from sf311.warehouse.offsets import loaded_offsets
from sf311.warehouse.reconcile_runs import ReconcileRun, last_run

KAFKA_TIMEOUT = 5.0


@dataclass(frozen=True)
class Lag:
    """Per partition: the topic's end offset and the offset the stream has committed up to."""

    end: dict[int, int]
    committed: dict[int, int] | None

    @property
    def messages(self) -> int:
        """Return the messages on the topic (sum of end offsets; the topic is never compacted)."""
        return sum(self.end.values())

    @property
    def behind(self) -> int | None:
        """Return how many messages the stream has still to process, or None when unknown."""
        if self.committed is None:
            return None
        return sum(max(0, end - self.committed.get(p, 0)) for p, end in self.end.items())


def topic_end_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    """Return the end (high watermark) offset of each partition of the cases topic."""
    topic = topic or settings.kafka_topic
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "sf311-status"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT).topics[topic]
        if meta.error is not None:
            return {}
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=KAFKA_TIMEOUT)[1]
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


def checkpoint_offsets(checkpoint: str, topic: str) -> dict[int, int] | None:
    """Return the offsets the last committed batch of a query read up to; None when unknown.

    Spark writes offsets/N before batch N and commits/N after it; only a local checkpoint is read.
    """
    parts = urlsplit(checkpoint)
    if parts.scheme not in ("", "file"):
        return None
    root = Path(parts.path)
    commits = [int(p.name) for p in (root / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not commits:
        return {} if root.exists() else None
    return parse_offsets((root / "offsets" / str(max(commits))).read_text(), topic)


def warehouse_loaded(settings: Settings) -> dict[int, int]:
    """Return the warehouse_offsets of the cases topic; empty when Postgres cannot tell."""
    try:
        with psycopg.connect(settings.postgres_dsn.get_secret_value(), connect_timeout=3) as conn:
            if conn.execute("SELECT to_regclass('warehouse_offsets') IS NULL").fetchone()[0]:
                return {}
            return loaded_offsets(conn, settings.kafka_topic)
    except psycopg.Error:
        return {}


def lags(settings: Settings) -> dict[str, Lag]:
    """Return, per streaming query, the topic's end offsets beside what it has committed; the
    warehouse's counts as far as warehouse_offsets records it loaded, since a bounded run loads
    it without running the warehouse query."""
    end = topic_end_offsets(settings)
    out = {
        q: Lag(end, checkpoint_offsets(checkpoint_location(settings, q), settings.kafka_topic))
        for q in QUERIES
    }
    loaded = warehouse_loaded(settings)
    if loaded:
        own = out[WAREHOUSE_QUERY].committed or {}
        out[WAREHOUSE_QUERY] = Lag(
            end, {p: max(own.get(p, 0), loaded.get(p, 0)) for p in own.keys() | loaded.keys()}
        )
    return out


def try_lags(settings: Settings) -> dict[str, Lag] | KafkaException:
    """Return lags(settings), or the Kafka error that kept it from being read."""
    try:
        return lags(settings)
    except KafkaException as err:
        return err


def most_behind(by_query: dict[str, Lag] | KafkaException) -> int | None:
    """Return the most messages any query has still to process; None when no query can tell."""
    if isinstance(by_query, KafkaException):
        return None
    known = [lag_.behind for lag_ in by_query.values() if lag_.behind is not None]
    return max(known, default=None)


@dataclass(frozen=True)
class Batches:
    """The last committed micro-batch and the freshness of the last hour."""

    last_batch_id: int | None
    last_rows: int | None
    last_committed: datetime | None
    last_lag_p95: float | None
    hour_batches: int
    hour_lag_p50: float | None
    hour_lag_p95_max: float | None
    cases: int
    # The lake query's last batch: id, finish time and lag p95 to its silver commit.
    lake_batch_id: int | None = None
    lake_finished: datetime | None = None
    lake_lag_p95: float | None = None


def batches(dsn: str) -> Batches | None:
    """Return the last batch and freshness from the warehouse; None before the first migration."""
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        exists = conn.execute("SELECT to_regclass('stream_batches') IS NOT NULL").fetchone()[0]
        if not exists:
            return None
        last = conn.execute(
            "SELECT batch_id, rows_in, committed_at, lag_p95_seconds FROM stream_batches "
            "ORDER BY committed_at DESC LIMIT 1"
        ).fetchone() or (None, None, None, None)
        hour = conn.execute(
            "SELECT batches_last_hour, lag_p50_seconds, lag_p95_seconds_max FROM stream_freshness"
        ).fetchone()
        cases = conn.execute("SELECT count(*) FROM cases").fetchone()[0]
        lake = None
        if conn.execute("SELECT to_regclass('lake_batches') IS NOT NULL").fetchone()[0]:
            lake = conn.execute(
                "SELECT batch_id, finished_at, lag_p95_seconds FROM lake_batches "
                "ORDER BY finished_at DESC LIMIT 1"
            ).fetchone()
    return Batches(*last, *hour, cases, *(lake or ()))


def reconcile_line(run: ReconcileRun | None) -> str:
    """Return the status line of the last `sf311 reconcile` run."""
    if run is None:
        return "  reconcile none run yet (`sf311 reconcile`, DAG sf311_reconcile)"
    c = run.counts
    when = run.finished_at or run.started_at
    line = (
        f"  last reconcile #{run.run_id}: {run.status} {when:%Y-%m-%d %H:%M:%S %Z}, "
        f"{run.window_start}..{run.window_end}: {c.days_differing} of {c.days_compared} days "
        f"differ; {c.ids_missing_here:,} missing here ({c.ids_reextracted:,} re-extracted), "
        f"{c.ids_marked_deleted:,} marked deleted, {c.ids_restored:,} restored"
    )
    return line if run.error is None else f"{line}; {run.error.splitlines()[0][:200]}"


def fmt_seconds(value: float | None) -> str:
    """Return seconds as '1.2 s', or '-' when unknown."""
    return "-" if value is None else f"{value:.1f} s"


def _behind(lag_: Lag) -> str:
    return "unknown (no local checkpoint)" if lag_.behind is None else f"{lag_.behind:,}"


def report(settings: Settings, by_query: dict[str, Lag] | KafkaException) -> list[str]:
    """Return the status lines of the pipeline: topic and lag (try_lags), last batches,
    freshness."""
    lines = []
    if isinstance(by_query, KafkaException):
        lines.append(f"  topic     unavailable: {by_query}")
    else:
        messages = next(iter(by_query.values())).messages
        behind = ", ".join(f"{q} {_behind(lag_)}" for q, lag_ in by_query.items())
        lines.append(f"  topic     {settings.kafka_topic}: {messages:,} messages; behind: {behind}")
    try:
        b = batches(settings.postgres_dsn.get_secret_value())
    except psycopg.Error as err:
        return [*lines, f"  warehouse unavailable: {str(err).strip().splitlines()[0]}"]
    if b is None:
        return [*lines, "  warehouse not migrated yet: run `sf311 db migrate`"]
    if b.last_batch_id is None:
        lines.append("  batches   none committed yet")
    else:
        lines.append(
            f"  last warehouse batch #{b.last_batch_id}: {b.last_rows:,} rows, committed "
            f"{b.last_committed:%Y-%m-%d %H:%M:%S %Z}, lag p95 {fmt_seconds(b.last_lag_p95)}"
        )
    lines.append(
        f"  freshness last hour: {b.hour_batches} batches, lag p50 {fmt_seconds(b.hour_lag_p50)}, "
        f"worst p95 {fmt_seconds(b.hour_lag_p95_max)}; warehouse holds {b.cases:,} cases"
    )
    if b.lake_batch_id is not None:
        lines.append(
            f"  last {LAKE_QUERY} batch #{b.lake_batch_id}: finished "
            f"{b.lake_finished:%Y-%m-%d %H:%M:%S %Z}, lag p95 {fmt_seconds(b.lake_lag_p95)}"
        )
    try:
        with psycopg.connect(settings.postgres_dsn.get_secret_value(), connect_timeout=3) as conn:
            lines.append(reconcile_line(last_run(conn)))
    except psycopg.Error as err:
        lines.append(f"  reconcile unavailable: {str(err).strip().splitlines()[0]}")
    return lines
