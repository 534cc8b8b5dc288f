"""Fixtures of the ingest integration tests: fresh topics and a consumer that reads them back."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from sf311.contract.registry import SchemaRegistry
from sf311.settings import Settings


@pytest.fixture
def fresh(settings: Settings) -> Iterator[Settings]:
    """Settings with topics of their own, so tests never see each other; removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    topics = [f"test.ingest.{tag}", f"test.ingest.{tag}.dlq"]
    yield settings.model_copy(update={"kafka_topic": topics[0], "kafka_dlq_topic": topics[1]})
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    made = [t for t in topics if t in admin.list_topics(timeout=10).topics]
    for future in admin.delete_topics(made, operation_timeout=30).values() if made else []:
        future.result()
    SchemaRegistry(settings.schema_registry_url).delete(f"{topics[0]}-value")
    with psycopg.connect(settings.postgres_dsn.get_secret_value(), autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('ingest.watermarks')").fetchone()[0]:
            conn.execute("DELETE FROM ingest.watermarks WHERE source LIKE %s", (f"%->{topics[0]}",))


@pytest.fixture
def read_topic(settings: Settings) -> Callable[[str], list[tuple[bytes | None, bytes]]]:
    """Return every (key, value) on a topic, read from the start up to its end offsets."""

    def read(topic: str) -> list[tuple[bytes | None, bytes]]:
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ends = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[p] = high
            consumer.assign([TopicPartition(topic, p, 0) for p in ends])
            out: list[tuple[bytes | None, bytes]] = []
            idle = 0
            while ends and idle < 100:
                batch = consumer.consume(10_000, timeout=0.2)
                idle = 0 if batch else idle + 1
                for msg in batch:
                    if msg.error():
                        raise RuntimeError(msg.error())
                    out.append((msg.key(), msg.value()))
                    if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                        ends.pop(msg.partition(), None)
            if ends:
                raise TimeoutError(f"{topic}: partitions {sorted(ends)} not read to their end")
            return out
        finally:
            consumer.close()

    return read
