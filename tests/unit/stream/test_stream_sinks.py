"""The sinks: one list that the streaming job's queries and `sf311 replay` both write."""

from __future__ import annotations

from datetime import UTC, datetime

from sf311.lakehouse import bronze, decode, silver, sinks
from sf311.lakehouse.batch import Rebuild
from sf311.lakehouse.checkpoints import LAKE_QUERY, WAREHOUSE_QUERY
from sf311.lakehouse.replay import replay
from sf311.lakehouse.sinks import WarehouseSink, lake_sinks
from sf311.lakehouse.stream import served_sinks
from sf311.settings import load_settings

INGESTED = datetime(2026, 2, 3, 23, 30, tzinfo=UTC)


def _kinds(served: list[sinks.Sink]) -> list[type]:
    return [type(s) for s in served]


def test_the_queries_share_out_the_one_list_of_sinks(spark, settings):
    every = lake_sinks(spark, settings)
    assert _kinds(every) == list(sinks.SINKS)
    assert [s.name for s in every] == ["bronze", "quarantine", "silver", "gold", "warehouse"]
    bounded = served_sinks(every, once=True)
    assert _kinds(bounded[LAKE_QUERY]) == list(sinks.SINKS)
    streaming = served_sinks(every, once=False)
    # Streaming, each sink is written by exactly one query.
    assert _kinds(streaming[LAKE_QUERY]) == [sinks.BronzeSink, sinks.QuarantineSink,
                                             sinks.SilverSink, sinks.GoldSink]  # fmt: skip
    assert _kinds(streaming[WAREHOUSE_QUERY]) == [sinks.WarehouseSink]


class _Registry:
    def __init__(self, schemas: dict[int, str]) -> None:
        self.schemas = schemas

    def writer_schemas(self, ids) -> dict[int, str]:
        return {i: self.schemas[i] for i in ids if i in self.schemas}


def test_replay_rebuilds_every_sink_of_the_list_from_bronze(
    spark, messages, wire, tmp_path, monkeypatch
):
    settings = load_settings(lake_path=str(tmp_path / "lake"))
    values = [
        wire.frame(1, wire.v1, wire.case(5, status_notes="old")),
        wire.frame(1, wire.v1, wire.case(6)),
        wire.frame(1, wire.v1, wire.case(5, updated_datetime=datetime(2019, 3, 9, tzinfo=UTC),
                                         status_notes="newer")),
        b"junk",
    ]  # fmt: skip
    decoded = decode.decode(decode.frame(messages(values)), {1: wire.v1_text}, wire.v1_text)
    bronze.write_bronze(
        bronze.bronze_rows(decoded, 0, INGESTED), settings.table_path(bronze.TABLE), "app", 0
    )
    handed: list[tuple] = []

    class Warehouse(WarehouseSink):
        def replace(self, rebuild: Rebuild) -> dict[str, int]:
            ids = sorted(r.service_request_id for r in rebuild.curated.collect())
            handed.append((rebuild.cases, ids, rebuild.ends))
            return {"postgres_changed": 2, "postgres_deleted": 0, "postgres_rows": 2}

    # Gold has its own test; here it would mirror into the real warehouse's gold schema.
    class Gold(sinks.GoldSink):
        def replace(self, rebuild: Rebuild) -> dict[str, int]:
            return {}

    every = tuple({WarehouseSink: Warehouse, sinks.GoldSink: Gold}.get(s, s) for s in sinks.SINKS)
    monkeypatch.setattr(sinks, "SINKS", every)

    result = replay(spark, settings, _Registry({1: wire.v1_text}))

    assert (result.bronze_rows, result.messages, result.silver_rows, result.quarantined) == (
        4, 4, 2, 1,
    )  # fmt: skip
    assert result.postgres_rows == 2
    cases = spark.read.format("delta").load(settings.table_path(silver.TABLE)).collect()
    assert sorted((c.service_request_id, c.status_notes) for c in cases) == [
        (5, "newer"),
        (6, None),
    ]
    quarantined = spark.read.format("delta").load(settings.table_path(silver.QUARANTINE_TABLE))
    assert [(bytes(q.value), q.reason) for q in quarantined.collect()] == [
        (b"junk", decode.NOT_FRAMED)
    ]
    assert handed == [(2, [5, 6], [("sf311.cases", 0, 4)])]
    assert spark.read.format("delta").load(settings.table_path(bronze.TABLE)).count() == 4
