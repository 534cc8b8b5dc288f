"""The case_predictions keeper's decisions (when to rescore, what to write) on the paper model;
Postgres is replaced by a recording fake here, the real one is in the integration tests."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from sf311.lakehouse.batch import Batch, WarehouseRows
from sf311.lakehouse.figures import BatchFigures
from sf311.model import predictions
from sf311.model.champion import LoadedModel, ModelService
from sf311.model.predictions import (
    CasePredictions,
    CasePredictionSink,
    OverdueHistorySink,
    prediction_rows,
)
from sf311.model.scorer import Scorer

# 10:00 in San Francisco (PDT): hour 10, so B scores 3.0 and A 2.0 (log1p hours).
OPENED = datetime(2019, 6, 3, 17, tzinfo=UTC)


def _hours(log_hours: float) -> timedelta:
    return timedelta(hours=math.expm1(log_hours))


def test_prediction_rows_add_the_predicted_hours_to_the_opening(paper_scorer: Scorer) -> None:
    service = ModelService(LoadedModel(paper_scorer, "7"))
    cases = [
        {"service_request_id": 1, "requested_datetime": OPENED, "service_name": "A"},
        {"service_request_id": 2, "requested_datetime": OPENED, "service_name": "B"},
    ]
    rows = prediction_rows(service.model, cases, service)
    # A: 2.0 with its own quantiles -0.5, 0.1, 0.5; B: 3.0 with the global -1, 0, +1.
    expected = [
        (1, "7", OPENED + _hours(2.1), OPENED + _hours(1.5), OPENED + _hours(2.5)),
        (2, "7", OPENED + _hours(3.0), OPENED + _hours(2.0), OPENED + _hours(4.0)),
    ]
    for got, want in zip(rows, expected, strict=True):
        assert got[:2] == want[:2]
        for g, w in zip(got[2:], want[2:], strict=True):
            assert abs(g - w) < timedelta(milliseconds=1)


@dataclass
class FakeStore:
    """Postgres as the keeper sees it: open cases by id, what is stored, every call made."""

    open: dict[int, dict[str, Any]] = field(default_factory=dict)
    stored: dict[int, tuple] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        store = predictions.store
        monkeypatch.setattr(predictions.psycopg, "connect", self.connect)
        monkeypatch.setattr(store, "open_cases", self.open_cases)
        monkeypatch.setattr(store, "open_case_slices", self.open_case_slices)
        monkeypatch.setattr(store, "upsert_predictions", self.upsert)
        monkeypatch.setattr(store, "delete_predictions", self.delete)
        monkeypatch.setattr(store, "delete_not_open", self.delete_not_open)
        monkeypatch.setattr(store, "unscored_by", self.unscored_by)

    @contextlib.contextmanager
    def connect(self, dsn: str, autocommit: bool = False):
        yield self

    @contextlib.contextmanager
    def transaction(self):
        yield

    def open_cases(self, conn, ids, columns):
        self.calls.append("open_cases")
        self.asked = list(ids)
        return [self.open[i] for i in ids if i in self.open]

    def open_case_slices(self, conn, columns, rows):
        self.calls.append("open_case_slices")
        cases = [self.open[i] for i in sorted(self.open)]
        for start in range(0, len(cases), rows):
            yield cases[start : start + rows]

    def upsert(self, conn, rows, scored_at):
        changed = [r for r in rows if self.stored.get(r[0]) != r]
        self.stored.update({r[0]: r for r in rows})
        return len(changed)

    def delete(self, conn, ids):
        return sum(self.stored.pop(i, None) is not None for i in ids)

    def delete_not_open(self, conn):
        self.calls.append("delete_not_open")
        gone = [i for i in self.stored if i not in self.open]
        return self.delete(conn, gone)

    def unscored_by(self, conn, version):
        self.calls.append("unscored_by")
        return any(self.stored.get(i, (0, None))[1] != version for i in self.open)


class Registry:
    """A champion alias the test moves; `down` makes the check fail as MLflow would."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.version: str | None = None
        self.down = False
        self.probes = 0

    def probe(self) -> str | None:
        self.probes += 1
        if self.down:
            raise ConnectionError("MLflow unreachable")
        return self.version

    def load(self, version: str) -> LoadedModel:
        return LoadedModel(self.scorer, version)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _follow(keeper: CasePredictions):
    keeper.refresh()
    return keeper.catch_up()


def _case(sid: int, name: str = "B") -> dict[str, Any]:
    return {"service_request_id": sid, "requested_datetime": OPENED, "service_name": name}


