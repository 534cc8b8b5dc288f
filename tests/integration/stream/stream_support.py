"""Helpers of the stream integration tests: isolated topic, Postgres schema and lake per test."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fastavro
import psycopg
import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from sf311.contract.registry import SchemaRegistry
from sf311.settings import Settings, load_settings
from sf311.warehouse.migrate import migrate

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
T0 = datetime(2019, 1, 1, tzinfo=UTC)


def with_search_path(dsn: str, schema: str) -> str:
    """Return a DSN whose sessions resolve unqualified names in `schema`."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={quote(f'-c search_path={schema}')}"


def make_versions(
    ids: int, updates: int, seed: int, first_id: int = 1_000_000
) -> list[dict[str, Any]]:
    """Return case versions in produce order: every id once, some ids again, partly out of
    order (an older version produced after a newer one)."""
    rng = random.Random(seed)
    out = []
    for i in range(ids):
        out.append(_version(first_id + i, 0))
    for n in range(updates):
        sid = first_id + rng.randrange(ids)
        out.append(_version(sid, rng.randrange(1, 50) * 1000 + n))
    rng.shuffle(out)
    return out


def _version(sid: int, step: int) -> dict[str, Any]:
    requested = T0 + timedelta(minutes=sid % 100_000)
    closed = requested + timedelta(hours=3) if step % 2 else None
    return {
        "service_request_id": sid,
        "requested_datetime": requested,
        # step picks a unique updated time per version, so "newest" is never a tie.
        "updated_datetime": requested + timedelta(hours=4, seconds=step),
        "closed_date": closed,
        "status_description": "Closed" if closed else "Open",
        "status_notes": f"v{step}",
        "service_name": ["Graffiti", "Encampments", "Street and Sidewalk Cleaning"][sid % 3],
        "neighborhood": ["Mission", "North Beach", None][sid % 3],
        "address": f'{sid % 97} "MAIN" ST,\nSF',
    }


def latest(versions: list[dict[str, Any]]) -> dict[int, tuple[datetime, str]]:
    """Return {id: (updated_datetime, status_notes)} of the newest version of each case."""
    best: dict[int, dict[str, Any]] = {}
    for v in versions:
        cur = best.get(v["service_request_id"])
        if cur is None or v["updated_datetime"] > cur["updated_datetime"]:
            best[v["service_request_id"]] = v
    return {k: (v["updated_datetime"], v["status_notes"]) for k, v in best.items()}


