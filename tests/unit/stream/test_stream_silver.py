"""Validation, quarantine, newest-wins curation and the guarded MERGE into silver.cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from delta.tables import DeltaTable
from pyspark.testing import assertDataFrameEqual

from sf311.contract.schema import reader_schema
from sf311.lakehouse import bronze, decode, silver
from sf311.lakehouse.batch import collect_warehouse, superseded

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


def ts(day: int, hour: int = 0) -> datetime:
    return datetime(2019, 3, day, hour, tzinfo=UTC)


@pytest.fixture
def to_bronze(messages, wire):
    """Return a function: framed values -> bronze rows of batch 3, v1 registered as id 1, read
    as the stream reads them: into the newest case schema."""

    def build(values):
        decoded = decode.decode(decode.frame(messages(values)), {1: wire.v1_text}, reader_schema())
        return bronze.bronze_rows(decoded, 3, AS_OF)

    return build


def test_validate_names_the_reason_of_each_message_that_cannot_be_a_case(to_bronze, wire):
    v1 = wire.v1
    values = [
        wire.frame(1, v1, wire.case(1)),
        b"garbage",
        wire.frame(1, v1, wire.case(0)),
        wire.frame(1, v1, wire.case(3, requested_datetime=datetime(1970, 1, 1, tzinfo=UTC))),
        wire.frame(1, v1, wire.case(4, requested_datetime=AS_OF + timedelta(days=2))),
        wire.frame(1, v1, wire.case(5, updated_datetime=AS_OF + timedelta(days=3))),
        wire.frame(1, v1, wire.case(6, closed_date=datetime(1999, 1, 1, tzinfo=UTC))),
        wire.frame(1, v1, wire.case(7, requested_datetime=ts(5), closed_date=ts(4))),
        wire.frame(2, v1, wire.case(8)),
    ]
    rows = silver.validate(to_bronze(values), AS_OF).orderBy("offset").collect()
    # Impossible updated/closed instants and a closure before the opening are flags, not reasons.
    assert [r.reason for r in rows] == [
        None,
        decode.NOT_FRAMED,
        silver.MISSING_ID,
        silver.BAD_REQUESTED,
        silver.BAD_REQUESTED,
        None,
        None,
        None,
        decode.UNKNOWN_SCHEMA_ID,
    ]


def test_quarantine_keeps_raw_bytes_and_the_valid_rows_still_curate(to_bronze, wire):
    bad = wire.frame(1, wire.v1, wire.case(6, requested_datetime=AS_OF + timedelta(days=2)))
    closed_early = wire.case(7, requested_datetime=ts(5), closed_date=ts(4))
    values = [wire.frame(1, wire.v1, wire.case(1)), bad, b"\x00\x00",
              wire.frame(1, wire.v1, closed_early)]  # fmt: skip
    validated = silver.validate(to_bronze(values), AS_OF)
    quarantined = silver.quarantine_rows(validated).orderBy("offset").collect()
    assert [(q.reason, q.service_request_id, bytes(q.value)) for q in quarantined] == [
        (silver.BAD_REQUESTED, 6, bad),
        (decode.NOT_FRAMED, None, b"\x00\x00"),
    ]
    assert quarantined[0].batch_id == 3
    curated = silver.curated_rows(validated).orderBy("service_request_id").collect()
    assert [r.service_request_id for r in curated] == [1, 7]


@pytest.mark.parametrize("collected", [False, True], ids=["window", "superseded-by-driver"])
def test_curated_rows_keep_the_newest_version_and_derive_resolution_hours(
    to_bronze, wire, spark, collected
):
    v1 = wire.v1
    values = [
        wire.frame(1, v1, wire.case(1, updated_datetime=ts(2))),
        wire.frame(1, v1, wire.case(1, updated_datetime=ts(9), closed_date=ts(3, 5),
                                    requested_datetime=ts(1), status_description="Closed")),
        wire.frame(1, v1, wire.case(1, updated_datetime=ts(4))),
        wire.frame(1, v1, wire.case(2, updated_datetime=ts(6), status_notes="first")),
        wire.frame(1, v1, wire.case(2, updated_datetime=ts(6), status_notes="second")),
        wire.frame(1, v1, wire.case(3, updated_datetime=None, requested_datetime=ts(1),
                                    closed_date=ts(1, 12))),
    ]  # fmt: skip
    validated = silver.validate(to_bronze(values), AS_OF)
    replaced = None
    if collected:
        replaced = superseded(collect_warehouse(validated)[0])
        assert replaced.num_rows == 3  # two older versions of case 1, the first of case 2
    curated = silver.curated_rows(validated, replaced)
    got = curated.select(
        "service_request_id", "updated_datetime", "status_notes", "resolution_hours", "kafka_offset"
    )
    expected = spark.createDataFrame(
        [(1, ts(9), None, 53.0, 1), (2, ts(6), "second", None, 4), (3, ts(1, 12), None, 12.0, 5)],
        "service_request_id long, updated_datetime timestamp, status_notes string, "
        "resolution_hours double, kafka_offset long",
    )
    assertDataFrameEqual(got, expected)


@pytest.fixture
def curated(to_bronze, wire):
    """Return a function: case records -> their curated rows, framed with v1 as id 1."""

    def build(*records):
        values = [wire.frame(1, wire.v1, r) for r in records]
        return silver.curated_rows(silver.validate(to_bronze(values), AS_OF))

    return build


def _silver_ids(spark, path):
    return {
        r.service_request_id: (r.updated_datetime.replace(tzinfo=UTC), r.status_notes)
        for r in spark.read.format("delta").load(path).collect()
    }


def test_merge_applies_only_newer_versions_and_replays_change_nothing(
    curated, wire, spark, tmp_path
):
    path = str(tmp_path / "silver")

    first = curated(wire.case(1, updated_datetime=ts(5), status_notes="v5"),
                    wire.case(2, updated_datetime=ts(5), status_notes="v5"))  # fmt: skip
    assert silver.merge_silver(spark, first, path, "app", 0) == "append"
    assert silver.merge_silver(spark, first, path, "app", 0) == "merge"

    second = curated(wire.case(1, updated_datetime=ts(4), status_notes="older"),
                     wire.case(2, updated_datetime=ts(6), status_notes="v6"),
                     wire.case(3, updated_datetime=ts(1), status_notes="new"))  # fmt: skip
    # Case 3 is above the table's highest id: appended; 1 and 2 go through the MERGE.
    assert silver.merge_silver(spark, second, path, "app", 1) == "append+merge"
    expected = {1: (ts(5), "v5"), 2: (ts(6), "v6"), 3: (ts(1), "new")}
    assert _silver_ids(spark, path) == expected

    assert silver.merge_silver(spark, second, path, "app", 1) == "merge"
    silver.merge_silver(spark, first, path, "app", 0)
    assert _silver_ids(spark, path) == expected
    assert spark.read.format("delta").load(path).count() == 3

    third = curated(wire.case(4, updated_datetime=ts(2), status_notes="new"),
                    wire.case(5, updated_datetime=ts(2), status_notes="new"))  # fmt: skip
    assert silver.merge_silver(spark, third, path, "app", 2) == "append"
    assert silver.merge_silver(spark, third, path, "app", 2) == "merge"
    assert spark.read.format("delta").load(path).count() == 5


def test_a_batch_replayed_after_its_append_committed_still_merges_its_updates(
    curated, wire, spark, tmp_path
):
    path = str(tmp_path / "silver")

    silver.merge_silver(spark, curated(wire.case(1, updated_datetime=ts(5))), path, "app", 0)
    batch = curated(wire.case(1, updated_datetime=ts(6), status_notes="v6"),
                    wire.case(2, updated_datetime=ts(6), status_notes="new"))  # fmt: skip
    # The job died after the append of batch 1 (case 2) committed, before its MERGE (case 1).
    batch.where("service_request_id = 2").write.format("delta").mode("append").option(
        "txnAppId", "app"
    ).option("txnVersion", 1).save(path)
    assert silver.merge_silver(spark, batch, path, "app", 1) == "merge"
    assert _silver_ids(spark, path) == {1: (ts(6), "v6"), 2: (ts(6), "new")}
    assert spark.read.format("delta").load(path).count() == 2


def test_a_new_case_below_the_highest_id_is_appended_beside_the_merge(
    curated, wire, spark, tmp_path
):
    path = str(tmp_path / "silver")

    first = curated(wire.case(1, updated_datetime=ts(5)), wire.case(5, updated_datetime=ts(5)))
    silver.merge_silver(spark, first, path, "app", 0)
    batch = curated(wire.case(1, updated_datetime=ts(6), status_notes="v6"),
                    wire.case(3, updated_datetime=ts(2), status_notes="new"))  # fmt: skip
    # Case 3 lies below the highest id (5) but silver lacks it: appended, not merged.
    assert silver.merge_silver(spark, batch, path, "app", 1) == "append+merge"
    assert _silver_ids(spark, path) == {1: (ts(6), "v6"), 3: (ts(2), "new"), 5: (ts(5), None)}
    assert silver.merge_silver(spark, batch, path, "app", 1) == "merge"
    assert spark.read.format("delta").load(path).count() == 3


def test_a_merge_given_the_validated_batch_curates_only_its_cases_with_the_same_result(
    to_bronze, wire, spark, tmp_path
):
    def validated(*records):
        return silver.validate(to_bronze([wire.frame(1, wire.v1, r) for r in records]), AS_OF)

    first = validated(*[wire.case(i, updated_datetime=ts(5), status_notes="v5") for i in (1, 2, 5)])
    # Two versions of case 1 in one batch (the newest wins), an older one of 2, a new case 3.
    batch = validated(wire.case(1, updated_datetime=ts(7), status_notes="v7"),
                      wire.case(1, updated_datetime=ts(6), status_notes="v6"),
                      wire.case(2, updated_datetime=ts(4), status_notes="older"),
                      wire.case(3, updated_datetime=ts(2), status_notes="new"))  # fmt: skip
    tables = {}
    for given in (False, True):
        path = str(tmp_path / f"silver-{given}")
        silver.merge_silver(spark, silver.curated_rows(first), path, "app", 0)
        rows = silver.curated_rows(batch)
        action = silver.merge_silver(
            spark, rows, path, "app", 1, validated=batch if given else None
        )
        assert action == "append+merge"
        tables[given] = spark.read.format("delta").load(path).orderBy("service_request_id")
    expected = {1: (ts(7), "v7"), 2: (ts(5), "v5"), 3: (ts(2), "new"), 5: (ts(5), "v5")}
    assert _silver_ids(spark, str(tmp_path / "silver-True")) == expected
    assertDataFrameEqual(tables[True], tables[False])


def test_a_version_at_the_same_instant_replaces_the_stored_one_only_when_it_differs(
    messages, wire, spark, tmp_path
):
    path = str(tmp_path / "silver")
    day = datetime(2026, 1, 1, tzinfo=UTC)

    def curated_at(sent, *records):
        values = [wire.frame(1, wire.v1, r) for r in records]
        framed = decode.frame(messages(values, start=sent))
        raw = bronze.bronze_rows(
            decode.decode(framed, {1: wire.v1_text}, reader_schema()), 3, AS_OF
        )
        return silver.curated_rows(silver.validate(raw, AS_OF))

    stored = [wire.case(i, updated_datetime=ts(5), status_notes="v5") for i in (1, 2)]
    silver.merge_silver(spark, curated_at(day, *stored), path, "app", 0)
    # A day later case 1 comes again unchanged, case 2 changed without a new updated_datetime.
    later = curated_at(day + timedelta(days=1), stored[0],
                    wire.case(2, updated_datetime=ts(5), status_notes="rewritten"))  # fmt: skip
    assert silver.merge_silver(spark, later, path, "app", 1) == "merge"
    assert _silver_ids(spark, path) == {1: (ts(5), "v5"), 2: (ts(5), "rewritten")}
    merged = DeltaTable.forPath(spark, path).history(1).first().operationMetrics
    assert merged["numTargetRowsUpdated"] == "1"


def test_case_hash_tells_where_nulls_are_and_takes_a_missing_field_for_null(spark):
    rows = spark.createDataFrame(
        [(1, "x", None), (1, None, "x")],
        "service_request_id long, status_description string, status_notes string",
    )
    fields = ["service_request_id", "status_description", "status_notes"]
    hashes = rows.select(
        silver.case_hash(fields).alias("every"), silver.case_hash(fields[:2]).alias("fewer")
    ).collect()
    assert hashes[0].every != hashes[1].every
    # A version written before a field existed lacks it: it hashes as that field's null.
    assert hashes[0].every == hashes[0].fewer
    assert hashes[1].every != hashes[1].fewer


def test_append_quarantine_is_idempotent_per_batch(to_bronze, spark, tmp_path):
    path = str(tmp_path / "quarantine")
    rows = silver.quarantine_rows(silver.validate(to_bronze([b"x", b"y"]), AS_OF))
    for _ in range(2):
        silver.append_quarantine(rows, path, "app", 7)
    assert spark.read.format("delta").load(path).count() == 2
    silver.append_quarantine(rows, path, "app", 8)
    assert spark.read.format("delta").load(path).count() == 4
