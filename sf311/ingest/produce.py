"""Cases and dead letters -> Kafka, with per-checkpoint acknowledgement tracking."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from sf311.errors import ServiceUnavailable
from sf311.ingest import IngestError
from sf311.ingest.normalize import DeadLetter
from sf311.settings import Settings


class ProduceError(IngestError):
    """The broker did not acknowledge every record; nothing after the first loss was committed."""


def producer_config(settings: Settings) -> dict[str, Any]:
    """Return the librdkafka config of the ingest producer: idempotent, acks=all, batched."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": "sf311-ingest",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.kafka_compression,
        "linger.ms": settings.kafka_linger_ms,
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "delivery.timeout.ms": 120_000,
    }


def ensure_topics(settings: Settings, topics: list[str]) -> None:
    """Create the topics that do not exist yet (partitions from settings, broker's replication)."""
    # Silent: while no broker answers, librdkafka logs every failed connect (hundreds of lines).
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 0})
    try:
        existing = admin.list_topics(timeout=settings.connect_timeout_seconds).topics
    except KafkaException as err:
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap_servers} did not answer within "
            f"{settings.connect_timeout_seconds} s: start it (`sf311 up`) or fix "
            "SF311_KAFKA_BOOTSTRAP_SERVERS"
        ) from err
    missing = [NewTopic(t, num_partitions=settings.kafka_partitions) for t in topics]
    missing = [t for t in missing if t.topic not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, operation_timeout=15).items():
        try:
            future.result()
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProduceError(f"cannot create topic {topic}: {err}") from err


def dead_letter_message(dead: DeadLetter, origin: str) -> tuple[bytes | None, bytes]:
    """Return the (key, JSON value) of a dead letter: reason, origin and the raw row."""
    raw_id = dead.raw.get("service_request_id")
    body = {"reason": dead.reason, "origin": origin, "record": dead.raw}
    value = json.dumps(body, default=str, separators=(",", ":")).encode()
    return (str(raw_id).encode() if raw_id else None), value


class _Group:
    __slots__ = ("pending", "mark", "closed")

    def __init__(self) -> None:
        self.pending = 0
        self.mark: Any = None
        self.closed = False


class CaseProducer:
    """Sends cases and dead letters; passes a checkpoint's mark on once all before it are acked."""

    # on_acked(mark) runs in the caller's thread; a failed delivery blocks every later mark.
    # Without on_acked the broker reports failures only, and close() checks the rest.

    def __init__(
        self,
        settings: Settings,
        on_acked: Callable[[Any], None] | None = None,
        topic: str | None = None,
        dlq_topic: str | None = None,
    ) -> None:
        self._reports_successes = on_acked is not None
        config = producer_config(settings)
        if not self._reports_successes:
            config["delivery.report.only.error"] = True
        self._producer = Producer(config)
        self._topic = topic or settings.kafka_topic
        self._dlq_topic = dlq_topic or settings.kafka_dlq_topic
        self._on_acked = on_acked
        self._groups: deque[_Group] = deque()
        self._open_group()
        self.produced = 0
        self.dead_lettered = 0
        self.acked = 0
        self.failed = 0
        self.failures: list[str] = []

    def _open_group(self) -> None:
        group = _Group()
        self._groups.append(group)
        self._current = group
        self._callback = partial(self._delivered, group)

    def _delivered(self, group: _Group, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if len(self.failures) < 10:
                self.failures.append(f"{msg.topic()} key={msg.key()!r}: {err}")
            return
        group.pending -= 1
        self.acked += 1

    def send_messages(
        self,
        cases: list[tuple[bytes | None, bytes | None]],
        dead: list[tuple[bytes | None, bytes]],
    ) -> None:
        """Queue encoded cases (or tombstones: a key, no value) and dead letters (a
        BlockEncoder's), then serve delivery reports."""
        produce, poll, callback = self._producer.produce, self._producer.poll, self._callback
        # Counted up front: a report served by poll() below must find its group's count.
        self._current.pending += len(cases) + len(dead)
        for topic, messages in ((self._topic, cases), (self._dlq_topic, dead)):
            for key, value in messages:
                while True:
                    try:
                        # Positional (partition -1: the partitioner's): keywords cost more CPU.
                        produce(topic, value, key, -1, callback)
                        break
                    except BufferError:
                        # Local queue full: serve delivery reports until there is room.
                        poll(0.1)
        self.produced += len(cases)
        self.dead_lettered += len(dead)
        poll(0)

    def checkpoint(self, mark: Any) -> None:
        """Close the current group of records under `mark` and report any acknowledged marks."""
        self._current.mark = mark
        self._current.closed = True
        self._open_group()
        self.poll()

    def poll(self) -> None:
        """Serve delivery reports and report the newest fully acknowledged checkpoint."""
        self._producer.poll(0)
        self._report()

    def _report(self) -> None:
        mark = None
        groups = self._groups
        while groups and groups[0].closed and groups[0].pending == 0:
            done = groups.popleft()
            if done.mark is not None:
                mark = done.mark
        if mark is not None and self._on_acked is not None:
            self._on_acked(mark)

    def close(self, timeout: float = 120.0) -> None:
        """Wait for every delivery report; raise ProduceError if any record was not acked."""
        remaining = self._producer.flush(timeout)
        if not self._reports_successes:
            # Only failures are reported: every record that left the queue without one was acked.
            self.acked = self.produced + self.dead_lettered - self.failed - remaining
        self._report()
        if self.failures or remaining:
            lost = self.produced + self.dead_lettered - self.acked
            raise ProduceError(
                f"{lost} record(s) not acknowledged ({remaining} still queued); first errors: "
                + "; ".join(self.failures)
            )
