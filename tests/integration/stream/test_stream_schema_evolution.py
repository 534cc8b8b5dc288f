"""Schema evolution on the real registry and stream: case v1 and v2 messages in one topic land
once with their values in silver and Postgres, replay rebuilds both, an incompatible version is
refused with the field named before anything is produced, and an older silver table gains the
new column."""

from __future__ import annotations

import copy
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from stream_support import SCHEMAS, T0, make_versions

from sf311.contract import frame
from sf311.contract.registry import IncompatibleSchema, SchemaRegistry
from sf311.contract.schema import reader_schema
from sf311.ingest.generate import write_cases
from sf311.ingest.run import ingest_file
from sf311.lakehouse import bronze, silver
from sf311.lakehouse.batch import BatchDecoder
from sf311.lakehouse.replay import replay
from sf311.lakehouse.stream import run_stream
from sf311.settings import Settings
from tests.support.silver_frames import SILVER_COLUMNS

pytestmark = pytest.mark.integration

V1 = json.loads((SCHEMAS / "case.v1.avsc").read_text())
V2 = json.loads((SCHEMAS / "case.v2.avsc").read_text())


def _framed(schema: dict, schema_id: int, record: dict) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return frame.header(schema_id) + body.getvalue()


def _newest(versions: list[dict]) -> dict[int, tuple[datetime, str, datetime | None]]:
    best: dict[int, dict] = {}
    for v in versions:
        cur = best.get(v["service_request_id"])
        if cur is None or v["updated_datetime"] > cur["updated_datetime"]:
            best[v["service_request_id"]] = v
    return {
        k: (v["updated_datetime"], v["status_notes"], v.get("source_updated_at"))
        for k, v in best.items()
    }


def _silver(spark, settings: Settings) -> tuple[int, dict]:
    rows = spark.read.format("delta").load(settings.table_path(silver.TABLE)).collect()
    utc = lambda t: t and t.replace(tzinfo=UTC)  # noqa: E731 - Spark hands back naive UTC
    return len(rows), {
        r.service_request_id: (utc(r.updated_datetime), r.status_notes, utc(r.source_updated_at))
        for r in rows
    }


def _postgres(stream_env) -> tuple[int, dict]:
    with stream_env.pg() as conn:
        rows = conn.execute(
            "SELECT service_request_id, updated_datetime, status_notes, source_updated_at"
            " FROM cases"
        ).fetchall()
    return len(rows), {r[0]: tuple(r[1:]) for r in rows}


def test_v1_and_v2_messages_in_one_batch_land_once_and_replay_rebuilds_them(spark, stream_env):
    settings = stream_env.settings
    registry = SchemaRegistry(settings.schema_registry_url)
    subject = settings.case_subject
    v2_id = registry.register(subject, V2)
    assert registry.compatibility(subject) == "FULL"
    assert v2_id != stream_env.schema_id

    versions = make_versions(ids=300, updates=80, seed=41)
    messages = []
    for i, version in enumerate(versions):
        if i % 2:
            version["source_updated_at"] = T0 + timedelta(days=400, seconds=i)
            value = _framed(V2, v2_id, version)
        else:
            value = stream_env.frame(version)
        messages.append((str(version["service_request_id"]).encode(), value))
    stream_env.produce(messages)
    run_stream(spark, settings, once=True)

    truth = _newest(versions)
    assert any(v[2] is None for v in truth.values()) and any(v[2] for v in truth.values())
    assert _silver(spark, settings) == (len(truth), truth)
    assert _postgres(stream_env) == (len(truth), truth)
    raw = spark.read.format("delta").load(settings.table_path(bronze.TABLE))
    assert raw.count() == len(versions)
    ids = {r.schema_id: r["count"] for r in raw.groupBy("schema_id").count().collect()}
    assert ids == {stream_env.schema_id: (len(versions) + 1) // 2, v2_id: len(versions) // 2}

    DeltaTable.forPath(spark, settings.table_path(silver.TABLE)).delete()
    with stream_env.pg() as conn:
        conn.execute("UPDATE cases SET source_updated_at = NULL")
    result = replay(spark, settings, registry)
    assert result.silver_rows == len(truth)
    assert _silver(spark, settings) == (len(truth), truth)
    assert _postgres(stream_env) == (len(truth), truth)


@pytest.fixture
def scratch_subject(settings: Settings):
    """A registry subject of its own, deleted afterwards."""
    subject = f"sf311.test.evolution.{uuid.uuid4().hex[:10]}-value"
    yield subject
    SchemaRegistry(settings.schema_registry_url).delete(subject)


def _breaks(change) -> dict:
    schema = copy.deepcopy(V2)
    change(schema["fields"])
    return schema


def _retype(fields: list) -> None:
    fields[1]["type"] = "string"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda f: f.pop(0), "field 'service_request_id' removed though it has no default"),
        (_retype, "field 'requested_datetime' changed type from timestamp to string"),
        (lambda f: f.append({"name": "x", "type": "int"}), "field 'x' added without a default"),
    ],
    ids=["removed-required-field", "type-change", "added-without-default"],
)
def test_the_registry_refuses_an_incompatible_v3_naming_the_field(
    settings: Settings, scratch_subject: str, change, named: str
) -> None:
    registry = SchemaRegistry(settings.schema_registry_url)
    registry.register(scratch_subject, V1)
    v2_id = registry.register(scratch_subject, V2)
    with pytest.raises(IncompatibleSchema) as refused:
        registry.register(scratch_subject, _breaks(change))
    assert str(refused.value) == (
        f"schema registry refused {scratch_subject}: not FULL-compatible with version 2: {named}"
    )
    assert registry.latest(scratch_subject) == (2, V2)
    assert registry.register(scratch_subject, V2) == v2_id


