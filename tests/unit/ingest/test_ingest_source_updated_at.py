"""Socrata's :updated_at becomes the case's source_updated_at (schema v2), the same bytes by the
columnar path as by normalize + encode."""

from __future__ import annotations

import json

import fastavro
import pytest

from sf311.contract.schema import SCHEMAS_DIR, load_schema
from sf311.ingest.extract import read_page
from sf311.ingest.generate import CaseGenerator
from sf311.ingest.normalize import DeadLetter, normalize
from sf311.ingest.records import CaseEncoder, decode
from sf311.ingest.wire import BlockEncoder

V2 = load_schema(SCHEMAS_DIR / "case.v2.avsc")
BASE = {
    **CaseGenerator(seed=3).case(0, 1),
    "service_request_id": "17598709",
    "requested_datetime": "2023-11-28T01:31:07.000",
    ":updated_at": "2023-11-28T13:05:12.345Z",
}


def reference(encoder: CaseEncoder, rows: list[dict]) -> tuple[list, list]:
    cases = [normalize(raw, "socrata") for raw in rows]
    assert not any(isinstance(c, DeadLetter) for c in cases)
    return [(str(c["service_request_id"]).encode(), encoder.encode(c)) for c in cases], []


def test_updated_at_is_read_as_a_utc_instant() -> None:
    encoder = CaseEncoder(V2, 7)
    blocks = BlockEncoder(encoder, "socrata")
    ((_, value),), dead = blocks.rows([BASE])
    record = decode(value, {7: fastavro.parse_schema(V2)})
    assert dead == [] and blocks.reference_rows == 0
    assert record["source_updated_at"].isoformat() == "2023-11-28T13:05:12.345000+00:00"
    # Known now, so no longer an unknown column kept in `extra`.
    assert ":updated_at" not in (record["extra"] or "")


@pytest.mark.parametrize(
    "stamp",
    [
        None,
        "",
        "2023-11-28T13:05:12.345Z",
        "2023-11-28T13:05:12.345",  # no zone: floating, read as Los Angeles time
        "2023-11-28T13:05:12.345+01:00",
        "2023-11-28T13:05:12Z",
        "2023-02-30T13:05:12.345Z",
        "yesterday",
    ],
)
def test_every_form_agrees_with_the_reference(stamp: str | None) -> None:
    rows = [BASE, {**BASE, "service_request_id": "2", ":updated_at": stamp}]
    encoder = CaseEncoder(V2, 7)
    assert BlockEncoder(encoder, "socrata").rows(rows) == reference(encoder, rows)


def test_a_page_of_repeated_stamps_takes_the_columnar_path() -> None:
    # 1,200 rows, 3 distinct stamps: the per-distinct-value parse.
    stamps = ["2023-11-28T13:05:12.345Z", "2024-01-02T00:00:00.000Z", "2024-03-10T10:30:00.001Z"]
    rows = [
        {**BASE, "service_request_id": str(100 + i), ":updated_at": stamps[i % 3]}
        for i in range(1200)
    ]
    body = json.dumps(rows).encode()
    page = read_page(body, lambda: json.loads(body))
    encoder = CaseEncoder(V2, 7)
    blocks = BlockEncoder(encoder, "socrata")
    assert blocks.page(page) == reference(encoder, rows)
    assert blocks.reference_rows == 0


def test_rows_without_the_system_field_have_no_source_updated_at() -> None:
    raw = {k: v for k, v in BASE.items() if k != ":updated_at"}
    ((_, value),), _ = BlockEncoder(CaseEncoder(V2, 7), "file").rows([raw])
    assert decode(value, {7: fastavro.parse_schema(V2)})["source_updated_at"] is None
