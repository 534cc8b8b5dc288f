"""The columnar block -> wire path gives the same messages, byte for byte, as normalize + encode."""

from __future__ import annotations

import copy
import csv
import gzip
import json
from datetime import datetime
from pathlib import Path

import fastavro
import pytest

from sf311.contract.schema import latest_schema_path, layout, load_schema
from sf311.ingest.extract import read_page
from sf311.ingest.files import read_batches, read_rows
from sf311.ingest.generate import CaseGenerator, write_cases
from sf311.ingest.normalize import DeadLetter, normalize
from sf311.ingest.produce import dead_letter_message
from sf311.ingest.records import CaseEncoder, decode
from sf311.ingest.watermark import Watermark
from sf311.ingest.wire import COLUMNAR_LAYOUT, BlockEncoder

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
# Each variant of BASE exercises one branch of normalize(); the columnar path must agree on all.
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


def file_messages(blocks: BlockEncoder, path: Path, size: int = 1000) -> tuple[list, list]:
    """Messages of a file as ingest_file makes them: RawBatches, each encoded as a block."""
    cases, dead = [], []
    for batch in read_batches(path, size, progress=False):
        more_cases, more_dead = blocks.batch(batch)
        cases += more_cases
        dead += more_dead
    return cases, dead


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_give_identical_messages(shared_data: Path, name: str) -> None:
    encoder = CaseEncoder(SCHEMA, 3)
    rows = list(read_rows(shared_data / name, progress=False))
    expected = reference(encoder, rows, "file")
    blocks = BlockEncoder(encoder, "file")
    assert file_messages(blocks, shared_data / name) == expected
    # Only rows with no location or a value the reference strips leave the columns here.
    assert blocks.reference_rows < 0.1 * len(rows)
    # The same rows as dicts, the shape of a SODA page.
    assert BlockEncoder(encoder, "file").rows(rows) == expected


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".csv"])
def test_generated_rows_give_identical_messages(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cases{suffix}"
    generated = tmp_path / "cases.jsonl"
    write_cases(generated, rows=3000, seed=5)
    rows = list(read_rows(generated, progress=False))
    if suffix == ".jsonl.gz":
        path.write_bytes(gzip.compress(generated.read_bytes()))
    elif suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    elif suffix == ".csv":
        names = sorted({k for row in rows for k in row} - {"point", "point_geom", "media_url"})
        rows = [{k: v for k, v in row.items() if k in names} for row in rows]
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, names)
            writer.writeheader()
            writer.writerows(rows)
        rows = list(read_rows(path, progress=False))
    else:
        path = generated
    encoder = CaseEncoder(SCHEMA, 3)
    expected = reference(encoder, rows, "file")
    blocks = BlockEncoder(encoder, "file")
    assert file_messages(blocks, path, size=700) == expected
    assert blocks.reference_rows < 0.1 * len(rows)
    assert BlockEncoder(encoder, "file").rows(rows) == expected


@pytest.mark.parametrize("change", VARIANTS, ids=[json.dumps(v)[:40] for v in VARIANTS])
def test_every_branch_agrees_with_the_reference(change: dict) -> None:
    raw = {**BASE, **change}
    # Between two ordinary rows, so that the odd one is put back in its place.
    rows = [BASE, raw, {**BASE, "service_request_id": "17598710"}]
    encoder = CaseEncoder(SCHEMA, 3)
    line = json.dumps(raw).encode() + b"\n"
    lines = [json.dumps(row).encode() + b"\n" for row in rows]
    lines[1] = line
    try:
        expected = reference(encoder, rows, "file")
    except ValueError as err:  # an int out of the schema's range fails the reference encoder
        with pytest.raises(ValueError, match=str(err)):
            BlockEncoder(encoder, "file").rows(rows)
        return
    # Twice through one encoder: the second time the clock's per-hour offsets are known.
    blocks = BlockEncoder(encoder, "file")
    assert blocks.rows(rows) == expected
    assert blocks.rows(copy.deepcopy(rows)) == expected
    assert blocks.json_lines(lines, lambda i: json.loads(lines[i])) == expected
    if all(isinstance(v, str) for v in raw.values() if v is not None):
        header = sorted(set(raw) | set(BASE))
        cells = [[row.get(k) or "" for k in header] for row in rows]
        as_csv = [{k: v for k, v in zip(header, c, strict=True)} for c in cells]
        assert blocks.cells(header, cells, as_csv.__getitem__) == reference(encoder, as_csv, "file")


QUIRKY_LINES = [
    "\ufeff" + json.dumps(BASE),  # a byte-order mark before the first line
    "",
    "   ",
    "\u00a0",  # blank for str.strip() though not for bytes.strip()
    json.dumps({**BASE, "service_request_id": "2"}) + "\r",
    json.dumps({**BASE, "service_request_id": "3"}) + " " + json.dumps(BASE),  # two objects
    "not json",
    "[1, 2]",
    '{"service_request_id": "4", "service_request_id": "5"}',  # a repeated key
    json.dumps({**BASE, "service_request_id": 6}),  # a number, not a string
    json.dumps({**BASE, "status_notes": "\u00e9t\u00e9 "}, ensure_ascii=False),
    json.dumps({**BASE, "new": 'quote " inside', "other": 1.5}),
]