def test_a_decoder_learns_every_version_of_its_subject_before_the_first_batch(
    settings: Settings, scratch_subject: str
) -> None:
    registry = SchemaRegistry(settings.schema_registry_url)
    ids = [registry.register(scratch_subject, V1), registry.register(scratch_subject, V2)]
    fresh = SchemaRegistry(settings.schema_registry_url)
    decoder = BatchDecoder(fresh, reader_schema())
    decoder.learn(f"{scratch_subject}.absent")
    assert fresh.known() == {}
    decoder.learn(scratch_subject)
    assert {i: json.loads(s) for i, s in fresh.known().items()} == {ids[0]: V1, ids[1]: V2}


def test_ingest_of_an_incompatible_schema_stops_before_producing(
    settings: Settings, tmp_path: Path
) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for version in ("case.v1.avsc", "case.v2.avsc"):
        (schemas / version).write_text((SCHEMAS / version).read_text())
    (schemas / "case.v3.avsc").write_text(json.dumps(_breaks(_retype)))
    topic = f"sf311.test.evolution.{uuid.uuid4().hex[:10]}"
    scratch = settings.model_copy(
        update={"kafka_topic": topic, "kafka_dlq_topic": f"{topic}.dlq", "schemas_dir": schemas}
    )
    registry = SchemaRegistry(settings.schema_registry_url)
    registry.register(f"{topic}-value", V2)
    cases = tmp_path / "cases.jsonl"
    write_cases(cases, rows=50, seed=3)
    try:
        with pytest.raises(IncompatibleSchema, match="field 'requested_datetime' changed type"):
            ingest_file(scratch, cases, progress=False)
        consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                             "group.id": f"test-{uuid.uuid4().hex}"})  # fmt: skip
        try:
            for t in (topic, f"{topic}.dlq"):
                partitions = consumer.list_topics(t, timeout=10).topics[t].partitions
                ends = [consumer.get_watermark_offsets(TopicPartition(t, p))[1] for p in partitions]
                assert sum(ends) == 0
        finally:
            consumer.close()
    finally:
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
        made = [t for t in (topic, f"{topic}.dlq") if t in admin.list_topics(timeout=10).topics]
        for future in admin.delete_topics(made).values() if made else []:
            future.result()
        registry.delete(f"{topic}-value")


def test_a_silver_table_written_before_v2_gains_the_column_on_merge(spark, tmp_path: Path):
    def rows(ids: range, step: int, stamp: datetime | None):
        values = [
            dict.fromkeys(SILVER_COLUMNS.fieldNames())
            | {
                "service_request_id": i,
                "requested_datetime": T0,
                "updated_datetime": T0 + timedelta(hours=step),
                "status_notes": f"v{step}",
                "source_updated_at": stamp,
            }
            for i in ids
        ]
        frame_ = spark.createDataFrame(values, SILVER_COLUMNS)
        # The columns curated_rows adds that the merge reads.
        return frame_.withColumns(
            {
                "kafka_timestamp": frame_["updated_datetime"],
                "batch_id": F.lit(step).cast("long"),
                "case_hash": silver.case_hash(frame_.columns),
                "deleted_at": F.lit(None).cast("timestamp"),
            }
        )

    path = str(tmp_path / "silver")
    old = rows(range(1, 11), 1, None).drop("source_updated_at")
    assert silver.merge_silver(spark, old, path, "test", 0) == "append"
    assert "source_updated_at" not in spark.read.format("delta").load(path).columns
    stamp = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert silver.merge_silver(spark, rows(range(6, 16), 2, stamp), path, "test", 1) == (
        "append+merge"
    )
    got = {
        r.service_request_id: (r.status_notes, r.source_updated_at)
        for r in spark.read.format("delta").load(path).collect()
    }
    naive = stamp.replace(tzinfo=None)
    assert got == {i: ("v1", None) if i < 6 else ("v2", naive) for i in range(1, 16)}
