"""Ingest runs: any source's blocks of rows -> normalized cases -> Kafka, with counts."""

from __future__ import annotations

import gc
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from sf311.contract.registry import SchemaRegistry
from sf311.contract.schema import latest_schema_path, load_schema
from sf311.ingest.produce import CaseProducer, ProduceError, ensure_topics
from sf311.ingest.records import CaseEncoder
from sf311.ingest.sources import FileSource, SocrataSource, Source, source_by_name
from sf311.ingest.wire import BlockEncoder, Messages
from sf311.settings import Settings

log = logging.getLogger(__name__)

# Rows per block: large enough that the per-block cost of ~100 array operations is small.
BATCH_ROWS = 10_000
# Blocks encoded at once, in threads, while this one produces (in file order).
ENCODE_THREADS = 2
# Allocations between young-generation collections while ingesting (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000
# Seconds a thread keeps the GIL while another waits for it (CPython's default: 0.005).
SWITCH_INTERVAL = 0.001


@dataclass
class IngestCounts:
    """Rows read, cases produced and rows dead-lettered by one run."""

    read: int = 0
    produced: int = 0
    dead_lettered: int = 0
    # Rows per source column no case field names: a new column shows here before its schema.
    unknown_columns: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """Return the counts as a plain dict."""
        return asdict(self)

    def summary(self) -> str:
        """Return the one-line summary every ingest run ends with."""
        line = f"read={self.read} produced={self.produced} dead_lettered={self.dead_lettered}"
        if self.unknown_columns:
            found = sorted(self.unknown_columns.items(), key=lambda item: (-item[1], item[0]))
            line += " unknown_columns=" + ",".join(f"{name}:{rows}" for name, rows in found)
        return line


def case_encoder(settings: Settings) -> CaseEncoder:
    """Return an encoder for the newest case schema, registered under the case subject."""
    schema = load_schema(latest_schema_path(settings.schemas_dir))
    registry = SchemaRegistry(
        settings.schema_registry_url, timeout=settings.connect_timeout_seconds
    )
    return CaseEncoder(schema, registry.register(settings.case_subject, schema))


def _open_producer(
    settings: Settings, origin: str, on_acked: Callable[[Any], None] | None
) -> tuple[CaseProducer, BlockEncoder]:
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    encoder = case_encoder(settings)
    return CaseProducer(settings, on_acked=on_acked), BlockEncoder(encoder, origin)


@contextmanager
def rare_collections() -> Iterator[None]:
    """Return a context in which CPython's cycle collector runs rarely (restored on exit)."""
    # A block's many short-lived bytes and tuples die by reference counting, not by the collector.
    before = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextmanager
def quick_switches() -> Iterator[None]:
    """Return a context in which threads hand the GIL on more often (restored on exit)."""
    # An encode thread waits for the GIL after each of its many Arrow and numpy calls.
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _finish(producer: CaseProducer, read: int, unknown: dict[str, int]) -> IngestCounts:
    producer.close()
    counts = IngestCounts(read, producer.produced, producer.dead_lettered, unknown)
    log.info("ingest done: %s", counts.summary())
    return counts


# An encoding job: the work, and the mark of the checkpoint after its records (None: none).
_Job = tuple[Callable[[], Messages], Any]


def _send_in_order(jobs: Iterable[_Job], producer: CaseProducer) -> None:
    """Encode jobs in ENCODE_THREADS threads while sending finished ones, in order, to Kafka."""
    # Arrow and numpy release the GIL, so encoding overlaps producing; ENCODE_THREADS + 1 held.
    pending: deque[tuple[Future[Messages], Any]] = deque()

    def send_first() -> None:
        future, mark = pending.popleft()
        producer.send_messages(*future.result())
        if mark is not None:
            producer.checkpoint(mark)

    with ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="ingest-encode") as pool:
        for work, mark in jobs:
            pending.append((pool.submit(work), mark))
            if len(pending) > ENCODE_THREADS:
                send_first()
        while pending:
            send_first()


def ingest_from(settings: Settings, source: Source) -> IngestCounts:
    """Send a source's rows to Kafka (cases to the topic, rejects to the DLQ); return counts."""
    with source:
        producer, blocks = _open_producer(settings, source.origin, source.on_acked)
        read = 0

        def jobs() -> Iterator[_Job]:
            nonlocal read
            for block in source.iter_blocks(BATCH_ROWS):
                read += block.read
                yield partial(blocks.block, block.rows), block.mark

        try:
            with rare_collections(), quick_switches():
                _send_in_order(jobs(), producer)
        except Exception:
            if source.on_acked is not None:
                # Keep what the broker did acknowledge, so the rerun starts from there.
                with suppress(ProduceError):
                    producer.close(timeout=30)
            raise
        return _finish(producer, read, dict(blocks.unknown_columns))


def ingest_file(settings: Settings, path: Path, progress: bool | None = None) -> IngestCounts:
    """Send every row of a file to Kafka; return counts."""
    return ingest_from(settings, FileSource(path, progress))


def ingest_socrata(
    settings: Settings,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int | None = None,
) -> IngestCounts:
    """Send Socrata rows changed after the watermark (or `since`), before `until`; return counts."""
    return ingest_from(settings, SocrataSource(settings, since, until, page_size))


def ingest(
    settings: Settings,
    source: str,
    path: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> IngestCounts:
    """Run one ingest from the source named `source` ('socrata', 'file'); return counts."""
    return ingest_from(settings, source_by_name(source, settings, path, since, until))
