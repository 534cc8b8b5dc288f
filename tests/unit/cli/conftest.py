"""Fixtures of the CLI unit tests: `sf311` run in-process, Kafka and the registry replaced."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import sf311.ingest.run as run
from sf311.cli import main
from sf311.contract.schema import latest_schema_path, load_schema
from sf311.ingest.records import CaseEncoder


class FakeProducer:
    """Counts what an ingest run sends; every record is acknowledged."""

    def __init__(self, settings, on_acked=None) -> None:
        self.produced = self.dead_lettered = 0

    def send_messages(self, cases, dead) -> None:
        self.produced += len(cases)
        self.dead_lettered += len(dead)

    def checkpoint(self, mark) -> None:
        return None

    def close(self, timeout: float = 120.0) -> None:
        return None


@pytest.fixture
def no_kafka(monkeypatch) -> None:
    """Let ingest runs reach neither Kafka nor the schema registry."""
    encoder = CaseEncoder(load_schema(latest_schema_path()), 3)
    monkeypatch.setattr(run, "ensure_topics", lambda settings, topics: None)
    monkeypatch.setattr(run, "case_encoder", lambda settings: encoder)
    monkeypatch.setattr(run, "CaseProducer", FakeProducer)


@pytest.fixture
def sf311(capsys) -> Callable[..., tuple[int, str, str]]:
    """Return a runner of `sf311 ARGS...` giving (exit code, stdout, stderr)."""

    def call(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call
