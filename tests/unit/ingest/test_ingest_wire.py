"""The fused row -> wire path gives the same messages, byte for byte, as normalize + encode."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import fastavro
import pytest

from sf311.ingest.files import read_rows
from sf311.ingest.generate import CaseGenerator, write_cases
from sf311.ingest.normalize import DeadLetter, normalize
from sf311.ingest.produce import dead_letter_message
from sf311.ingest.records import CaseEncoder, decode, latest_schema_path, load_schema
from sf311.ingest.wire import RowEncoder, _OffPath, fits_layout, fused_encoder

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
SCHEMA = load_schema(latest_schema_path(SCHEMAS))
REAL_FILES = [
    "cases_10k_2008_2019.csv",
    "export_northbeach_2018_2019.csv",
    "api_raw_2023-11-28.csv",
]

# A generated row in the API's JSON form, with the fields the decode test reads set by hand.
BASE = {
    **CaseGenerator(seed=1).case(0, 1),
    "service_request_id": "17598709",
    "requested_datetime": "2023-11-28T01:31:07.000",
    "supervisor_district": "3",
    ":@computed_region_jwn9_ihcz": "21",
}
# Each variant of BASE exercises one branch of normalize(); the fused path must agree on all.
VARIANTS = [
    {},
    {"service_request_id": "0042"},
    {"service_request_id": "0"},
    {"service_request_id": ""},
    {"service_request_id": 17598709},
    {"requested_datetime": "later"},
    {"requested_datetime": "2023-02-30T10:00:00.000"},
    {"requested_datetime": "2023-11-05T01:30:00.000"},  # the repeated hour of fall-back
    {"requested_datetime": "2023-03-12T02:30:00.000"},  # the skipped hour of spring-forward
    {"requested_datetime": "2023-11-28T01:31:07.000Z"},
    {"requested_datetime": "2023-11-28T01:31:60.000"},
    {"requested_datetime": "06/29/2019 09:48:00 PM"},
    {"updated_datetime": ""},
    {"updated_datetime": "not a time"},
    {"closed_date": "2023-11-28T01:31:07.5"},
    {"status_description": "  Closed  ", "status_notes": "   ", "street": "Ünïcode ST"},
    {"address": 12, "source": None},
    {"supervisor_district": "3.0", "bos_2012": ""},
    {"supervisor_district": "x"},
    {"supervisor_district": "99999999999"},
    {"lat": "0", "long": "0"},
    {"lat": "37.9", "long": "-122.4"},
    {"lat": "nan"},
    {"lat": "", "long": "", "point": {"latitude": "37.8", "longitude": "-122.4"}},
    {"lat": None, "long": None, "point": None},
    {"lat": "north"},
    {"media_url": {"url": " http://x/y.jpg "}},
    {"media_url": '{"url": "http://x/z.jpg"}'},
    {"media_url": ""},
    {":@computed_region_jwn9_ihcz": ""},
    {"new_column": {"nested": [1, 2]}, "other": "v"},
    {"status_notes": {"unhashable": True}},
]


def reference(encoder: CaseEncoder, rows: list[dict], origin: str) -> tuple[list, list]:
    cases, dead = [], []
    for raw in rows:
        case = normalize(raw, origin)
        if isinstance(case, DeadLetter):
            dead.append(dead_letter_message(case, origin))
        else:
            cases.append((str(case["service_request_id"]).encode(), encoder.encode(case)))
    return cases, dead


def fused_share(encoder: CaseEncoder, rows: list[dict]) -> float:
    fused, done = fused_encoder(encoder.header, "file"), 0
    for raw in rows:
        try:
            fused(raw)
            done += 1
        except _OffPath:
            pass
    return done / len(rows)


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_give_identical_messages(shared_data: Path, name: str) -> None:
    encoder = CaseEncoder(SCHEMA, 3)
    rows = list(read_rows(shared_data / name, progress=False))
    assert RowEncoder(encoder, "file").messages(rows) == reference(encoder, rows, "file")
    # Only rows with no or a flagged location leave the fused path on these files.
    assert fused_share(encoder, rows) > 0.9


def test_generated_rows_give_identical_messages(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    write_cases(path, rows=3000, seed=5)
    rows = list(read_rows(path, progress=False))
    encoder = CaseEncoder(SCHEMA, 3)
    assert RowEncoder(encoder, "socrata").messages(rows) == reference(encoder, rows, "socrata")
    assert fused_share(encoder, rows) > 0.9


@pytest.mark.parametrize("change", VARIANTS, ids=[json.dumps(v)[:40] for v in VARIANTS])
def test_every_branch_agrees_with_the_reference(change: dict) -> None:
    raw = {**BASE, **change}
    encoder = CaseEncoder(SCHEMA, 3)
    try:
        expected = reference(encoder, [raw], "file")
    except ValueError as err:  # an int out of the schema's range fails the reference encoder
        with pytest.raises(ValueError, match=str(err)):
            RowEncoder(encoder, "file").messages([raw])
        return
    # Twice through one encoder: the second answer comes from the per-value tables.
    rows_in = RowEncoder(encoder, "file")
    assert rows_in.messages([raw]) == expected
    assert rows_in.messages([copy.deepcopy(raw)]) == expected


def test_fused_values_decode_to_the_normalized_case() -> None:
    encoder = CaseEncoder(SCHEMA, 3)
    ((key, value),), dead = RowEncoder(encoder, "file").messages([BASE])
    record = decode(value, {3: fastavro.parse_schema(SCHEMA)})
    assert key == b"17598709" and dead == []
    assert record["requested_datetime"].isoformat() == "2023-11-28T09:31:07+00:00"
    assert record["supervisor_district"] == 3 and record["location_issue"] is None
    assert record["extra"] == '{":@computed_region_jwn9_ihcz":"21"}'


def test_another_schema_layout_takes_the_reference_path() -> None:
    schema = copy.deepcopy(SCHEMA)
    schema["fields"].append({"name": "x", "type": ["null", "string"], "default": None, "doc": "x"})
    assert fits_layout(SCHEMA) and not fits_layout(schema)
    encoder = CaseEncoder(schema, 4)
    raw = {**BASE}
    case = normalize(raw, "file")
    with pytest.raises(KeyError):
        encoder.encode(case)  # proves the reference path ran: the case lacks field x
    with pytest.raises(KeyError):
        RowEncoder(encoder, "file").messages([raw])
