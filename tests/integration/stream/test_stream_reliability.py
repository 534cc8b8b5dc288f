"""The job survives SIGKILL at random points and a Postgres outage with nothing lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from pyspark.errors import AnalysisException
from stream_support import PrivatePostgres, drop_env, latest, make_env, make_versions

from sf311.lakehouse.checkpoints import WAREHOUSE_QUERY, checkpoint_location
from sf311.lakehouse.stream import run_stream, start_stream


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll check() until it is true; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _ledger_batches(env) -> int:
    try:
        with env.pg() as conn:
            return conn.execute("SELECT count(*) FROM stream_batches").fetchone()[0]
    except psycopg.OperationalError:
        return 0


def _silver(env, spark) -> dict:
    """Return silver.cases as StreamEnv.silver_cases does, empty before its first commit."""
    try:
        return env.silver_cases(spark)
    except AnalysisException:
        return {}


def _planned_batches(env) -> int:
    """Return how many micro-batches the warehouse query has planned (an offsets file each)."""
    offsets = Path(checkpoint_location(env.settings, WAREHOUSE_QUERY)) / "offsets"
    return len([p for p in offsets.glob("*") if p.name.isdigit()]) if offsets.is_dir() else 0


def test_sigkill_twice_then_restart_equals_the_source(spark, stream_env, tmp_path):
    # One wave of new cases before each run, so that every run has batches to die in however
    # fast the previous one went. The fault tests kill the job inside each lake phase and the
    # warehouse load; here one kill lands at a random point and one just after a load.
    waves = [
        make_versions(ids=400, updates=100, seed=11 + n, first_id=1_000_000 + 10_000 * n)
        for n in range(2)
    ]
    versions = [v for wave in waves for v in wave]
    env = {
        **os.environ,
        **stream_env.env,
        "SF311_STREAM_MAX_OFFSETS_PER_TRIGGER": "300",
        "SF311_STREAM_LAKE_MAX_OFFSETS_PER_TRIGGER": "300",
        "SF311_STREAM_TRIGGER": "1 second",
        "SF311_STREAM_LAKE_TRIGGER": "1 second",
    }
    rng = random.Random(5)
    for attempt in range(2):
        stream_env.produce_cases(waves[attempt])
        log_path = tmp_path / f"run{attempt}.log"
        planned, committed = _planned_batches(stream_env), _ledger_batches(stream_env)
        # Run 0 dies at a random point after the warehouse query planned a batch (the lake
        # query is then anywhere in decode, bronze or silver); run 1 dies shortly after a batch
        # reached Postgres.
        if attempt == 0:
            progressed, pause = (lambda p=planned: _planned_batches(stream_env) > p), 10.0
        else:
            progressed, pause = (lambda c=committed: _ledger_batches(stream_env) > c), 3.0
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sf311.cli", "stream"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                wait_until(
                    lambda p=proc, done=progressed: done() or p.poll() is not None,
                    600,
                    f"progress of run {attempt}",
                )
                assert proc.poll() is None, f"job exited early, see {log_path}"
                time.sleep(rng.uniform(0.0, pause))
            finally:
                # The whole process group: the Python driver and its JVM die together.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    run_stream(spark, stream_env.settings, once=True)

    truth = latest(versions)
    assert stream_env.silver_cases(spark) == truth
    assert stream_env.pg_cases() == truth
    bronze = stream_env.delta(spark, "bronze.cases_raw")
    assert bronze.count() == len(versions)
    assert bronze.select("partition", "offset").distinct().count() == len(versions)
    with stream_env.pg() as conn:
        rows_in = conn.execute("SELECT sum(rows_in) FROM stream_batches").fetchone()[0]
    assert rows_in == len(versions)


def test_postgres_outage_is_retried_and_the_job_catches_up(spark, settings, tmp_path):
    pg = PrivatePostgres(settings.postgres_bin_dir)
    pg.start()
    env, schema = make_env(
        settings,
        tmp_path,
        dsn=pg.dsn,
        stream_trigger="1 second",
        stream_lake_trigger="1 second",
        stream_max_offsets_per_trigger=1000,
        stream_lake_max_offsets_per_trigger=1000,
        stream_pg_retry_seconds=600,
    )
    streams = None
    try:
        first = make_versions(ids=600, updates=150, seed=3)
        second = make_versions(ids=600, updates=150, seed=4, first_id=2_000_000)
        env.produce_cases(first)
        streams = start_stream(spark, env.settings)
        wait_until(lambda: env.pg_cases() == latest(first), 600, "the first wave in Postgres")
        wait_until(lambda: _silver(env, spark) == latest(first), 600, "the first wave in silver")

        pg.stop()
        down_at = time.monotonic()
        planned = _planned_batches(env)
        env.produce_cases(second)
        # The warehouse query takes a batch of the second wave and retries Postgres with it;
        # the lake query does not wait for Postgres.
        wait_until(lambda: _planned_batches(env) > planned, 600, "a batch during the outage")
        truth = latest(first + second)
        wait_until(lambda: _silver(env, spark) == truth, 600, "the second wave in silver")
        assert env.delta(spark, "bronze.cases_raw").count() == len(first) + len(second)
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        assert streams.active and streams.exception() is None
        pg.start()

        wait_until(lambda: env.pg_cases() == truth, 600, "the catch-up in Postgres")
        assert streams.active and streams.exception() is None
        with env.pg() as conn:
            rows_in = conn.execute("SELECT sum(rows_in) FROM stream_batches").fetchone()[0]
        assert rows_in == len(first) + len(second)
    finally:
        if streams is not None:
            streams.stop()
        try:
            drop_env(settings, env, schema, dsn=pg.dsn)
        finally:
            pg.destroy()
