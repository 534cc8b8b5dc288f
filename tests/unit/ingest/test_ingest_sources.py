"""Sources behind one interface: chosen by name, read in blocks, driven alike by ingest runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

import sf311.ingest.run as run
from sf311.contract.schema import latest_schema_path, load_schema
from sf311.ingest.extract import PageBlock
from sf311.ingest.files import RawBatch
from sf311.ingest.produce import ProduceError
from sf311.ingest.records import CaseEncoder
from sf311.ingest.sources import (
    SOURCES,
    Block,
    FileSource,
    SocrataSource,
    Source,
    source_by_name,
)
from sf311.ingest.watermark import Watermark
from sf311.settings import Settings


def row(rid: int, hour: int = 1) -> dict[str, str]:
    return {
        "service_request_id": str(rid),
        "requested_datetime": "2023-11-27T08:00:00.000",
        "updated_datetime": f"2023-11-28T0{hour}:00:00.000",
    }


def test_both_sources_satisfy_the_interface(tmp_path: Path) -> None:
    sources = [FileSource(tmp_path / "x.jsonl"), SocrataSource(Settings())]
    assert all(isinstance(source, Source) for source in sources)
    assert [source.origin for source in sources] == ["file", "socrata"]
    assert sources[0].on_acked is None and callable(sources[1].on_acked)
    assert set(SOURCES) == {"socrata", "file"}


def test_sources_are_chosen_by_name_with_their_arguments(tmp_path: Path) -> None:
    settings = Settings()
    since = datetime(2023, 11, 1)
    socrata = source_by_name("socrata", settings, since=since)
    assert isinstance(socrata, SocrataSource) and socrata.since == since
    file = source_by_name("file", settings, tmp_path / "x.csv")
    assert isinstance(file, FileSource) and file.path == tmp_path / "x.csv"
    with pytest.raises(ValueError, match="unknown source 'ftp'"):
        source_by_name("ftp", settings)
    with pytest.raises(ValueError, match="takes no PATH"):
        source_by_name("socrata", settings, tmp_path / "x.csv")
    with pytest.raises(ValueError, match="takes a PATH and no --since"):
        source_by_name("file", settings, tmp_path / "x.csv", since=since)


@pytest.mark.parametrize(("name", "kind"), [("socrata", SocrataSource), ("file", FileSource)])
def test_ingest_runs_the_source_named(monkeypatch, tmp_path: Path, name: str, kind: type) -> None:
    ran = []
    monkeypatch.setattr(run, "ingest_from", lambda settings, source: ran.append(source))
    run.ingest(Settings(), name, tmp_path / "x.jsonl" if name == "file" else None)
    assert [type(source) for source in ran] == [kind]


def test_a_file_comes_in_blocks_without_marks(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(row(i)) + "\n" for i in range(1, 8)))
    with FileSource(path, progress=False) as source:
        blocks = list(source.iter_blocks(3))
    assert [(b.read, b.mark) for b in blocks] == [(3, None), (3, None), (1, None)]
    assert all(isinstance(b.rows, RawBatch) for b in blocks)


def test_socrata_pages_come_in_blocks_marked_at_each_page_end(soda) -> None:
    _, settings = soda([row(i, hour=i % 5) for i in range(1, 26)], socrata_page_size=10)
    blocks = list(SocrataSource(settings).iter_blocks(4))
    spans = [(b.rows.start, b.rows.stop) for b in blocks if isinstance(b.rows, PageBlock)]
    assert spans == [(0, 4), (4, 8), (8, 10)] * 2 + [(0, 4), (4, 5)]
    assert [b.read for b in blocks] == [4, 4, 2] * 2 + [4, 1]
    marks = [b.mark for b in blocks]
    assert [m is None for m in marks] == [True, True, False] * 2 + [True, False]
    # Keyset order: updated_datetime, then id; the last page ends at the newest row.
    assert marks[-1].position == Watermark(datetime(2023, 11, 28, 4), 24)
    # Only the run's last mark carries :updated_at: its rows come in no order of it.
    assert [m.system_updated_at is not None for m in marks if m] == [False, False, True]


class ListSource:
    """A third source, as a new module would add one: rows from a list, one mark per block."""

    origin = "list"

    def __init__(self, rows: list[dict], fail_after: int | None = None) -> None:
        self.rows = rows
        self.acked: list[int] = []
        self.entered = self.exited = False
        self.fail_after = fail_after

    def on_acked(self, mark: int) -> None:
        self.acked.append(mark)

    def __enter__(self) -> ListSource:
        self.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.exited = True

    def iter_blocks(self, size: int) -> Iterator[Block]:
        for start in range(0, len(self.rows), size):
            if self.fail_after is not None and start >= self.fail_after:
                raise RuntimeError("source broke")
            items = self.rows[start : start + size]
            yield Block(RawBatch("rows", items), len(items), start + len(items))


class FakeProducer:
    """Acknowledges every record at once; records what the run sent and checkpointed."""

    def __init__(self, settings: Settings, on_acked=None) -> None:
        self.on_acked = on_acked
        self.sent: list[bytes | None] = []
        self.produced = self.dead_lettered = 0
        self.closed: list[float] = []

    def send_messages(self, cases, dead) -> None:
        self.sent += [key for key, _ in cases + dead]
        self.produced += len(cases)
        self.dead_lettered += len(dead)

    def checkpoint(self, mark) -> None:
        self.on_acked(mark)

    def close(self, timeout: float = 120.0) -> None:
        self.closed.append(timeout)
        if timeout != 120.0:
            raise ProduceError("not all acknowledged")


@pytest.fixture
def fake_kafka(monkeypatch) -> list[FakeProducer]:
    producers: list[FakeProducer] = []

    def producer(settings: Settings, on_acked=None) -> FakeProducer:
        producers.append(FakeProducer(settings, on_acked))
        return producers[-1]

    encoder = CaseEncoder(load_schema(latest_schema_path()), 3)
    monkeypatch.setattr(run, "ensure_topics", lambda settings, topics: None)
    monkeypatch.setattr(run, "case_encoder", lambda settings: encoder)
    monkeypatch.setattr(run, "CaseProducer", producer)
    monkeypatch.setattr(run, "BATCH_ROWS", 2)
    return producers


def test_any_source_is_driven_the_same_way(fake_kafka) -> None:
    source = ListSource([row(1), row(2), {"service_request_id": "x"}, row(4), row(5)])
    counts = run.ingest_from(Settings(), source)
    assert (counts.read, counts.produced, counts.dead_lettered) == (5, 4, 1)
    (producer,) = fake_kafka
    # Blocks in order; within a block, cases before dead letters.
    assert producer.sent == [b"1", b"2", b"4", b"x", b"5"]
    assert source.acked == [2, 4, 5] and source.entered and source.exited
    assert producer.closed == [120.0]


def test_a_failed_source_keeps_what_was_acknowledged(fake_kafka) -> None:
    source = ListSource([row(i) for i in range(1, 7)], fail_after=4)
    with pytest.raises(RuntimeError, match="source broke"):
        run.ingest_from(Settings(), source)
    (producer,) = fake_kafka
    assert producer.closed == [30] and source.exited