@pytest.fixture
def world(monkeypatch, paper_scorer):
    fake = FakeStore(open={i: _case(i) for i in (1, 2, 3)})
    fake.install(monkeypatch)
    registry = Registry(paper_scorer)
    clock = Clock()
    service = ModelService(probe=registry.probe, loader=registry.load)
    keeper = CasePredictions("dsn", service, slice_rows=2, check_seconds=30, monotonic=clock)
    return fake, registry, clock, keeper


def test_without_a_champion_nothing_is_written_and_it_is_said_once(world, caplog) -> None:
    fake, registry, clock, keeper = world
    assert _follow(keeper) is None
    assert keeper.update([1, 2]).scored == 0
    clock.now = 31
    assert _follow(keeper) is None
    assert fake.stored == {} and fake.calls == []
    assert sum("no champion model" in r.message for r in caplog.records) == 1


def test_a_new_champion_rescores_every_open_case_once(world) -> None:
    fake, registry, clock, keeper = world
    fake.stored[9] = (9, "old", None, None, None)  # a case closed meanwhile
    registry.version = "7"
    counts = _follow(keeper)
    assert counts is not None and (counts.scored, counts.written, counts.deleted) == (3, 3, 1)
    assert {r[1] for r in fake.stored.values()} == {"7"} and set(fake.stored) == {1, 2, 3}
    # Within check_seconds the alias is not even probed; after, an unchanged alias costs no query.
    probes = registry.probes
    clock.now = 10
    assert _follow(keeper) is None and registry.probes == probes
    clock.now = 31
    fake.calls.clear()
    assert _follow(keeper) is None
    assert registry.probes == probes + 1 and fake.calls == []
    registry.version = "8"
    clock.now = 62
    counts = _follow(keeper)
    assert counts is not None and counts.written == 3
    assert {r[1] for r in fake.stored.values()} == {"8"}


def test_a_restart_finding_every_case_scored_by_the_champion_rescores_nothing(world) -> None:
    fake, registry, clock, keeper = world
    registry.version = "7"
    _follow(keeper)
    fake.calls.clear()
    again = CasePredictions("dsn", keeper.service, slice_rows=2, check_seconds=30)
    assert _follow(again) is None
    assert fake.calls == ["unscored_by"]


def test_registry_down_keeps_the_model_in_service(world) -> None:
    fake, registry, clock, keeper = world
    registry.version = "7"
    _follow(keeper)
    registry.down = True
    clock.now = 31
    assert _follow(keeper) is None
    assert keeper.update([1]).model_version == "7"


def test_update_scores_open_ids_deletes_closed_ones_and_is_idempotent(world) -> None:
    fake, registry, clock, keeper = world
    registry.version = "7"
    keeper.service.refresh()
    first = keeper.update([1, 2, 4])
    assert (first.scored, first.written, first.deleted) == (2, 2, 0)
    assert set(fake.stored) == {1, 2}
    again = keeper.update([1, 2, 4])
    assert (again.scored, again.written, again.deleted) == (2, 0, 0)
    del fake.open[2]  # closed by a later batch
    closed = keeper.update([2])
    assert (closed.scored, closed.written, closed.deleted) == (0, 0, 1)
    assert set(fake.stored) == {1}


