"""Ingest runs: Socrata pages or a file -> normalized cases -> Kafka, with counts."""

from __future__ import annotations

import gc
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sf311.ingest.extract import Page, iter_pages, socrata_client, start_position, to_floating
from sf311.ingest.files import read_batches
from sf311.ingest.produce import CaseProducer, ProduceError, ensure_topics
from sf311.ingest.records import CaseEncoder, latest_schema_path, load_schema, register_schema
from sf311.ingest.watermark import Watermark, WatermarkStore
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

    def as_dict(self) -> dict[str, int]:
        """Return the counts as a plain dict."""
        return asdict(self)

    def summary(self) -> str:
        """Return the one-line summary every ingest run ends with."""
        return f"read={self.read} produced={self.produced} dead_lettered={self.dead_lettered}"


def case_encoder(settings: Settings) -> CaseEncoder:
    """Return an encoder for the newest case schema, registered under `<topic>-value`."""
    schema = load_schema(latest_schema_path(settings.schemas_dir))
    schema_id = register_schema(
        settings.schema_registry_url, f"{settings.kafka_topic}-value", schema
    )
    return CaseEncoder(schema, schema_id)


def _open_producer(
    settings: Settings, origin: str, on_acked: Any = None
) -> tuple[CaseProducer, BlockEncoder]:
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    encoder = case_encoder(settings)
    return CaseProducer(settings, on_acked=on_acked), BlockEncoder(encoder, origin)


@contextmanager
def rare_collections() -> Iterator[None]:
    """Return a context in which CPython's cycle collector runs rarely (restored on exit)."""
    # A block makes hundreds of thousands of short-lived bytes and tuples, freed by reference
    # counting; at the default threshold the cycle collector would run every few hundred.
    before = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextmanager
def quick_switches() -> Iterator[None]:
    """Return a context in which threads hand the GIL on more often (restored on exit)."""
    # An encode thread takes the GIL back after each of hundreds of Arrow and numpy calls
    # per block; at the default interval it may wait up to 5 ms each time behind the
    # producing thread's loop (1 ms: 6-9 % more records/s in back-to-back runs under load).
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _finish(producer: CaseProducer, read: int) -> IngestCounts:
    producer.close()
    counts = IngestCounts(read, producer.produced, producer.dead_lettered)
    log.info("ingest done: %s", counts.summary())
    return counts


# An encoding job: the work, and whether a checkpoint (with its mark) follows its records.
_Job = tuple[Callable[[], Messages], bool, Any]


def _send_in_order(jobs: Iterable[_Job], producer: CaseProducer) -> None:
    """Encode jobs in ENCODE_THREADS threads while sending finished ones, in order, to Kafka.

    Arrow and numpy release the GIL, so encoding overlaps with this thread's produce calls;
    at most ENCODE_THREADS + 1 jobs' messages are in memory.
    """
    pending: deque[tuple[Future[Messages], bool, Any]] = deque()

    def send_first() -> None:
        future, checkpoint, mark = pending.popleft()
        producer.send_messages(*future.result())
        if checkpoint:
            producer.checkpoint(mark)

    with ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="ingest-encode") as pool:
        for work, checkpoint, mark in jobs:
            pending.append((pool.submit(work), checkpoint, mark))
            if len(pending) > ENCODE_THREADS:
                send_first()
        while pending:
            send_first()


def ingest_file(settings: Settings, path: Path, progress: bool | None = None) -> IngestCounts:
    """Send every row of a file to Kafka (cases to the topic, rejects to the DLQ); return counts.

    The file is read in blocks of BATCH_ROWS rows, encoded in background threads.
    """
    producer, blocks = _open_producer(settings, "file")
    read = 0

    def jobs() -> Iterator[_Job]:
        nonlocal read
        for batch in read_batches(Path(path), BATCH_ROWS, progress=progress):
            read += len(batch.items)
            yield partial(blocks.batch, batch), False, None

    with rare_collections(), quick_switches():
        _send_in_order(jobs(), producer)
    return _finish(producer, read)


def watermark_source(settings: Settings) -> str:
    """Return the watermark key of the Socrata source: dataset and the topic it feeds."""
    return f"socrata:{settings.socrata_domain}/{settings.socrata_dataset}->{settings.kafka_topic}"


def ingest_socrata(
    settings: Settings,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int | None = None,
) -> IngestCounts:
    """Send Socrata rows changed after the watermark (or `since`) and before `until` to Kafka.

    The watermark advances only to pages whose every record the broker acknowledged.
    """
    store = WatermarkStore(settings.postgres_dsn.get_secret_value())
    source = watermark_source(settings)
    try:
        start = start_position(
            store.get(source),
            to_floating(since) if since else None,
            timedelta(seconds=settings.socrata_overlap_seconds),
        )
        bound = to_floating(until) if until else None
        log.info("socrata ingest %s from %s until %s", source, start, bound)

        def acked(mark: Watermark) -> None:
            store.advance(source, mark)

        producer, blocks = _open_producer(settings, "socrata", on_acked=acked)
        read = 0

        def jobs(pages: Iterable[Page]) -> Iterator[_Job]:
            nonlocal read
            for page in pages:
                read += len(page.rows)
                # Each page in blocks; its checkpoint follows its last block.
                ends = list(range(BATCH_ROWS, len(page.rows), BATCH_ROWS)) + [len(page.rows)]
                for begin, end in zip([0, *ends], ends, strict=False):
                    work = partial(blocks.page, page.rows, begin, end)
                    yield work, end == len(page.rows), page.last

        try:
            with socrata_client(settings) as client, rare_collections(), quick_switches():
                _send_in_order(
                    jobs(iter_pages(client, settings, start, bound, page_size)), producer
                )
        except Exception:
            # Keep what the broker did acknowledge, so the rerun starts from there.
            with suppress(ProduceError):
                producer.close(timeout=30)
            raise
        return _finish(producer, read)
    finally:
        store.close()


def ingest(
    settings: Settings,
    source: str,
    path: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> IngestCounts:
    """Run one ingest from 'socrata' (bounded by since/until) or 'file' (PATH); return counts."""
    if source == "file":
        if path is None or since or until:
            raise ValueError("--source file takes a PATH and no --since/--until")
        return ingest_file(settings, path)
    if source == "socrata":
        if path is not None:
            raise ValueError("--source socrata takes no PATH")
        return ingest_socrata(settings, since=since, until=until)
    raise ValueError(f"unknown source {source!r}")
