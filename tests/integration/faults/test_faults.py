"""Crashes of Kafka, the registry, Postgres and the streaming job itself, on a private stack:
after each, silver and Postgres hold exactly the source's cases, none lost or doubled."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from sf311.ingest.generate import write_cases
from sf311.ingest.run import ENCODE_THREADS, ingest_file, ingest_from
from sf311.lakehouse.stream import run_stream
from sf311.platform import stack
from sf311.settings import Settings
from tests.integration.faults.fault_support import (
    HeldFile,
    Job,
    assert_exact,
    assert_once,
    caught_up,
    held_loads,
    lake_batch_recorded,
    lake_ledger_complete,
    ledger,
    topic_messages,
    wait_until,
)
from tests.integration.stream.stream_support import StreamEnv, make_versions
from tests.support.private_stack import SERVICES, free_ports, kill9

# Each test runs a job of its own and at most a few thousand messages.
pytestmark = pytest.mark.timeout(1200)
WAIT = 600.0
# What the job logs when it restarts a query that failed during an outage (run_stream).
RESTARTING = "restarting it from its checkpoint once they answer"


def _waves(seed: int, n: int = 2) -> list[list[dict]]:
    return [
        make_versions(ids=500, updates=150, seed=seed + k, first_id=1_000_000 + 10_000 * k)
        for k in range(n)
    ]


def _bad_frames(n: int) -> list[tuple[bytes | None, bytes]]:
    # Not the Confluent frame: decoded as errors, so each batch has a quarantine phase.
    return [(None, b"\x01not avro %d" % i) for i in range(n)]


def _job(env: StreamEnv, tmp_path: Path, name: str) -> Job:
    return Job(env, int(env.env["SF311_FAULT_UI_PORT"]), tmp_path / f"{name}.log")


def _batches(env: StreamEnv) -> int:
    return ledger(env, "SELECT count(*) FROM stream_batches") or 0


@contextmanager
def _running(env: StreamEnv, tmp_path: Path, first: list[dict]) -> Iterator[Job]:
    """Yield the job started on `first` once it loaded a warehouse batch; kill it after."""
    env.produce_cases(first)
    job = _job(env, tmp_path, "job")
    job.start()
    try:
        wait_until(lambda: _batches(env) > 0, WAIT, "a first warehouse batch")
        yield job
    finally:
        job.kill()


def test_registry_down_at_start_the_job_waits_then_streams(
    fault_stack: Settings, fault_env, spark, tmp_path: Path
) -> None:
    waves = _waves(31, 1)
    kill9(fault_stack, "registry")
    fault_env.produce_cases(waves[0])
    job = _job(fault_env, tmp_path, "job")
    job.start()
    try:
        wait_until(lambda: "schema registry unavailable" in job.text(), WAIT, "a registry wait")
        assert job.alive, job.text()
        stack.up(fault_stack, only=SERVICES)
        wait_until(lambda: caught_up(fault_env, spark, waves[0]), WAIT, "the catch-up")
        assert job.alive, job.text()
    finally:
        job.kill()
    assert_exact(fault_env, spark, waves[0])


def test_postgres_kill9_mid_load_then_up(
    fault_stack: Settings, fault_env, spark, tmp_path: Path
) -> None:
    """Postgres stays down past the load's retry bound: the warehouse query fails, and the job
    restarts it from its checkpoint once Postgres answers again."""
    first, second = _waves(41)
    # Short enough that the outage outlasts it, long enough for `sf311 up` to bring Postgres back.
    fault_env.env["SF311_STREAM_PG_RETRY_SECONDS"] = "30"
    with _running(fault_env, tmp_path, first) as job:
        # The test holds `cases` so that the next load waits inside its transaction, past its
        # COPY: the crash then hits a load in progress.
        holder = fault_env.pg()
        try:
            with holder.transaction():
                holder.execute("LOCK TABLE cases IN SHARE MODE")
                fault_env.produce_cases(second)
                wait_until(lambda: held_loads(fault_env), WAIT, "a load held at its upsert")
                kill9(fault_stack, "postgres")
        except psycopg.OperationalError:
            pass
        finally:
            holder.close()
        wait_until(lambda: RESTARTING in job.text(), WAIT, "the failed query's restart")
        assert job.alive, job.text()
        stack.up(fault_stack, only=SERVICES)
        wait_until(lambda: caught_up(fault_env, spark, first + second), WAIT, "the catch-up")
        # The lake batches committed during the outage were spooled, then recorded.
        wait_until(lambda: lake_ledger_complete(fault_env), WAIT, "the lake ledger")
        assert job.alive, job.text()
    assert_exact(fault_env, spark, first + second)


def test_job_kill9_inside_the_warehouse_load(fault_env, spark, tmp_path: Path) -> None:
    first, second = _waves(51)
    with _running(fault_env, tmp_path, first) as job:
        with fault_env.pg() as holder, holder.transaction():
            holder.execute("LOCK TABLE cases IN SHARE MODE")
            fault_env.produce_cases(second)
            wait_until(lambda: held_loads(fault_env), WAIT, "a load held at its upsert")
            committed = _batches(fault_env)
            job.kill()
    # The held load died uncommitted: its ledger row never appeared.
    assert _batches(fault_env) == committed
    run_stream(spark, fault_env.settings, once=True)
    assert_exact(fault_env, spark, first + second)


def _running_phase(job: Job, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """Return the match of a running Spark job's tag; fail at once if the job died."""
    assert job.alive, job.text()[-3000:]
    return next((m for t in job.running_tags() if (m := pattern.match(t))), None)