def _batch(ids: list[int], closed: set[int] = frozenset()) -> Batch:
    table = pa.table({
        "service_request_id": pa.array(ids, pa.int64()),
        "closed_date": pa.array([OPENED if i in closed else None for i in ids],
                                pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    rows = WarehouseRows(BatchFigures(len(ids), len(ids)), table, [])
    return Batch("q", "id", 0, OPENED, None, rows.figures, 0.0, rows)  # type: ignore[arg-type]


def test_the_sink_follows_the_champion_then_scores_the_batch(world, settings) -> None:
    fake, registry, clock, keeper = world
    sink = CasePredictionSink(None, settings, keeper=keeper)  # type: ignore[arg-type]
    assert not sink.takes(_batch([]))
    batch = _batch([3, 4])
    assert sink.takes(batch)
    registry.version = "7"
    sink.write(batch)
    # The batch first, then the champion's check finds cases 1 and 2 unscored: all rescored.
    assert set(fake.stored) == {1, 2, 3}
    assert fake.calls == ["open_cases", "unscored_by", "open_case_slices", "delete_not_open"]
    fake.calls.clear()
    fake.open[4] = _case(4)
    sink.write(batch)
    assert set(fake.stored) == {1, 2, 3, 4}
    assert fake.calls == ["open_cases"]
    # A due check with the champion unchanged adds no query: cases closed or deleted outside
    # the stream lost their rows in the transaction that changed them (trigger, migration 0015).
    fake.calls.clear()
    probes = registry.probes
    clock.now = 31
    sink.write(_batch([4]))
    assert fake.calls == ["open_cases"] and registry.probes == probes + 1


def test_the_sink_asks_postgres_only_for_the_cases_open_in_the_batch(world, settings) -> None:
    fake, registry, clock, keeper = world
    registry.version = "7"
    _follow(keeper)
    sink = CasePredictionSink(None, settings, keeper=keeper)  # type: ignore[arg-type]
    fake.open[4] = _case(4)
    sink.write(_batch([4, 5, 2], closed={5, 2}))
    assert fake.asked == [4] and 4 in fake.stored
    # A closed version that replaced an open case: its row went with the trigger, not here.
    assert 2 in fake.stored


def test_a_restart_scores_the_batch_without_rescoring_everything(world, settings) -> None:
    fake, registry, clock, keeper = world
    registry.version = "7"
    _follow(keeper)
    fake.open[4] = _case(4)  # landed in `cases` by the batch's warehouse write
    fake.calls.clear()
    restarted = CasePredictions("dsn", keeper.service, slice_rows=2, check_seconds=30)
    sink = CasePredictionSink(None, settings, keeper=restarted)  # type: ignore[arg-type]
    sink.write(_batch([4]))
    assert set(fake.stored) == {1, 2, 3, 4}
    assert fake.calls == ["open_cases", "unscored_by"]


def test_between_batches_a_new_champion_rescores_and_nothing_else_runs(world, settings) -> None:
    fake, registry, clock, keeper = world
    sink = CasePredictionSink(None, settings, keeper=keeper)  # type: ignore[arg-type]
    registry.version = "7"
    sink.idle()
    assert {r[1] for r in fake.stored.values()} == {"7"} and set(fake.stored) == {1, 2, 3}
    # No batch arrives: the moved alias is seen at the next due check all the same.
    registry.version = "8"
    clock.now = 10
    sink.idle()
    assert {r[1] for r in fake.stored.values()} == {"7"}
    clock.now = 31
    sink.idle()
    assert {r[1] for r in fake.stored.values()} == {"8"}
    # A due check with the champion unchanged costs no query: no purge of closed cases' rows.
    fake.calls.clear()
    clock.now = 62
    sink.idle()
    assert fake.calls == [] and registry.probes == 3


def test_between_batches_nothing_runs_while_a_batch_is_written(world, settings) -> None:
    fake, registry, clock, keeper = world
    sink = CasePredictionSink(None, settings, keeper=keeper)  # type: ignore[arg-type]
    registry.version = "7"
    with sink._busy:  # a batch in write() on the query's thread
        sink.idle()
    assert fake.stored == {} and registry.probes == 0


def test_between_batches_postgres_down_is_logged_not_raised(world, settings, monkeypatch,
                                                             caplog) -> None:  # fmt: skip
    fake, registry, clock, keeper = world
    sink = CasePredictionSink(None, settings, keeper=keeper)  # type: ignore[arg-type]
    registry.version = "7"

    def down(*args, **kwargs):
        raise predictions.psycopg.OperationalError("connection refused")

    monkeypatch.setattr(predictions.psycopg, "connect", down)
    sink.idle()
    assert "not checked between batches (connection refused)" in caplog.text
    monkeypatch.setattr(predictions.psycopg, "connect", fake.connect)
    clock.now = 31
    sink.idle()
    assert set(fake.stored) == {1, 2, 3}


def test_overdue_history_is_recorded_every_period_at_the_end_and_after_a_replay(
    settings, monkeypatch, caplog
) -> None:
    recorded: list[float] = []
    clock = Clock()
    monkeypatch.setattr(predictions.psycopg, "connect", lambda dsn: contextlib.nullcontext())
    monkeypatch.setattr(
        predictions.store, "record_statuses", lambda conn: recorded.append(clock.now) or 3
    )
    every = settings.overdue_history_seconds
    sink = OverdueHistorySink(None, settings, monotonic=clock)  # type: ignore[arg-type]
    for now in (0.0, 1.0, every - 1, every, every + 1):
        clock.now = now
        sink.idle()
    assert recorded == [0.0, every]
    sink.finish()
    assert sink.replace(None) == {}  # type: ignore[arg-type]
    assert recorded == [0.0, every, every + 1, every + 1]

    def down(dsn):
        raise predictions.psycopg.OperationalError("connection refused")

    monkeypatch.setattr(predictions.psycopg, "connect", down)
    clock.now = 2 * every
    sink.idle()  # logged, not raised: the stream goes on and the next period records again
    assert "overdue_history not recorded (connection refused)" in caplog.text
