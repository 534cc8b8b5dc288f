"""Helpers of the fault tests: the streaming job as a killable process, the Spark phases it is
in, a warehouse load held at its upsert, an ingest held between blocks, the messages a topic
holds and the exact-ids check against the source."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests
from confluent_kafka import Consumer, TopicPartition

from sf311.ingest.sources import Block, FileSource
from sf311.settings import Settings
from tests.integration.stream.stream_support import StreamEnv, latest


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Return check()'s first truthy value; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@dataclass
class Job:
    """`sf311 stream` as its own process group, with the Spark UI on ui_port."""

    env: StreamEnv
    ui_port: int
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the job (processing-time triggers, left running)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sf311.cli", "stream"],
                env={**os.environ, **self.env.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        """Return True while the job's process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the job's whole process group (the Python driver and its JVM)."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def running_tags(self) -> list[str]:
        """Return the tags of the Spark jobs running now (query id, batch and phase each)."""
        base = f"http://127.0.0.1:{self.ui_port}/api/v1/applications"
        try:
            apps = requests.get(base, timeout=1).json()
            jobs = requests.get(
                f"{base}/{apps[0]['id']}/jobs", params={"status": "running"}, timeout=1
            ).json()
        except (requests.RequestException, ValueError, IndexError, KeyError):
            return []
        return [tag for job in jobs for tag in job.get("jobTags", [])]

    def text(self) -> str:
        """Return what the job has logged so far."""
        return self.log.read_text(errors="replace")


@dataclass
class HeldFile:
    """A file source read in blocks of `rows` whose block number `hold_at` (from 0) waits for
    `go`: the ingest is held between blocks, the ones before it sent or queued."""

    path: Path
    rows: int
    hold_at: int
    go: threading.Event
    origin = "file"
    on_acked = None

    def __post_init__(self) -> None:
        self.inner = FileSource(self.path, progress=False)

    def __enter__(self) -> HeldFile:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)

    def iter_blocks(self, size: int) -> Iterator[Block]:
        """Yield the file's blocks of self.rows rows, waiting for `go` before block hold_at."""
        for n, block in enumerate(self.inner.iter_blocks(self.rows)):
            if n == self.hold_at:
                assert self.go.wait(600), "the held ingest was never released"
            yield block


def topic_messages(settings: Settings) -> int | None:
    """Return how many messages the topic holds over its partitions, None while Kafka is down."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": "sf311-fault-count", "log_level": 0})  # fmt: skip
    try:
        topic = consumer.list_topics(settings.kafka_topic, timeout=5).topics[settings.kafka_topic]
        total = 0
        for partition in topic.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.kafka_topic, partition), timeout=5
            )
            total += high - low
        return total
    except Exception:  # noqa: BLE001 - a broker that does not answer (yet)
        return None
    finally:
        consumer.close()


def held_loads(env: StreamEnv) -> int:
    """Return how many warehouse loads wait, inside their transaction, for the lock on cases."""
    with env.pg() as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            # The guarded upsert, or the copy of cases above the highest stored id.
            " AND (query LIKE 'INSERT INTO cases%%' OR query LIKE 'COPY \"cases\" %%')"
            " AND xact_start IS NOT NULL"
        ).fetchone()[0]


def ledger(env: StreamEnv, sql: str, params: tuple = ()) -> Any:
    """Return the first value of a query on the warehouse, None while Postgres is unreachable."""
    try:
        with env.pg() as conn:
            return conn.execute(sql, params).fetchone()[0]
    except psycopg.OperationalError:
        return None


def lake_batch_recorded(env: StreamEnv, query_id: str, batch_id: int) -> bool:
    """Return True when lake_batches holds the given batch of the lake query."""
    n = ledger(env, "SELECT count(*) FROM lake_batches WHERE query_id = %s AND batch_id = %s",
               (query_id, batch_id))  # fmt: skip
    return bool(n)


def lake_ledger_complete(env: StreamEnv) -> bool:
    """Return True when lake_batches holds every batch of the lake query, 0 to the last."""
    row = ledger(env, "SELECT count(*) = max(batch_id) + 1 FROM lake_batches")
    return bool(row)


def caught_up(env: StreamEnv, spark, versions: list[dict[str, Any]]) -> bool:
    """Return True when silver and Postgres both hold the newest version of every case."""
    truth = latest(versions)
    try:
        return env.pg_cases() == truth and env.silver_cases(spark) == truth
    except Exception:  # noqa: BLE001 - a table not written yet, Postgres restarting
        return False


def assert_once(env: StreamEnv, spark, ids: set[int]) -> None:
    """Assert silver and Postgres hold exactly these ids, once each, and that every message
    reached bronze and the warehouse ledger once."""
    silver = env.delta(spark, "silver.cases").select("service_request_id")
    assert silver.count() == silver.distinct().count()
    assert {r[0] for r in silver.collect()} == ids
    with env.pg() as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT service_request_id) FROM cases"
        ).fetchone()
        rows_in = conn.execute("SELECT sum(rows_in) FROM stream_batches").fetchone()[0]
    assert total == distinct == len(ids)
    assert rows_in == env.produced
    bronze = env.delta(spark, "bronze.cases_raw")
    assert bronze.select("partition", "offset").distinct().count() == bronze.count()
    assert bronze.count() == env.produced


def assert_exact(env: StreamEnv, spark, versions: list[dict[str, Any]]) -> None:
    """Assert assert_once for the source's ids, and that silver and Postgres hold the newest
    version of each."""
    truth = latest(versions)
    assert_once(env, spark, set(truth))
    assert env.silver_cases(spark) == truth
    assert env.pg_cases() == truth