def test_quirky_json_lines_give_identical_messages(tmp_path: Path) -> None:
    path = tmp_path / "quirky.jsonl"
    path.write_bytes("\n".join(QUIRKY_LINES * 3).encode())
    encoder = CaseEncoder(SCHEMA, 3)
    rows = list(read_rows(path, progress=False))
    expected = reference(encoder, rows, "file")
    assert len(expected[0]) + len(expected[1]) == len(rows) == 3 * 9
    for size in (1, 4, 1000):
        assert file_messages(BlockEncoder(encoder, "file"), path, size) == expected


def test_columnar_values_decode_to_the_normalized_case() -> None:
    encoder = CaseEncoder(SCHEMA, 3)
    blocks = BlockEncoder(encoder, "file")
    ((key, value),), dead = blocks.rows([BASE])
    record = decode(value, {3: fastavro.parse_schema(SCHEMA)})
    assert key == b"17598709" and dead == [] and blocks.reference_rows == 0
    assert record["requested_datetime"].isoformat() == "2023-11-28T09:31:07+00:00"
    assert record["supervisor_district"] == 3 and record["location_issue"] is None
    assert record["extra"] == '{":@computed_region_jwn9_ihcz":"21"}'


def test_daylight_saving_edges_follow_the_reference() -> None:
    """The repeated hour takes its first (PDT) offset; a skipped hour is read as PST."""
    encoder = CaseEncoder(SCHEMA, 3)
    times = [
        "2023-11-05T00:59:59.999", "2023-11-05T01:30:00.000", "2023-11-05T02:00:00.000",
        "2023-03-12T01:59:59.000", "2023-03-12T02:30:00.000", "2023-03-12T03:00:00.000",
        "11/05/2023 01:30:00 AM", "03/12/2023 02:30:00 AM", "2008-03-09T02:15:00.000",
    ]  # fmt: skip
    rows = [{**BASE, "requested_datetime": t} for t in times]
    blocks = BlockEncoder(encoder, "file")
    cases, _ = blocks.rows(rows)
    assert (cases, []) == reference(encoder, rows, "file") and blocks.reference_rows == 0
    parsed = fastavro.parse_schema(SCHEMA)
    utc = [decode(v, {3: parsed})["requested_datetime"].strftime("%H:%M") for _, v in cases]
    assert utc == ["07:59", "08:30", "10:00", "09:59", "10:30", "10:00", "08:30", "10:30", "10:15"]


def test_another_schema_layout_takes_the_reference_path() -> None:
    schema = copy.deepcopy(SCHEMA)
    schema["fields"].append({"name": "x", "type": ["null", "string"], "default": None, "doc": "x"})
    assert layout(SCHEMA) == COLUMNAR_LAYOUT != layout(schema)
    encoder = CaseEncoder(schema, 4)
    raw = {**BASE}
    case = normalize(raw, "file")
    with pytest.raises(KeyError):
        encoder.encode(case)  # proves the reference path ran: the case lacks field x
    with pytest.raises(KeyError):
        BlockEncoder(encoder, "file").rows([raw])


def test_soda_pages_read_by_arrow_give_identical_messages(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    write_cases(path, rows=2000, seed=6)
    rows = list(read_rows(path, progress=False))
    rows[7] = {**rows[7], "lat": None, "point": {"latitude": "37.7", "longitude": "-122.4"}}
    rows[9] = {**rows[9], "status_notes": " padded "}
    body = json.dumps(rows, indent=1).encode()
    page = read_page(body, lambda: json.loads(body))
    assert page is not None and len(page) == len(rows) and page[7] == rows[7]
    encoder = CaseEncoder(SCHEMA, 3)
    blocks = BlockEncoder(encoder, "socrata")
    assert blocks.page(page) == reference(encoder, rows, "socrata")
    assert blocks.reference_rows == 2
    assert page.last_key() == Watermark(
        datetime.fromisoformat(rows[-1]["updated_datetime"]), int(rows[-1]["service_request_id"])
    )


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"error": true}', b'[{"a": "1"}, {"a": 2}]', b'[{"a": "1"}, null]', b"[1, 2]"],
)
def test_pages_arrow_cannot_read_whole_are_left_to_orjson(body: bytes) -> None:
    assert read_page(body, list) is None


def test_lines_arrow_cannot_read_cost_only_a_small_block(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    write_cases(path, rows=1500, seed=8)
    lines = path.read_bytes().splitlines(keepends=True)
    for at in (10, 700, 1400):
        lines.insert(at, b"not json\n")
    path.write_bytes(b"".join(lines))
    encoder = CaseEncoder(SCHEMA, 3)
    expected = reference(encoder, list(read_rows(path, progress=False)), "file")
    blocks = BlockEncoder(encoder, "file")
    assert file_messages(blocks, path, size=1503) == expected
    assert len(expected[1]) == 3 and blocks.reference_rows <= 3 * 64
