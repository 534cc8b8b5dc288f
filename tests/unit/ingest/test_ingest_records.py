"""Case records in the Confluent wire format: header, fastavro round trip, every field typed."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pytest

from sf311.contract.schema import latest_schema_path, load_schema
from sf311.ingest.normalize import normalize
from sf311.ingest.records import CaseEncoder, decode

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"

RAW = {
    "service_request_id": "17598709",
    "requested_datetime": "2023-11-28T01:31:07.000",
    "closed_date": "2023-11-28T03:00:00.000",
    "supervisor_district": "3",
    "lat": "0",
    "long": "0",
    ":@computed_region_6qbp_sg9q": "77",
}


def test_wire_format_header_and_round_trip() -> None:
    schema = load_schema(latest_schema_path(SCHEMAS))
    encoder = CaseEncoder(schema, 258)
    case = normalize(RAW, "socrata")
    payload = encoder.encode(case)
    assert payload[:5] == b"\x00\x00\x00\x01\x02"
    back = decode(payload, {258: fastavro.parse_schema(schema)})
    assert back["service_request_id"] == 17598709
    assert back["requested_datetime"].timestamp() * 1000 == case["requested_datetime"]
    assert back["location_issue"] == "zero" and back["lat"] is None
    assert json.loads(back["extra"]) == {":@computed_region_6qbp_sg9q": "77"}
    assert back["supervisor_district"] == 3 and back["origin"] == "socrata"


def test_encoder_reuses_its_buffer_without_leaking_bytes() -> None:
    encoder = CaseEncoder(load_schema(latest_schema_path(SCHEMAS)), 1)
    long_case = normalize({**RAW, "status_notes": "x" * 500}, "file")
    short_case = normalize(RAW, "file")
    first, second = encoder.encode(long_case), encoder.encode(short_case)
    assert len(second) < len(first)
    assert second == CaseEncoder(load_schema(latest_schema_path(SCHEMAS)), 1).encode(short_case)


def test_other_magic_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="magic"):
        decode(b"\x01\x00\x00\x00\x01", {})


def fastavro_body(schema: dict, record: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def test_compiled_encoder_matches_fastavro_byte_for_byte() -> None:
    import random

    from sf311.ingest.generate import CaseGenerator
    from sf311.ingest.records import compile_encoder

    schema = load_schema(latest_schema_path(SCHEMAS))
    encode = compile_encoder(schema)
    assert encode is not None
    rng = random.Random(5)
    cases = [normalize(r, "generator") for r in CaseGenerator(seed=8).cases(300)]
    for case in cases:
        case["status_notes"] = rng.choice([None, "", "é" * rng.randrange(3000), "x" * 5000])
        case["service_request_id"] = rng.choice(
            [
                0,
                1,
                63,
                64,
                4095,
                4096,
                2**13,
                2**14,
                2**27,
                2**28,
                2**40,
                2**63 - 1,
                -(2**63),
                -(2**40),
                -1,
            ]
        )
        case["updated_datetime"] = rng.choice(
            [None, -1, 0, 1_701_179_219_000, rng.randrange(-(2**45), 2**45)]
        )
        case["supervisor_district"] = rng.choice([None, 0, -1, 2**31 - 1, -(2**31)])
        assert encode(case) == fastavro_body(schema, case)


def test_compiled_encoder_handles_every_flat_type_and_branch_order() -> None:
    from sf311.ingest.records import compile_encoder

    schema = {
        "type": "record",
        "name": "T",
        "fields": [
            {"name": "b", "type": "boolean"},
            {"name": "f", "type": "float"},
            {"name": "raw", "type": "bytes"},
            {"name": "s", "type": ["string", "null"]},
            {"name": "i", "type": ["null", "int"]},
            {"name": "d", "type": {"type": "int", "logicalType": "date"}},
        ],
    }
    encode = compile_encoder(schema)
    for record in (
        {"b": True, "f": 1.5, "raw": b"\x00\xff", "s": "a", "i": None, "d": 19000},
        {"b": False, "f": -0.25, "raw": b"", "s": None, "i": -7, "d": 0},
    ):
        assert encode(record) == fastavro_body(schema, record)
    with pytest.raises(ValueError, match="int out of range"):
        encode({"b": True, "f": 1.0, "raw": b"", "s": None, "i": 2**31, "d": 0})


def test_other_shapes_fall_back_to_fastavro() -> None:
    from sf311.ingest.records import compile_encoder

    nested = {
        "type": "record",
        "name": "N",
        "fields": [{"name": "xs", "type": {"type": "array", "items": "long"}}],
    }
    assert compile_encoder(nested) is None
    encoder = CaseEncoder(nested, 3)
    assert encoder.encode({"xs": [1, 2]}) == b"\x00\x00\x00\x00\x03" + fastavro_body(
        nested, {"xs": [1, 2]}
    )
