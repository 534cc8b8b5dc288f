"""Ingest runs: Socrata pages or a file -> normalized cases -> Kafka, with counts."""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sf311.ingest.extract import iter_pages, socrata_client, start_position, to_floating
from sf311.ingest.files import RawBatch, read_batches, read_rows, rows_of
from sf311.ingest.normalize import DeadLetter, normalize
from sf311.ingest.produce import (
    CaseProducer,
    ProduceError,
    dead_letter_message,
    ensure_topics,
)
from sf311.ingest.records import CaseEncoder, latest_schema_path, load_schema, register_schema
from sf311.ingest.watermark import Watermark, WatermarkStore
from sf311.settings import Settings

log = logging.getLogger(__name__)

PARALLEL_MIN_BYTES = 8 << 20
BATCH_ROWS = 2000
Message = tuple[bytes | None, bytes]


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


def _open_producer(settings: Settings, on_acked: Any = None) -> CaseProducer:
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    return CaseProducer(settings, case_encoder(settings), on_acked=on_acked)


def _send_all(rows: Iterable[dict[str, Any]], producer: CaseProducer, origin: str) -> int:
    send, send_dead = producer.send, producer.send_dead
    read = 0
    for raw in rows:
        read += 1
        case = normalize(raw, origin)
        if isinstance(case, DeadLetter):
            send_dead(case, origin)
        else:
            send(case)
    return read


def _finish(producer: CaseProducer, read: int) -> IngestCounts:
    producer.close()
    counts = IngestCounts(read, producer.produced, producer.dead_lettered)
    log.info("ingest done: %s", counts.summary())
    return counts


# Each worker process builds its encoder once, in the pool's initializer.
_worker_encoder: CaseEncoder | None = None


def _init_worker(schema: dict[str, Any], schema_id: int) -> None:
    global _worker_encoder
    _worker_encoder = CaseEncoder(schema, schema_id)


def _encode_batch(batch: RawBatch) -> tuple[list[tuple[bytes, bytes]], list[Message]]:
    """Return the (key, value) messages of cases and of dead letters of one raw batch."""
    encode = _worker_encoder.encode  # type: ignore[union-attr]
    cases: list[tuple[bytes, bytes]] = []
    dead: list[Message] = []
    for raw in rows_of(batch):
        case = normalize(raw, "file")
        if isinstance(case, DeadLetter):
            dead.append(dead_letter_message(case, "file"))
        else:
            cases.append((str(case["service_request_id"]).encode(), encode(case)))
    return cases, dead


def ingest_file(settings: Settings, path: Path, progress: bool | None = None) -> IngestCounts:
    """Send every row of a file to Kafka (cases to the topic, rejects to the DLQ); return counts.

    Files of PARALLEL_MIN_BYTES or more are parsed, normalized and encoded by
    settings.ingest_workers processes while this one only splits lines and produces; a
    bounded number of batches is in flight, so memory stays constant whatever the file size.
    """
    path = Path(path)
    workers = settings.ingest_workers if path.stat().st_size >= PARALLEL_MIN_BYTES else 0
    if workers < 1:
        producer = _open_producer(settings)
        read = _send_all(read_rows(path, progress=progress), producer, "file")
        return _finish(producer, read)
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    encoder = case_encoder(settings)
    # spawn, not fork: librdkafka's threads must not be forked into the workers.
    context = multiprocessing.get_context("spawn")
    init = (encoder.schema, encoder.schema_id)
    with ProcessPoolExecutor(workers, context, _init_worker, init) as pool:
        producer = CaseProducer(settings, encoder)
        read = 0
        in_flight: deque[Future[tuple[list[tuple[bytes, bytes]], list[Message]]]] = deque()

        def drain_one() -> None:
            cases, dead = in_flight.popleft().result()
            for key, value in cases:
                producer.send_encoded(key, value)
            for dead_key, dead_value in dead:
                producer.send_dead_encoded(dead_key, dead_value)
            producer.poll()

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

        producer = _open_producer(settings, on_acked=acked)
        read = 0
        try:
            with socrata_client(settings) as client:
                for page in iter_pages(client, settings, start, bound, page_size):
                    read += _send_all(page.rows, producer, "socrata")
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
