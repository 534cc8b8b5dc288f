"""The real `sf311` console script against a refused password and services that do not answer:
one line on stderr naming the service and its setting, exit 2 or 3, no traceback, bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from confluent_kafka.admin import AdminClient

from sf311.settings import PROJECT_ROOT, Settings
from tests.support.private_stack import free_ports

SF311 = Path(sys.executable).with_name("sf311")
CASE = '{"service_request_id": 1, "requested_datetime": "2023-11-27T08:00:00.000"}\n'


def sf311(*argv: str, **env: str) -> tuple[int, str]:
    """Return (exit code, stderr) of the console script run with these SF311_ settings."""
    # Small bounds: each unreachable service costs the test seconds, not the default 15.
    environ = {**os.environ, "SF311_CONNECT_TIMEOUT_SECONDS": "2", **env}
    done = subprocess.run(
        [str(SF311), *argv], env=environ, capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stderr


def assert_one_line(err: str, *names: str) -> None:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for name in names:
        assert name in err, (name, err)


@pytest.fixture
def topics(settings: Settings) -> Iterator[dict[str, str]]:
    """SF311_ variables of topics of the test's own, deleted afterwards if a run made them."""
    tag = uuid.uuid4().hex[:10]
    names = [f"test.cli.{tag}", f"test.cli.{tag}.dlq"]
    yield {"SF311_KAFKA_TOPIC": names[0], "SF311_KAFKA_DLQ_TOPIC": names[1]}
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    made = [t for t in names if t in admin.list_topics(timeout=10).topics]
    for future in admin.delete_topics(made, operation_timeout=30).values() if made else []:
        future.result()


@pytest.fixture
def case_file(tmp_path: Path) -> str:
    path = tmp_path / "cases.jsonl"
    path.write_text(CASE)
    return str(path)


def _dsn(settings: Settings, password: str, port: int | None = None) -> str:
    parts = urlsplit(settings.postgres_dsn.get_secret_value())
    netloc = f"{parts.username}:{password}@{parts.hostname}:{port or parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_a_wrong_postgres_password_names_the_server_user_and_setting(settings: Settings):
    password = f"wrong-{uuid.uuid4().hex[:8]}"
    dsn = _dsn(settings, password)
    code, err = sf311("db", "migrate", SF311_POSTGRES_DSN=dsn)
    parts = urlsplit(dsn)
    assert code == 2
    assert_one_line(
        err, f"{parts.hostname}:{parts.port}", f"user {parts.username}", "SF311_POSTGRES_DSN"
    )
    assert "refused the password" in err and password not in err


def test_an_unreachable_postgres_exits_3_naming_its_address(settings: Settings) -> None:
    (port,) = free_ports(1)
    code, err = sf311("db", "migrate", SF311_POSTGRES_DSN=_dsn(settings, "x", port))
    assert code == 3
    assert_one_line(err, f"127.0.0.1:{port}", "did not answer", "SF311_POSTGRES_DSN")


def _ingest_exits_3(case_file: str, topics: dict[str, str], **env: str) -> str:
    """Return the stderr of `sf311 ingest --source file` under env, which must exit 3."""
    code, err = sf311("ingest", "--source", "file", case_file, **env, **topics)
    assert code == 3
    return err


def _nothing_listens() -> str:
    return f"127.0.0.1:{free_ports(1)[0]}"


def test_an_unreachable_kafka_exits_3_without_librdkafka_lines(topics, case_file) -> None:
    servers = _nothing_listens()
    err = _ingest_exits_3(case_file, topics, SF311_KAFKA_BOOTSTRAP_SERVERS=servers)
    assert_one_line(err, f"Kafka at {servers} did not answer within 2 s")
    assert "SF311_KAFKA_BOOTSTRAP_SERVERS" in err


def test_an_unreachable_registry_exits_3_naming_its_setting(topics, case_file) -> None:
    url = f"http://{_nothing_listens()}/apis/ccompat/v7"
    err = _ingest_exits_3(case_file, topics, SF311_SCHEMA_REGISTRY_URL=url)
    assert_one_line(err, f"schema registry at {url} did not answer", "SF311_SCHEMA_REGISTRY_URL")


def test_a_bad_trigger_stops_the_spark_submit_entry_point_too(tmp_path: Path) -> None:
    # Its own state folder and no broker: were the trigger taken, no shared checkpoint is touched.
    (port,) = free_ports(1)
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "jobs" / "stream.py"), "--once"],
        env={
            **os.environ,
            "SF311_STREAM_TRIGGER": "banana",
            "SF311_STATE_DIR": str(tmp_path),
            "SF311_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert_one_line(done.stderr, "sf311 stream: bad setting: SF311_STREAM_TRIGGER: must be")
