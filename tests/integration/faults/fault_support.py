"""Helpers of the fault tests: the streaming job as a killable process, the Spark phases it is
in, a warehouse load held at its upsert, and the exact-ids check against the source."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests

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


def held_loads(env: StreamEnv) -> int:
    """Return how many warehouse loads wait, inside their transaction, for the lock on cases."""
    with env.pg() as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO cases%%' AND xact_start IS NOT NULL"
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


def assert_exact(env: StreamEnv, spark, versions: list[dict[str, Any]]) -> None:
    """Assert silver and Postgres hold exactly the source's ids, once each, newest versions, and
    that every message reached bronze and the warehouse ledger once."""
    truth = latest(versions)
    silver = env.delta(spark, "silver.cases")
    ids = silver.select("service_request_id")
    assert ids.count() == ids.distinct().count()
    assert {r[0] for r in ids.collect()} == set(truth)
    assert env.silver_cases(spark) == truth
    with env.pg() as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT service_request_id) FROM cases"
        ).fetchone()
        rows_in = conn.execute("SELECT sum(rows_in) FROM stream_batches").fetchone()[0]
    assert total == distinct == len(truth)
    assert env.pg_cases() == truth
    assert rows_in == env.produced
    bronze = env.delta(spark, "bronze.cases_raw")
    assert bronze.select("partition", "offset").distinct().count() == bronze.count()
    assert bronze.count() == env.produced
