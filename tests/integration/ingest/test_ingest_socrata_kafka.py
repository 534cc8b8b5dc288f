"""Socrata -> Kafka with the watermark in Postgres: incremental runs, faults, kill and resume."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import requests

from sf311.ingest.generate import write_cases
from sf311.ingest.run import ingest_socrata
from sf311.ingest.soda_server import Dataset, Faults, start_server
from sf311.ingest.sources import watermark_source
from sf311.ingest.watermark import Watermark, WatermarkStore

pytestmark = pytest.mark.integration

SF311 = Path(sys.executable).with_name("sf311")


def rows(n: int, first_id: int = 1) -> list[dict]:
    return [
        {
            "service_request_id": str(first_id + i),
            "requested_datetime": "2023-11-27T08:00:00.000",
            "updated_datetime": f"2023-11-28T0{i % 7}:00:00.000",
            "lat": "37.78",
            "long": "-122.41",
        }
        for i in range(n)
    ]


@pytest.fixture
def soda_settings(fresh):
    servers = []

    def start(data: list[dict], faults: Faults | None = None, **extra):
        server = start_server(Dataset(data), "vw6y-z8j6", faults=faults)
        servers.append(server)
        values = {
            "socrata_domain": server.domain,
            "socrata_scheme": "http",
            "socrata_backoff_seconds": 0.001,
            "socrata_backoff_max_seconds": 0.01,
            "socrata_overlap_seconds": 0,
            **extra,
        }
        return server, fresh.model_copy(update=values)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def stored(settings) -> Watermark | None:
    store = WatermarkStore(settings.postgres_dsn.get_secret_value())
    try:
        return store.get(watermark_source(settings))
    finally:
        store.close()


def test_incremental_runs_advance_the_watermark(soda_settings, read_topic) -> None:
    server, settings = soda_settings(rows(500))
    first = ingest_socrata(settings, page_size=60)
    assert (first.read, first.produced, first.dead_lettered) == (500, 500, 0)
    from datetime import datetime

    top = max((r["updated_datetime"], int(r["service_request_id"])) for r in rows(500))
    assert stored(settings) == Watermark(datetime.fromisoformat(top[0]), top[1])
    assert ingest_socrata(settings, page_size=60).read == 0
    keys = [int(k) for k, _ in read_topic(settings.kafka_topic)]
    assert sorted(keys) == list(range(1, 501))


def test_faulty_source_gives_exactly_the_same_set(soda_settings, read_topic) -> None:
    undated = {"service_request_id": "9999", "updated_datetime": "2023-11-28T03:00:00.000"}
    data = rows(400) + [undated]
    server, settings = soda_settings(
        data, Faults(fail_rate=0.2, fail_codes=(429, 500), retry_after=0, seed=11)
    )
    counts = ingest_socrata(settings, page_size=25)
    assert (counts.read, counts.produced, counts.dead_lettered) == (401, 400, 1)
    assert server.statuses[429] + server.statuses[500] > 0
    assert sorted(int(k) for k, _ in read_topic(settings.kafka_topic)) == list(range(1, 401))
    assert len(read_topic(settings.kafka_dlq_topic)) == 1


def test_bounded_interval_reads_only_that_interval(soda_settings, read_topic) -> None:
    from datetime import UTC, datetime

    _, settings = soda_settings(rows(70))
    # 10:00-12:00 UTC is 02:00-04:00 in Los Angeles in November: hours 2 and 3 only.
    counts = ingest_socrata(
        settings,
        since=datetime(2023, 11, 28, 10, tzinfo=UTC),
        until=datetime(2023, 11, 28, 12, tzinfo=UTC),
    )
    assert counts.read == 20
    assert {int(k) % 7 for k, _ in read_topic(settings.kafka_topic)} == {3, 4}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_run_killed_mid_way_resumes_without_losing_records(
    tmp_path: Path, fresh, read_topic
) -> None:
    data = tmp_path / "cases.jsonl"
    write_cases(data, rows=3000, seed=21)
    ids = {int(line.split('"service_request_id":"')[1].split('"')[0]) for line in data.open()}
    port = free_port()
    env = {
        **os.environ,
        "SF311_SOCRATA_DOMAIN": f"127.0.0.1:{port}",
        "SF311_SOCRATA_SCHEME": "http",
        "SF311_SOCRATA_PAGE_SIZE": "100",
        "SF311_SOCRATA_OVERLAP_SECONDS": "0",
        "SF311_KAFKA_TOPIC": fresh.kafka_topic,
        "SF311_KAFKA_DLQ_TOPIC": fresh.kafka_dlq_topic,
    }
    server = subprocess.Popen(
        [
            SF311,
            "soda-server",
            str(data),
            "--port",
            str(port),
            "--slow-rate",
            "1",
            "--slow-seconds",
            "0.15",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/resource/vw6y-z8j6.json?$limit=1", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "soda-server did not start"
                time.sleep(0.2)
        settings = fresh.model_copy(update={"socrata_domain": f"127.0.0.1:{port}"})

        run = subprocess.Popen(
            [SF311, "ingest", "--source", "socrata"], env=env, stdout=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while stored(settings) is None:
            assert run.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no watermark after 120 s"
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        assert run.wait(30) == -signal.SIGKILL
        killed_at = stored(settings)
        before = {int(k) for k, _ in read_topic(fresh.kafka_topic)}
        assert 0 < len(before) < len(ids), "the kill did not land mid-way"

        resumed = subprocess.run(
            [SF311, "ingest", "--source", "socrata"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert "dead_lettered=0" in resumed.stdout
        after = {int(k) for k, _ in read_topic(fresh.kafka_topic)}
        assert after == ids
        assert stored(settings) > killed_at
    finally:
        server.terminate()
        server.wait(30)


def test_watermark_only_moves_forward(fresh) -> None:
    from datetime import datetime

    store = WatermarkStore(fresh.postgres_dsn.get_secret_value())
    source = f"test:{fresh.kafka_topic}"
    try:
        store.advance(source, Watermark(datetime(2023, 11, 28, 5), 10))
        store.advance(source, Watermark(datetime(2023, 11, 28, 4), 99))
        store.advance(source, Watermark(datetime(2023, 11, 28, 5), 9))
        assert store.get(source) == Watermark(datetime(2023, 11, 28, 5), 10)
        store.advance(source, Watermark(datetime(2023, 11, 28, 5), 11))
        assert store.get(source) == Watermark(datetime(2023, 11, 28, 5), 11)
    finally:
        with psycopg.connect(fresh.postgres_dsn.get_secret_value(), autocommit=True) as conn:
            conn.execute("DELETE FROM ingest.watermarks WHERE source = %s", (source,))
        store.close()
