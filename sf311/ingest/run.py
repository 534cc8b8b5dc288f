"""Ingest runs: Socrata pages or a file -> normalized cases -> Kafka, with counts."""

from __future__ import annotations

import gc
import logging
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from sf311.ingest.extract import iter_pages, socrata_client, start_position, to_floating
from sf311.ingest.files import RawBatch, read_batches, read_rows, rows_of
from sf311.ingest.produce import CaseProducer, ProduceError, ensure_topics
from sf311.ingest.records import CaseEncoder, latest_schema_path, load_schema, register_schema
from sf311.ingest.watermark import Watermark, WatermarkStore
from sf311.ingest.wire import Message, RowEncoder
from sf311.settings import Settings

log = logging.getLogger(__name__)

PARALLEL_MIN_BYTES = 8 << 20
BATCH_ROWS = 2000
# Allocations between young-generation collections while ingesting (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


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
) -> tuple[CaseProducer, RowEncoder]:
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    encoder = case_encoder(settings)
    return CaseProducer(settings, on_acked=on_acked), RowEncoder(encoder, origin)


@contextmanager
def rare_collections() -> Iterator[None]:
    """Return a context in which CPython's cycle collector runs rarely (restored on exit)."""
    # Each row makes a few short-lived dicts, freed by reference counting; at the default
    # threshold the cycle collector runs every few hundred rows and costs 10-20 % of the CPU.
    before = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _send_all(rows: Iterable[dict[str, Any]], producer: CaseProducer, rows_in: RowEncoder) -> int:
    read = 0
    rows = iter(rows)
    while chunk := list(islice(rows, BATCH_ROWS)):
        read += len(chunk)
        producer.send_messages(*rows_in.messages(chunk))
    return read


def _finish(producer: CaseProducer, read: int) -> IngestCounts:
    producer.close()
    counts = IngestCounts(read, producer.produced, producer.dead_lettered)
    log.info("ingest done: %s", counts.summary())
    return counts


# Each worker process builds its encoder once, in the pool's initializer.
_worker_rows: RowEncoder | None = None


def _init_worker(schema: dict[str, Any], schema_id: int) -> None:
    global _worker_rows
    _worker_rows = RowEncoder(CaseEncoder(schema, schema_id), "file")
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _encode_batch(batch: RawBatch) -> tuple[list[Message], list[Message]]:
    """Return the (key, value) messages of cases and of dead letters of one raw batch."""
    return _worker_rows.messages(rows_of(batch))  # type: ignore[union-attr]


def ingest_file(settings: Settings, path: Path, progress: bool | None = None) -> IngestCounts:
    """Send every row of a file to Kafka (cases to the topic, rejects to the DLQ); return counts.

    Files of PARALLEL_MIN_BYTES or more are parsed, normalized and encoded by
    settings.ingest_workers processes while this one only splits lines and produces; a
    bounded number of batches is in flight, so memory stays constant whatever the file size.
    """
    path = Path(path)
    workers = settings.ingest_workers if path.stat().st_size >= PARALLEL_MIN_BYTES else 0
    if workers < 1:
        producer, rows_in = _open_producer(settings, "file")
        with rare_collections():
            read = _send_all(read_rows(path, progress=progress), producer, rows_in)
        return _finish(producer, read)
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    encoder = case_encoder(settings)
    # spawn, not fork: librdkafka's threads must not be forked into the workers.
    context = multiprocessing.get_context("spawn")
    init = (encoder.schema, encoder.schema_id)
    with ProcessPoolExecutor(workers, context, _init_worker, init) as pool, rare_collections():
        producer = CaseProducer(settings)
        read = 0
        in_flight: deque[Future[tuple[list[Message], list[Message]]]] = deque()

        def drain_one() -> None:
            producer.send_messages(*in_flight.popleft().result())

        for batch in read_batches(path, BATCH_ROWS, progress=progress):
            read += len(batch.items)
            in_flight.append(pool.submit(_encode_batch, batch))
            if len(in_flight) >= 3 * workers:
                drain_one()
        while in_flight:
            drain_one()
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

        producer, rows_in = _open_producer(settings, "socrata", on_acked=acked)
        read = 0
        try:
            with socrata_client(settings) as client, rare_collections():
                for page in iter_pages(client, settings, start, bound, page_size):
                    read += _send_all(page.rows, producer, rows_in)
                    producer.checkpoint(page.last)
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
