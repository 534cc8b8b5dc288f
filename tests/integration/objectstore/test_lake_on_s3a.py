"""The streaming job and `sf311 replay` with the lake and checkpoints on an S3-compatible store
(moto's server over s3a) give the same silver and Postgres as with them on local disk."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from sf311.contract.registry import SchemaRegistry
from sf311.lakehouse import silver
from sf311.lakehouse.replay import replay
from sf311.lakehouse.stream import run_stream
from sf311.settings import Settings
from sf311.warehouse.cases import CASE_COLUMNS
from tests.integration.stream.stream_support import drop_env, latest, make_env, make_versions
from tests.support.s3_server import S3Server, child_env

pytestmark = pytest.mark.integration

BUCKET = "sf311-lake"
SF311 = Path(sys.executable).with_name("sf311")


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    """moto's S3 server with one bucket, stopped afterwards."""
    server = S3Server(tmp_path / "moto.log")
    server.create_bucket(BUCKET)
    yield server
    server.stop()


def _sf311(server: S3Server, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(SF311), *args], env=child_env(server, env), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def _download(server: S3Server, prefix: str, to: Path) -> Path:
    """Copy every object under a prefix to a local folder; a Delta log's paths are relative."""
    client = server.client()
    for key in server.keys(BUCKET, prefix):
        if key.endswith("/"):
            continue
        target = to / key[len(prefix) :].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, key, str(target))
    return to


def _pg_rows(stream_env) -> list[tuple]:
    cols = ", ".join(c for c in CASE_COLUMNS if c not in _RUN_COLUMNS)
    with stream_env.pg() as conn:
        return conn.execute(f"SELECT {cols} FROM cases ORDER BY service_request_id").fetchall()


def test_stream_and_replay_on_s3a_equal_local_mode(spark, settings: Settings, s3, tmp_path):
    versions = make_versions(ids=800, updates=200, seed=77)
    poison = [(b"poison", b"\x7fnot avro %d" % i) for i in range(3)]
    local, local_schema = make_env(settings, tmp_path / "local")
    remote, remote_schema = make_env(
        settings,
        tmp_path / "unused",
        lake_path=f"s3a://{BUCKET}/lake",
        checkpoint_path=f"s3a://{BUCKET}/checkpoints",
        s3_endpoint=s3.endpoint,
        s3_path_style_access=True,
    )
    try:
        for env in (local, remote):
            env.produce_cases(versions)
            env.produce(poison)

        run_stream(spark, local.settings, once=True)
        _sf311(s3, remote.env, "stream", "--once")
        truth = latest(versions)
        assert remote.pg_cases() == truth
        assert _pg_rows(remote) == _pg_rows(local)
        # Nothing of the s3a run on local disk: every table and checkpoint is in the bucket.
        assert not (tmp_path / "unused").exists()
        keys = s3.keys(BUCKET)
        for prefix in ("lake/bronze/cases_raw/_delta_log/", "lake/silver/cases/_delta_log/",
                       "checkpoints/sf311_lake/commits/"):  # fmt: skip
            assert any(k.startswith(prefix) for k in keys), prefix

        with remote.pg() as conn:
            conn.execute("UPDATE cases SET status_notes = 'corrupted'")
        registry = SchemaRegistry(local.settings.schema_registry_url)
        replay(spark, local.settings, registry)
        out = _sf311(s3, remote.env, "replay")
        assert "replayed from bronze" in out
        assert remote.pg_cases() == truth
        assert _pg_rows(remote) == _pg_rows(local)

        copy = tmp_path / "s3-copy"
        for table in (silver.TABLE, silver.QUARANTINE_TABLE):
            layer, _, name = table.partition(".")
            path = _download(s3, f"lake/{layer}/{name}", copy / layer / name)
            from_s3 = spark.read.format("delta").load(str(path))
            from_disk = local.delta(spark, table)
            cols = [c for c in from_disk.columns if c not in _RUN_COLUMNS]
            assert from_s3.count() == from_disk.count() > 0
            assertDataFrameEqual(from_s3.select(cols), from_disk.select(cols))
    finally:
        drop_env(settings, local, local_schema)
        drop_env(settings, remote, remote_schema)


# What differs between two runs of the same input: the topic, when each message was produced
# and ingested, and which micro-batch carried it.
_RUN_COLUMNS = {"topic", "kafka_timestamp", "ingested_at", "ingest_date", "batch_id"}
