"""bronze.cases_raw: every message as received, appended once per batch."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sf311.lakehouse import bronze, decode

INGESTED = datetime(2026, 2, 3, 23, 30, tzinfo=UTC)


def test_bronze_rows_keep_every_message_with_its_kafka_coordinates(messages, wire):
    good = wire.frame(1, wire.v1, wire.case(42))
    decoded = decode.decode(decode.frame(messages([good, b"junk"])), {1: wire.v1_text},
                            wire.v1_text)  # fmt: skip
    rows = bronze.bronze_rows(decoded, 5, INGESTED).orderBy("offset").collect()
    assert [list(r.asDict()) for r in rows][0] == bronze.COLUMNS
    assert [bytes(r.value) for r in rows] == [good, b"junk"]
    assert [r.case.service_request_id if r.case else None for r in rows] == [42, None]
    assert [r.decode_error for r in rows] == [None, decode.NOT_FRAMED]
    assert {(r.batch_id, r.ingest_date, r.topic, r.partition) for r in rows} == {
        (5, date(2026, 2, 3), "sf311.cases", 0)
    }


def test_write_bronze_skips_a_batch_it_already_committed(messages, wire, spark, tmp_path):
    path = str(tmp_path / "bronze")
    decoded = decode.decode(decode.frame(messages([b"a", b"b", b"c"])), {}, wire.v1_text)
    rows = bronze.bronze_rows(decoded, 0, INGESTED)
    bronze.write_bronze(rows, path, "app-1", 0)
    bronze.write_bronze(rows, path, "app-1", 0)
    assert spark.read.format("delta").load(path).count() == 3
    bronze.write_bronze(rows, path, "app-1", 1)
    bronze.write_bronze(rows, path, "app-2", 0)
    assert spark.read.format("delta").load(path).count() == 9
    partitions = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first().partitionColumns
    assert partitions == ["ingest_date"]
