"""Helpers of the stream tests: Confluent-framed Avro messages and Kafka-shaped rows."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)


def _v2(v1: dict[str, Any]) -> dict[str, Any]:
    """A later contract version: v1 plus one field with a default, as evolution allows."""
    v2 = json.loads(json.dumps(v1))
    v2["fields"].append(
        {"name": "priority", "type": ["null", "string"], "default": None, "doc": "Test field."}
    )
    return v2


class Wire:
    """Builds Confluent wire-format bytes and Kafka-source rows for tests."""

    def __init__(self) -> None:
        self.v1 = json.loads((SCHEMAS / "case.v1.avsc").read_text())
        self.v2 = _v2(self.v1)
        self.v1_text = json.dumps(self.v1)
        self.v2_text = json.dumps(self.v2)

    def case(self, sid: int | None, **fields: Any) -> dict[str, Any]:
        """Return a v1 record with a few realistic values, overridden by fields."""
        record: dict[str, Any] = {
            "service_request_id": sid,
            "requested_datetime": datetime(2019, 3, 1, 17, 0, tzinfo=UTC),
            "updated_datetime": datetime(2019, 3, 2, 17, 0, tzinfo=UTC),
            "closed_date": None,
            "status_description": "Open",
            "service_name": "Street and Sidewalk Cleaning",
            "neighborhood": "North Beach",
        }
        record.update(fields)
        return record

    def frame(self, schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
        """Return magic byte 0, the big-endian schema id and the Avro body of a record."""
        body = io.BytesIO()
        fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
        return struct.pack(">bI", 0, schema_id) + body.getvalue()

    def rows(
        self,
        values: list[bytes | None],
        start: datetime | None = None,
        keys: list[bytes | None] | None = None,
    ) -> list[tuple]:
        """Return Kafka-source rows (partition 0, offsets 0..n-1, one second apart), keyless
        unless keys are given."""
        t0 = (start or datetime(2026, 1, 1, tzinfo=UTC)).timestamp()
        keys = keys or [None] * len(values)
        return [
            (
                bytearray(keys[i]) if keys[i] is not None else None,
                bytearray(v) if v is not None else None,
                "sf311.cases",
                0,
                i,
                datetime.fromtimestamp(t0 + i, UTC),
                0,
            )
            for i, v in enumerate(values)
        ]


@pytest.fixture(scope="session")
def wire() -> Wire:
    """The framing helper."""
    return Wire()


@pytest.fixture(scope="session")
def messages(spark, wire):
    """Return a function: raw values -> a Kafka-source shaped DataFrame."""

    def build(
        values: list[bytes | None],
        start: datetime | None = None,
        keys: list[bytes | None] | None = None,
    ):
        return spark.createDataFrame(wire.rows(values, start, keys), KAFKA_SCHEMA)

    return build
