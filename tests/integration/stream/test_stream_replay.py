"""`sf311 replay` rebuilds silver, the quarantine and Postgres `cases` from bronze exactly."""

from __future__ import annotations

import pytest
from delta.tables import DeltaTable
from stream_support import latest, make_versions

from sf311.contract.registry import SchemaRegistry
from sf311.contract.schema import reader_schema
from sf311.lakehouse import decode, silver
from sf311.lakehouse.batch import BatchDecoder
from sf311.lakehouse.checkpoints import checkpoint_location
from sf311.lakehouse.replay import replay
from sf311.lakehouse.sinks import WarehouseSink
from sf311.lakehouse.stream import kafka_messages, run_stream
from sf311.lakehouse.writers import WarehouseWriter

pytestmark = pytest.mark.integration


def test_replay_repairs_damaged_silver_and_postgres_and_is_harmless_twice(spark, stream_env):
    versions = make_versions(ids=600, updates=150, seed=21)
    poison = [(b"poison", b"\x7fnot avro %d" % i) for i in range(3)]
    stream_env.produce_cases(versions)
    stream_env.produce(poison)
    run_stream(spark, stream_env.settings, once=True)
    truth = latest(versions)
    assert stream_env.silver_cases(spark) == truth

    ids = sorted(truth)
    silver_path = stream_env.settings.table_path(silver.TABLE)
    table = DeltaTable.forPath(spark, silver_path)
    table.delete(f"service_request_id IN ({ids[0]}, {ids[1]}, {ids[2]})")
    table.update(f"service_request_id = {ids[3]}", {"status_notes": "'corrupted'"})
    DeltaTable.forPath(spark, stream_env.settings.table_path(silver.QUARANTINE_TABLE)).delete()
    with stream_env.pg() as conn:
        conn.execute("DELETE FROM cases WHERE service_request_id = ANY(%s)", [ids[4:9]])
        conn.execute(
            "UPDATE cases SET status_notes = 'corrupted' WHERE service_request_id = %s", [ids[9]]
        )
        # A row bronze never held: replay must drop it.
        conn.execute(
            "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime,"
            " kafka_timestamp, batch_id) VALUES (1, now(), now(), now(), 0)"
        )
    assert stream_env.silver_cases(spark) != truth
    assert stream_env.pg_cases() != truth

    registry = SchemaRegistry(stream_env.settings.schema_registry_url)
    first = replay(spark, stream_env.settings, registry)

    assert stream_env.silver_cases(spark) == truth
    assert stream_env.pg_cases() == truth
    quarantined = stream_env.delta(spark, silver.QUARANTINE_TABLE).collect()
    assert sorted((bytes(q.value), q.reason) for q in quarantined) == sorted(
        (value, decode.NOT_FRAMED) for _, value in poison
    )
    assert (first.messages, first.silver_rows, first.quarantined) == (
        len(versions) + len(poison), len(truth), len(poison),
    )  # fmt: skip
    assert (first.postgres_changed, first.postgres_deleted, first.postgres_rows) == (
        6, 1, len(truth),
    )  # fmt: skip

    second = replay(spark, stream_env.settings, registry)
    assert (second.postgres_changed, second.postgres_deleted) == (0, 0)
    assert second.silver_rows == len(truth)
    assert stream_env.silver_cases(spark) == truth
    assert stream_env.pg_cases() == truth


def test_a_bounded_run_after_replay_reloads_what_the_warehouse_held_beyond_bronze(
    spark, stream_env
):
    first = make_versions(ids=400, updates=100, seed=31)
    second = make_versions(ids=400, updates=100, seed=32, first_id=4_000_000)
    stream_env.produce_cases(first)
    run_stream(spark, stream_env.settings, once=True)
    stream_env.produce_cases(second)
    # The warehouse query alone takes the second wave, as when streaming with the lake behind.
    settings = stream_env.settings
    writer = WarehouseWriter(
        spark,
        settings,
        BatchDecoder(
            SchemaRegistry(settings.schema_registry_url), reader_schema(settings.schemas_dir)
        ),
        [WarehouseSink(spark, settings)],
    )
    kafka_messages(spark, settings, 10_000).writeStream.queryName(writer.query_name).option(
        "checkpointLocation", checkpoint_location(settings, writer.query_name)
    ).foreachBatch(writer).trigger(availableNow=True).start().awaitTermination()
    truth = latest(first + second)
    assert stream_env.pg_cases() == truth

    replay(spark, settings, SchemaRegistry(settings.schema_registry_url))
    assert stream_env.pg_cases() == latest(first)  # bronze holds the first wave only
    run_stream(spark, settings, once=True)
    assert stream_env.pg_cases() == truth
    assert stream_env.silver_cases(spark) == truth