@dataclass
class StreamEnv:
    """One test's topic, registry subject, Postgres schema, lake and checkpoint folders."""

    settings: Settings
    env: dict[str, str]
    schema_id: int
    v1: dict[str, Any]
    produced: int = 0
    _parsed: Any = field(default=None, repr=False)

    def frame(self, record: dict[str, Any], schema_id: int | None = None) -> bytes:
        """Return the Confluent wire-format bytes of a v1 record."""
        if self._parsed is None:
            self._parsed = fastavro.parse_schema(self.v1)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, self._parsed, record)
        return struct.pack(">bI", 0, schema_id or self.schema_id) + body.getvalue()

    def produce(self, values: list[tuple[bytes | None, bytes]]) -> None:
        """Send (key, value) pairs to the topic and wait for every acknowledgement."""
        producer = Producer(
            {"bootstrap.servers": self.settings.kafka_bootstrap_servers, "linger.ms": 20}
        )
        for key, value in values:
            while True:
                try:
                    producer.produce(self.settings.kafka_topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(60) == 0
        self.produced += len(values)

    def produce_cases(self, versions: list[dict[str, Any]]) -> None:
        """Send case versions keyed by service_request_id."""
        self.produce([(str(v["service_request_id"]).encode(), self.frame(v)) for v in versions])

    def pg(self) -> psycopg.Connection:
        """Return a connection to this test's warehouse schema."""
        return psycopg.connect(self.settings.postgres_dsn.get_secret_value(), autocommit=True)

    def pg_cases(self) -> dict[int, tuple[datetime, str]]:
        """Return {id: (updated_datetime, status_notes)} of the warehouse table."""
        with self.pg() as conn:
            rows = conn.execute(
                "SELECT service_request_id, updated_datetime, status_notes FROM cases"
            ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def pg_count(self, table: str = "cases") -> int:
        """Return the row count of a warehouse table (0 while Postgres is unreachable)."""
        try:
            with self.pg() as conn:
                return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except psycopg.OperationalError:
            return 0

    def delta(self, spark, name: str):
        """Return a lakehouse table as a DataFrame."""
        return spark.read.format("delta").load(self.settings.table_path(name))

    def silver_cases(self, spark) -> dict[int, tuple[datetime, str]]:
        """Return {id: (updated_datetime, status_notes)} of silver.cases."""
        rows = self.delta(spark, "silver.cases").collect()
        return {
            r.service_request_id: (r.updated_datetime.replace(tzinfo=UTC), r.status_notes)
            for r in rows
        }


def _register(url: str, subject: str, schema: dict[str, Any]) -> int:
    resp = requests.post(
        f"{url.rstrip('/')}/subjects/{subject}/versions",
        json={"schema": json.dumps(schema), "schemaType": "AVRO"},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=30,
    )
    resp.raise_for_status()
    return int(resp.json()["id"])


def make_env(
    settings: Settings, tmp: Path, dsn: str | None = None, **overrides: Any
) -> tuple[StreamEnv, str]:
    """Return a fresh StreamEnv (topic, schema, lake) and the name of its Postgres schema."""
    tag = uuid.uuid4().hex[:10]
    topic = f"sf311.test.stream.{tag}"
    schema = f"test_stream_{tag}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, num_partitions=2)]).values():
        future.result()
    base_dsn = dsn or settings.postgres_dsn.get_secret_value()
    with psycopg.connect(base_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    scoped = with_search_path(base_dsn, schema)
    migrate(scoped)
    v1 = json.loads((SCHEMAS / "case.v1.avsc").read_text())
    schema_id = _register(settings.schema_registry_url, f"{topic}-value", v1)
    values = {
        "kafka_topic": topic,
        "lake_path": str(tmp / "lake"),
        "checkpoint_path": str(tmp / "checkpoints"),
        "postgres_dsn": scoped,
        "spark_master": "local[2]",
        **overrides,
    }
    env = {f"SF311_{k.upper()}": str(v) for k, v in values.items()}
    return StreamEnv(load_settings(**values), env, schema_id, v1), schema


def drop_env(settings: Settings, stream: StreamEnv, schema: str, dsn: str | None = None) -> None:
    """Remove the topic, its registry subject and the Postgres schema of a StreamEnv."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.delete_topics([stream.settings.kafka_topic]).values():
        future.result()
    SchemaRegistry(settings.schema_registry_url).delete(stream.settings.case_subject)
    with psycopg.connect(dsn or settings.postgres_dsn.get_secret_value(), autocommit=True) as c:
        # The gold mirror of a DSN scoped to `schema` lives beside it (sf311/warehouse/gold.py).
        c.execute(f"DROP SCHEMA IF EXISTS {schema}, {schema}_gold CASCADE")


class PrivatePostgres:
    """A throwaway Postgres cluster on a free port, so a test can stop it without harming others."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="sf311-test-pg-"))
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if self.user:
            # initdb refuses to run as root; the cluster belongs to the postgres OS user.
            shutil.chown(self.root, self.user, self.user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bin / tool), *args], check=True, capture_output=True,
                       user=self.user)  # fmt: skip

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts,
                  "-w", "start")  # fmt: skip

    def stop(self) -> None:
        """Stop the cluster now, rolling back open transactions."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        """Stop the cluster if it runs and delete its files."""
        subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, user=self.user)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
