"""File readers: DataSF export names, API-named CSV, JSON arrays and lines, gzip, real files."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

import sf311.ingest.files as files
from sf311.ingest.files import read_rows
from sf311.ingest.normalize import DeadLetter, normalize

EXPORT = (
    '"CaseID","Opened","Closed","Updated","Status","Category","Latitude","Longitude","Point"\n'
    '"11064745","06/29/2019 09:48:00 PM","06/30/2019 08:43:04 AM","06/30/2019 08:43:04 AM",'
    '"Closed","Street and Sidewalk Cleaning","37.79829025269","-122.4035949707",'
    '"POINT (-122.40359497 37.79829025)"\n'
)


def test_export_csv_headers_become_api_names(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(EXPORT)
    (row,) = read_rows(path, progress=False)
    assert row["service_request_id"] == "11064745"
    assert row["requested_datetime"] == "06/29/2019 09:48:00 PM"
    case = normalize(row, "file")
    assert case["status_description"] == "Closed"
    assert case["service_name"] == "Street and Sidewalk Cleaning"
    assert case["lat"] == pytest.approx(37.79829025269)
    assert case["extra"] is None


def test_quoted_newlines_and_ragged_lines(tmp_path: Path) -> None:
    path = tmp_path / "api.csv"
    path.write_text('service_request_id,status_notes\n1,"two\nlines"\n2,x,surplus\n3\n')
    rows = list(read_rows(path, progress=False))
    assert rows == [
        {"service_request_id": "1", "status_notes": "two\nlines"},
        {"service_request_id": "2", "status_notes": "x", "_column_2": "surplus"},
        {"service_request_id": "3"},
    ]


@pytest.mark.parametrize("layout", ["array", "array-pretty", "lines"])
def test_json_files_stream_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    monkeypatch.setattr(files, "_CHUNK", 7)
    rows = [
        {"service_request_id": str(i), "point": {"latitude": "37.7", "longitude": "-122.4"}}
        for i in range(25)
    ]
    path = tmp_path / ("rows.jsonl" if layout == "lines" else "rows.json")
    if layout == "array":
        path.write_text(json.dumps(rows))
    elif layout == "array-pretty":
        path.write_text(json.dumps(rows, indent=2))
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert list(read_rows(path, progress=False)) == rows


def test_empty_and_broken_json_arrays(tmp_path: Path) -> None:
    empty, broken = tmp_path / "empty.json", tmp_path / "broken.json"
    empty.write_text(" [ ] ")
    broken.write_text('[{"service_request_id": "1"}, {"service_')
    assert list(read_rows(empty, progress=False)) == []
    with pytest.raises(ValueError):
        list(read_rows(broken, progress=False))


def test_gzipped_files(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("service_request_id,lat\n5,37.7\n")
    assert list(read_rows(path, progress=False)) == [{"service_request_id": "5", "lat": "37.7"}]


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown file type"):
        list(read_rows(tmp_path / "rows.xlsx", progress=False))


@pytest.mark.parametrize(
    ("name", "id_column", "time_column", "time_format"),
    [
        (
            "cases_10k_2008_2019.csv",
            "service_request_id",
            "requested_datetime",
            "%Y-%m-%dT%H:%M:%S.%f",
        ),
        ("export_northbeach_2018_2019.csv", "CaseID", "Opened", "%m/%d/%Y %I:%M:%S %p"),
        (
            "api_raw_2023-11-28.csv",
            "service_request_id",
            "requested_datetime",
            "%Y-%m-%dT%H:%M:%S.%f",
        ),
    ],
)
def test_real_files_normalize_with_exact_counts(
    shared_data: Path, name: str, id_column: str, time_column: str, time_format: str
) -> None:
    from datetime import datetime

    expected_ok, expected_dead = set(), 0
    with open(shared_data / name, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                datetime.strptime(row[time_column], time_format)
                valid = row[id_column].isdigit() and int(row[id_column]) > 0
            except ValueError:
                valid = False
            if valid:
                expected_ok.add(int(row[id_column]))
            else:
                expected_dead += 1
    results = [normalize(r, "file") for r in read_rows(shared_data / name, progress=False)]
    cases = [r for r in results if not isinstance(r, DeadLetter)]
    assert {c["service_request_id"] for c in cases} == expected_ok
    assert len(results) - len(cases) == expected_dead


def test_a_broken_json_line_becomes_a_dead_letter_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"service_request_id": "1", "requested_datetime": "2023-01-01T00:00:00"}\n'
        '{"servi\n'
        "[1, 2]\n"
    )
    results = [normalize(r, "file") for r in read_rows(path, progress=False)]
    assert results[0]["service_request_id"] == 1
    assert [r.reason for r in results[1:]] == ["unparseable line: not a JSON object"] * 2
    assert results[1].raw == {files.UNPARSEABLE: '{"servi\n'}


def test_json_lines_the_fast_parser_refuses_still_parse_like_the_json_module() -> None:
    strict = '{"service_request_id": "1", "point": {"latitude": "37.8"}, "n": 1.5e3}'
    assert files.json_line(strict) == json.loads(strict)
    # NaN, integers beyond 64 bits and lone surrogates are not strict JSON.
    loose = '{"lat": NaN, "id": 123456789012345678901234567890, "s": "\\ud800"}'
    row = files.json_line(loose)
    assert row["lat"] != row["lat"] and row["id"] == 123456789012345678901234567890
    assert row["s"] == "\ud800"
    assert files.json_line("{nope") == {files.UNPARSEABLE: "{nope"}
