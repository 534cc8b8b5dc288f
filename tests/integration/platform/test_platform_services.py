"""Each real service of the stack does its job: registry, Kafka, Spark, Delta, Postgres, MLflow."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro
from pyspark.testing import assertDataFrameEqual

from sf311.settings import Settings

POINT_SCHEMA = {
    "type": "record",
    "name": "PlatformProbe",
    "namespace": "io.sf311.tests",
    "doc": "A tiny record to prove the registry -> Kafka -> Spark path.",
    "fields": [
        {"name": "id", "type": "long", "doc": "Row id."},
        {"name": "label", "type": ["null", "string"], "default": None, "doc": "A label."},
    ],
}


@pytest.fixture
def topic(settings: Settings):
    name = f"platform-probe-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


def test_avro_through_registry_kafka_and_spark_from_avro(settings: Settings, spark, topic: str):
    registry = SchemaRegistryClient({"url": settings.schema_registry_url})
    serializer = AvroSerializer(
        registry,
        json.dumps(POINT_SCHEMA),
        conf={"subject.name.strategy.type": "TOPIC"},
    )
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    rows = [(1, "pothole"), (2, None), (3, "graffiti")]
    for row_id, label in rows:
        value = serializer(
            {"id": row_id, "label": label}, SerializationContext(topic, MessageField.VALUE)
        )
        producer.produce(topic, key=str(row_id), value=value)
    assert producer.flush(30) == 0

    registered = registry.get_latest_version(f"{topic}-value")
    framed = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    header = framed.select(
        F.expr("substring(value, 1, 1)").alias("magic"),
        F.conv(F.hex(F.expr("substring(value, 2, 4)")), 16, 10).cast("int").alias("schema_id"),
    ).distinct()
    assert [tuple(r) for r in header.collect()] == [(bytearray(b"\x00"), registered.schema_id)]

    decoded = framed.select(
        from_avro(F.expr("substring(value, 6)"), json.dumps(POINT_SCHEMA)).alias("r")
    ).select("r.*")
    expected = spark.createDataFrame(rows, "id long, label string")
    assertDataFrameEqual(decoded, expected)


def test_delta_table_written_and_read_back(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "probe")
    first = spark.createDataFrame([(1, "a"), (2, "b")], "id long, v string")
    first.write.format("delta").save(path)
    spark.createDataFrame([(3, "c")], "id long, v string").write.format("delta").mode(
        "append"
    ).save(path)
    table = spark.read.format("delta").load(path)
    assertDataFrameEqual(table, spark.createDataFrame([(1, "a"), (2, "b"), (3, "c")], table.schema))
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version").collect()
    assert sorted(r.version for r in history) == [0, 1]


def test_analyst_reads_what_the_owner_writes_and_cannot_write(settings: Settings) -> None:
    table = f"platform_probe_{uuid.uuid4().hex[:8]}"
    owner_dsn = settings.postgres_dsn.get_secret_value()
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        owner.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
    try:
        with psycopg.connect(settings.analyst_dsn.get_secret_value()) as analyst:
            rows = analyst.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()
            assert rows == [(1, "a"), (2, "b")]
            analyst.rollback()
            for stmt in (
                f"INSERT INTO {table} VALUES (3, 'c')",
                f"DELETE FROM {table}",
                "CREATE TABLE analyst_probe (id int)",
            ):
                with pytest.raises(
                    (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)
                ):
                    analyst.execute(stmt)
                analyst.rollback()
            # Even with read-only switched off for the session, grants still forbid writing.
            analyst.execute("SET default_transaction_read_only = off")
            analyst.commit()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                analyst.execute(f"UPDATE {table} SET v = 'x'")
    finally:
        with psycopg.connect(owner_dsn, autocommit=True) as owner:
            owner.execute(f"DROP TABLE {table}")


def test_mlflow_run_logged_and_read_back(settings: Settings, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    experiment = f"platform-probe-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(experiment)
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "trees", "40")
    client.log_metric(run.info.run_id, "mae_log", 1.21)
    note = tmp_path / "note.txt"
    note.write_text("hello from sf311")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    again = client.get_run(run.info.run_id)
    assert again.data.params == {"trees": "40"}
    assert again.data.metrics == {"mae_log": 1.21}
    assert again.info.status == "FINISHED"
    fetched = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "out"))
    assert Path(fetched).read_text() == "hello from sf311"
    client.delete_experiment(experiment_id)


def test_kafka_topics_of_the_pipeline_exist(settings: Settings) -> None:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "platform-probe"}
    )
    topics = consumer.list_topics(timeout=10).topics
    consumer.close()
    for name in (settings.kafka_topic, settings.kafka_dlq_topic):
        assert len(topics[name].partitions) == settings.kafka_partitions
