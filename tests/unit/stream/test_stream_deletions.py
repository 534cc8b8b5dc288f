"""Deletions at the source: Kafka tombstones (a key, no value) mark silver's cases deleted,
never quarantined; a version that arrives later restores the case; a replay rebuilds the marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from sf311.contract.schema import reader_schema
from sf311.lakehouse import bronze, decode, silver
from sf311.lakehouse.batch import spark_figures
from sf311.lakehouse.figures import arrow_figures

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def validated(messages, wire):
    """Return a function: (key, value) pairs sent from `start` on, one a second -> validated
    bronze rows, v1 registered as id 1."""

    def build(pairs, start=T0):
        keys, values = [k for k, _ in pairs], [v for _, v in pairs]
        framed = decode.frame(messages(values, start, keys))
        decoded = decode.decode(framed, {1: wire.v1_text}, reader_schema())
        return silver.validate(bronze.bronze_rows(decoded, 3, AS_OF), AS_OF)

    return build


def case(wire, sid, **fields):
    """Return the (key, framed value) of a case version, keyed by its id as ingest keys it."""
    return str(sid).encode(), wire.frame(1, wire.v1, wire.case(sid, **fields))


def gone(sid):
    """Return the tombstone of a case id."""
    return str(sid).encode(), None


def test_a_tombstone_is_a_deletion_never_a_quarantined_message(validated, wire):
    rows = validated([case(wire, 1), gone(1), (b"x", None), (None, None)])
    reasons = [r.reason for r in rows.orderBy("offset").collect()]
    # A keyed tombstone deletes; one whose key names no id is quarantined as a missing id.
    assert reasons == [None, silver.DELETION, silver.MISSING_ID, decode.NOT_FRAMED]
    assert [r.decode_error for r in rows.orderBy("offset").collect()][:2] == [None, None]
    quarantined = silver.quarantine_rows(rows).orderBy("offset").collect()
    assert [q.reason for q in quarantined] == [silver.MISSING_ID, decode.NOT_FRAMED]
    assert [r.service_request_id for r in silver.curated_rows(rows).collect()] == [1]
    # Flattened for the warehouse, a tombstone names its case by its key.
    flat = silver.flatten(rows).orderBy("kafka_offset").collect()
    assert [r.service_request_id for r in flat] == [1, 1, None, None]

    figures, _ = spark_figures(rows)
    assert (figures.rows_in, figures.rows_valid, figures.rows_deleted) == (4, 1, 1)
    assert figures.rows_quarantined == 2
    collected = pa.table(
        {
            "reason": [None, silver.DELETION, silver.MISSING_ID, decode.NOT_FRAMED],
            "kafka_timestamp": [T0 + timedelta(seconds=s) for s in range(4)],
            "service_request_id": [1, None, None, None],
        }
    )
    assert arrow_figures(collected) == figures


def test_deletions_keep_a_tombstone_only_when_no_version_arrived_after_it(validated, wire):
    sent = [case(wire, 1), gone(1), gone(2), case(wire, 2), gone(3), gone(3), gone(4), gone(4)]
    rows = validated([*sent, case(wire, 4)])
    found = {r.service_request_id: r.deleted_at for r in silver.deletions(rows).collect()}
    at = {n: (T0 + timedelta(seconds=n)).replace(tzinfo=None) for n in range(9)}
    # 1 deleted after its version; 2 and 4 came back; 3 keeps its newest tombstone.
    assert {k: v.replace(tzinfo=None) for k, v in found.items()} == {1: at[1], 3: at[5]}


def _silver(spark, path):
    rows = spark.read.format("delta").load(path).collect()
    return {r.service_request_id: (r.status_notes, r.deleted_at) for r in rows}


def test_marks_hold_through_redone_batches_and_old_versions_and_a_later_version_restores(
    validated, wire, spark, tmp_path
):
    path = str(tmp_path / "silver")
    first = [case(wire, n, status_notes="v1") for n in (1, 2, 3)]
    batch0 = validated(first)
    # A table written before deleted_at existed gains it at its first deletion.
    silver.overwrite_silver(spark, silver.curated_rows(batch0).drop("deleted_at"), path)
    assert "deleted_at" not in spark.read.format("delta").load(path).columns

    later = T0 + timedelta(hours=1)
    batch1 = validated([gone(1), gone(2), gone(9)], start=later)
    for _ in range(2):  # redone after a crash: the first mark stays
        silver.mark_deleted(spark, path, silver.deletions(batch1))
        marks = _silver(spark, path)
        assert set(marks) == {1, 2, 3}  # a tombstone of a case silver lacks adds nothing
        assert [n for n, (_, d) in marks.items() if d is not None] == [1, 2]
        assert marks[1][1].replace(tzinfo=None) == later.replace(tzinfo=None)

    # Kafka delivers batch 0 again (its old versions) and the re-extract of case 2, identical
    # but sent after the tombstone: case 1 stays deleted, case 2 is back.
    batch2 = validated([case(wire, 2, status_notes="v1")], start=later + timedelta(hours=1))
    for rows in (batch0, batch2):
        silver.merge_silver(spark, silver.curated_rows(rows), path, "app", 9)
    after = _silver(spark, path)
    assert {n: d is not None for n, (_, d) in after.items()} == {1: True, 2: False, 3: False}

    # A replay of every message in one frame rebuilds the same marks.
    everything = batch0.unionByName(batch1).unionByName(batch2)
    rebuilt = silver.with_deletions(silver.curated_rows(everything), silver.deletions(everything))
    assert {r.service_request_id: r.deleted_at for r in rebuilt.collect()} == {
        n: d for n, (_, d) in after.items()
    }
    assert silver.live(spark.read.format("delta").load(path)).count() == 2
    # Gold reads the change feed across the added column: the marks and the restore are in it.
    changes = (
        spark.read.format("delta").option("readChangeFeed", "true")
        .option("startingVersion", 1).load(path)
        .where("_change_type = 'update_postimage'").collect()
    )  # fmt: skip
    assert sorted(r.service_request_id for r in changes) == [1, 2, 2]