def _kill_inside(job: Job, phase: str) -> tuple[str, int]:
    """Kill the job once a Spark job of `phase` runs in a batch from 1 on; return its query id
    and batch."""
    pattern = re.compile(rf"^(.+)-batch-([1-9]\d*)-{phase}$")
    job.start()
    try:
        hit = wait_until(
            lambda: _running_phase(job, pattern), WAIT, f"a Spark job of the {phase} phase"
        )
    finally:
        job.kill()
    return hit.group(1), int(hit.group(2))


def _moved_ui_port(job: Job) -> Job:
    """Return the job on a fresh UI port: the killed JVM's port may not be free again yet, and
    Spark would then serve its UI on another one than the test watches."""
    port = free_ports(1)[0]
    conf = Path(job.env.env["SF311_CONF_DIR"]) / "spark-defaults.conf"
    text = re.sub(r"(?m)^spark\.ui\.port .*$", f"spark.ui.port {port}", conf.read_text())
    conf.write_text(text)
    return Job(job.env, port, job.log)


def test_job_kill9_inside_each_lake_phase(fault_env, spark, tmp_path: Path) -> None:
    """quarantine runs after bronze's commit and before silver's MERGE; silver is the MERGE.
    The job is killed inside the first, restarted (it replays that batch from its checkpoint)
    and killed inside the second; one bounded run then recovers both."""
    # Versions of the same ids in every wave: from batch 1 on, silver's write is a MERGE.
    waves = [make_versions(ids=500, updates=150, seed=61 + k) for k in range(3)]
    job = _job(fault_env, tmp_path, "job")
    for wave in waves:
        fault_env.produce(_bad_frames(20))
        fault_env.produce_cases(wave)
    # Batch 0 creates silver (an append): a MERGE runs from batch 1 on.
    job.env.env["SF311_STREAM_LAKE_MAX_OFFSETS_PER_TRIGGER"] = "700"
    killed = [_kill_inside(job, "quarantine")]
    killed.append(_kill_inside(_moved_ui_port(job), "silver"))
    # Each batch was in progress: a lake batch's ledger row is its last step.
    for query_id, batch_id in killed:
        assert not lake_batch_recorded(fault_env, query_id, batch_id), (query_id, batch_id)
    run_stream(spark, fault_env.settings, once=True)
    versions = [v for wave in waves for v in wave]
    assert_exact(fault_env, spark, versions)
    # Replayed from its checkpoint, each killed batch has its ledger row now.
    for query_id, batch_id in killed:
        action = ledger(fault_env, "SELECT silver_action FROM lake_batches WHERE query_id = %s"
                        " AND batch_id = %s", (query_id, batch_id))  # fmt: skip
        assert action is not None and "merge" in action, (query_id, batch_id, action)


def test_broker_kill9_while_streaming(
    fault_stack: Settings, fault_env, spark, tmp_path: Path
) -> None:
    first, second = _waves(81)
    with _running(fault_env, tmp_path, first) as job:
        kill9(fault_stack, "kafka")
        stack.up(fault_stack, only=SERVICES)
        fault_env.produce_cases(second)
        wait_until(lambda: caught_up(fault_env, spark, first + second), WAIT, "the catch-up")
        assert job.alive, job.text()
    assert_exact(fault_env, spark, first + second)


def test_broker_kill9_during_ingest_then_a_rerun(
    fault_stack: Settings, fault_env, spark, tmp_path: Path
) -> None:
    """The broker dies after the ingest's first block reached it, before the others were sent:
    once it is back, the ingest delivers the rest, each message once, and says so exactly."""
    rows, block = 1000, 250
    path = tmp_path / "cases.jsonl"
    write_cases(path, rows=rows, seed=91)
    ids = {int(json.loads(line)["service_request_id"]) for line in path.read_text().splitlines()}
    assert len(ids) == rows
    go = threading.Event()
    # The ingest sends a block once ENCODE_THREADS more are read: holding the block after
    # those leaves exactly the first one sent.
    held = HeldFile(path, block, ENCODE_THREADS + 1, go)
    settings = fault_env.settings
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(ingest_from, settings, held)
        wait_until(lambda: topic_messages(settings) == block, WAIT, "the first block in Kafka")
        assert not run.done()
        kill9(fault_stack, "kafka")
        go.set()
        stack.up(fault_stack, only=SERVICES)
        counts = run.result(timeout=WAIT)
    # What the ingest reports is what the topic holds: nothing lost, nothing sent twice.
    assert (counts.read, counts.produced, counts.dead_lettered) == (rows, rows, 0)
    assert topic_messages(settings) == rows
    # The operator's re-run sends every case again; the stream keeps each once.
    rerun = ingest_file(settings, path, progress=False)
    assert (rerun.read, rerun.produced) == (rows, rows)
    assert topic_messages(settings) == 2 * rows
    fault_env.produced = 2 * rows
    run_stream(spark, settings, once=True)
    assert_once(fault_env, spark, ids)
    assert fault_env.silver_cases(spark) == fault_env.pg_cases()
