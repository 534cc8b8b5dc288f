"""The sinks: one list that the streaming job's queries and `sf311 replay` both write."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest

from sf311.lakehouse import bronze, decode, silver, sinks
from sf311.lakehouse.batch import Rebuild
from sf311.lakehouse.checkpoints import LAKE_QUERY, WAREHOUSE_QUERY
from sf311.lakehouse.gold_tables import gold_paths
from sf311.lakehouse.replay import replay
from sf311.lakehouse.sinks import WarehouseSink, lake_sinks
from sf311.lakehouse.stream import Streams, served_sinks
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


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gold(spark, monkeypatch, outcomes: list) -> tuple[sinks.GoldSink, _Clock, list[bool]]:
    """Return a GoldSink whose update() pops outcomes (raising an exception one), its clock and
    the `full` flag of each update called."""
    clock = _Clock()
    monkeypatch.setattr(sinks.time, "monotonic", clock)
    gold = sinks.GoldSink(spark, load_settings(stream_gold_seconds=60))
    calls: list[bool] = []

    def update(full: bool, retry_seconds: float):
        calls.append(full)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(gold, "update", update)
    return gold, clock, calls


def test_gold_refreshes_between_batches_at_most_every_stream_gold_seconds(spark, monkeypatch):
    changed = {"gold_changed": 3, "gold_deleted": 0}
    gold, clock, calls = _gold(spark, monkeypatch, [changed, None, changed])
    gold.idle()
    clock.now += 59
    gold.idle()
    assert calls == [False]
    clock.now += 1
    gold.idle()
    gold.finish()  # a bounded run's end refreshes whatever the cadence
    assert calls == [False, False, False]


def test_gold_skips_a_refresh_while_postgres_is_down(spark, monkeypatch, caplog):
    down = psycopg.OperationalError("connection refused\nmore")
    gold, clock, calls = _gold(spark, monkeypatch, [down, {"gold_changed": 1, "gold_deleted": 0}])
    gold.idle()
    assert "gold: Postgres unreachable (connection refused)" in caplog.text
    clock.now += 60
    gold.idle()
    assert calls == [False, False]


def test_gold_compaction_waits_for_no_running_refresh(spark, monkeypatch):
    compacted: list[str] = []
    monkeypatch.setattr(sinks, "compact", lambda spark, path: compacted.append(path))
    gold = sinks.GoldSink(spark, load_settings())
    running = threading.Event()
    done = threading.Event()

    def update(full: bool, retry_seconds: float) -> None:
        running.set()
        done.wait(30)

    monkeypatch.setattr(gold, "update", update)
    refresh = threading.Thread(target=gold.finish)
    refresh.start()
    assert running.wait(30)
    gold.compact()  # the lake query's thread must not wait for the refresh, nor race it
    assert compacted == []
    done.set()
    refresh.join(30)
    gold.compact()
    assert len(compacted) == len(gold_paths(gold.settings))


class _Query:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.isActive = False

    def awaitTermination(self, timeout: float | None = None) -> None:
        return None

    def exception(self) -> Exception | None:
        return self.error


class _Finished(sinks.Sink):
    name = "finished"

    def __init__(self) -> None:
        self.finished = 0

    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        return {}

    def finish(self) -> None:
        self.finished += 1


def test_a_bounded_run_finishes_its_sinks_only_after_every_query_succeeded():
    done = _Finished()
    Streams([_Query(), _Query()], [done]).wait(once=True)
    assert done.finished == 1
    failed = _Finished()
    with pytest.raises(RuntimeError):
        Streams([_Query(), _Query(RuntimeError("batch failed"))], [failed]).wait(once=True)
    assert failed.finished == 0


def test_gold_has_nothing_to_refresh_before_silver_s_first_batch(spark, tmp_path, monkeypatch):
    # The job's first idle() comes a second after its start, on a lake with no silver yet.
    def asked(*args, **kwargs):
        raise AssertionError("Postgres asked before silver exists")

    monkeypatch.setattr(sinks, "retrying", asked)
    settings = load_settings(lake_path=str(tmp_path / "lake"))
    assert sinks.GoldSink(spark, settings).refresh() is None
