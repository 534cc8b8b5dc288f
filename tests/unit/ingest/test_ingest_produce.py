"""CaseProducer's bookkeeping: checkpoints report only after everything before them is acked."""

from __future__ import annotations

import json

import pytest

import sf311.ingest.produce as produce
from sf311.ingest.normalize import DeadLetter
from sf311.settings import Settings


class FakeKafkaError:
    def __str__(self) -> str:
        return "broker said no"


class FakeMessage:
    def __init__(self, topic: str, key: bytes | None) -> None:
        self._topic, self._key = topic, key

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key


class FakeProducer:
    """Holds delivery callbacks until the test acknowledges (or fails) chosen messages."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes | None, bytes, object]] = []
        self.flushed = False

    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None) -> None:
        """Takes its arguments as confluent-kafka's Producer.produce does."""
        self.sent.append((topic, key, value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.flushed = True
        return 0

    def deliver(self, index: int, fail: bool = False) -> None:
        topic, key, _, callback = self.sent[index]
        callback(FakeKafkaError() if fail else None, FakeMessage(topic, key))


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(produce, "Producer", FakeProducer)
    acked: list[object] = []
    case_producer = produce.CaseProducer(Settings(), on_acked=acked.append)
    return case_producer, case_producer._producer, acked


def case(rid: int) -> list[tuple[bytes, bytes]]:
    """One case message, as a BlockEncoder gives it."""
    return [(str(rid).encode(), b"avro-%d" % rid)]


def test_config_is_idempotent_acks_all_and_batched() -> None:
    config = produce.producer_config(Settings())
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["compression.type"] != "none" and config["linger.ms"] > 0


def test_checkpoint_waits_for_every_earlier_record(producer) -> None:
    cp, fake, acked = producer
    cp.send_messages(case(1) + case(2), [])
    cp.checkpoint("page-1")
    cp.send_messages(case(3), [])
    cp.checkpoint("page-2")
    fake.deliver(2)  # page 2 acknowledged first
    cp.poll()
    assert acked == []
    fake.deliver(0)
    cp.poll()
    assert acked == []
    fake.deliver(1)
    cp.poll()
    assert acked == ["page-2"]  # only the newest fully acknowledged mark is reported
    assert [k for _, k, _, _ in fake.sent] == [b"1", b"2", b"3"]


def test_a_failed_delivery_blocks_later_checkpoints_and_close_raises(producer) -> None:
    cp, fake, acked = producer
    cp.send_messages(case(1), [])
    cp.checkpoint("page-1")
    cp.send_messages(case(2), [])
    cp.checkpoint("page-2")
    fake.deliver(0, fail=True)
    fake.deliver(1)
    with pytest.raises(produce.ProduceError, match="1 record\\(s\\) not acknowledged"):
        cp.close()
    assert acked == []


def test_dead_letters_go_to_the_dlq_as_json(producer) -> None:
    cp, fake, _ = producer
    raw = {"service_request_id": "x1", "requested_datetime": ""}
    cp.send_messages(
        [], [produce.dead_letter_message(DeadLetter("missing requested_datetime", raw), "file")]
    )
    topic, key, value, _ = fake.sent[0]
    assert topic == Settings().kafka_dlq_topic and key == b"x1"
    assert json.loads(value) == {
        "reason": "missing requested_datetime",
        "origin": "file",
        "record": raw,
    }
    assert cp.dead_lettered == 1 and cp.produced == 0


def test_encoded_batches_count_and_wait_for_acks_like_single_sends(producer) -> None:
    cp, fake, acked = producer
    cp.send_messages([(b"1", b"v1"), (b"2", b"v2")], [(None, b"{}")])
    cp.checkpoint("page-1")
    assert (cp.produced, cp.dead_lettered) == (2, 1)
    assert [(t, k) for t, k, _, _ in fake.sent] == [
        (Settings().kafka_topic, b"1"),
        (Settings().kafka_topic, b"2"),
        (Settings().kafka_dlq_topic, None),
    ]
    fake.deliver(0)
    fake.deliver(2)
    cp.poll()
    assert acked == []
    fake.deliver(1)
    cp.poll()
    assert acked == ["page-1"]


def test_ingest_loops_collect_cycles_rarely_and_restore_the_threshold() -> None:
    import gc

    import sf311.ingest.run as run

    before = gc.get_threshold()
    with pytest.raises(RuntimeError), run.rare_collections():
        assert gc.get_threshold() == (run.GC_YOUNG_THRESHOLD, *before[1:])
        raise RuntimeError("a failed page")
    assert gc.get_threshold() == before


def test_ingest_loops_switch_threads_often_and_restore_the_interval() -> None:
    import sys

    import sf311.ingest.run as run

    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), run.quick_switches():
        assert sys.getswitchinterval() == pytest.approx(run.SWITCH_INTERVAL)
        raise RuntimeError("a failed page")
    assert sys.getswitchinterval() == before


def test_without_checkpoints_only_failures_are_reported(monkeypatch) -> None:
    monkeypatch.setattr(produce, "Producer", FakeProducer)
    quiet = produce.CaseProducer(Settings())
    assert quiet._producer.config["delivery.report.only.error"] is True
    quiet.send_messages(case(1) + case(2), [])
    quiet.close()
    assert quiet.acked == 2
    failing = produce.CaseProducer(Settings())
    failing.send_messages(case(3) + case(4), [])
    failing._producer.deliver(1, fail=True)
    lost = r"^1 record\(s\) not acknowledged.*broker said no"
    with pytest.raises(produce.ProduceError, match=lost):
        failing.close()
    # Only the failure was reported: the other record left the queue, so the broker acked it.
    assert failing.acked == 1
