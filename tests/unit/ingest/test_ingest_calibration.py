"""The generator's calibration: reproducible from the real files, fit on what they hold."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from sf311.cli import main
from sf311.contract.quality import closure_kind
from sf311.ingest.calibration import CALIBRATION, NOT_RESOLUTIONS, calibrate

STAMP = "%Y-%m-%dT%H:%M:%S.000"
REAL_FILES = ("cases_10k_2008_2019.csv", "api_raw_2023-11-28.csv")
COLUMNS = [
    "service_request_id", "requested_datetime", "closed_date", "status_notes",
    "agency_responsible", "service_name", "service_subtype", "source",
    "neighborhoods_sffind_boundaries", "supervisor_district", "police_district", "address",
    "lat", "long",
]  # fmt: skip


def test_committed_calibration_is_what_calibrate_computes(shared_data: Path) -> None:
    fresh = json.loads(json.dumps(calibrate([shared_data / name for name in REAL_FILES])))
    assert fresh == json.loads(CALIBRATION.read_text())


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _cases(n: int) -> list[dict]:
    """Return `n` cases: Slow takes ~200 h, Fast ~1 h; every 10th a duplicate, one free text."""
    rows = []
    for i in range(n):
        slow = i % 2 == 0
        requested = datetime(2019, 1, 1 + i % 28, i % 24)
        closed = requested + timedelta(hours=(200 if slow else 1) * (1 + (i % 7) / 10))
        notes = "Duplicate case." if i % 10 == 3 else "Completed"
        rows.append(
            {
                "service_request_id": str(i),
                "requested_datetime": requested.strftime(STAMP),
                "closed_date": closed.strftime(STAMP),
                "status_notes": "Duplicate of 1234567" if i == 5 else notes,
                "agency_responsible": "Queue S" if slow else "Queue F",
                "service_name": "Slow" if slow else "Fast",
                "service_subtype": f"sub{i % 3}",
                "source": "Phone" if i % 3 else "Web",
                "neighborhoods_sffind_boundaries": "Mission",
                "supervisor_district": "9",
                "police_district": "MISSION",
                "address": "100 VALENCIA ST, SAN FRANCISCO, CA, 94110",
                "lat": "37.76",
                "long": "-122.42",
            }
        )
    return rows


def test_durations_and_closure_kinds_follow_the_cases(tmp_path: Path) -> None:
    cal = calibrate([_write(tmp_path / "cases.csv", _cases(600))])
    effects = cal["durations"]
    slow, fast = (
        effects["category"][cat] + effects["agency"][queue] + effects["subtype"][cat]["sub0"]
        for cat, queue in (("Slow", "Queue S"), ("Fast", "Queue F"))
    )
    # log1p(200 * 1.3) - log1p(1 * 1.3) is about 4.7, spread over three nested effects.
    assert 4.4 < slow - fast < 4.9
    assert effects["r2_in_sample"] > 0.95
    shares = cal["closure_kinds"]["shares"]["global"]
    assert shares["duplicate"] == pytest.approx(61 / 600, abs=1e-4)
    # The note with a number in it is the case's own text: it is counted, never copied.
    assert cal["closure_kinds"]["notes"]["duplicate"] == [["Duplicate case.", 60]]
    for category in cal["categories"]:
        kinds = {closure_kind(note, True) for note, _ in category["closed_notes"]}
        assert not kinds & set(NOT_RESOLUTIONS)


def test_cli_writes_the_calibration_where_asked(tmp_path: Path) -> None:
    cases = _write(tmp_path / "cases.csv", _cases(300))
    out = tmp_path / "calibration.json"
    assert main(["calibrate", str(cases), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"] == 300


def test_cli_refuses_missing_and_empty_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "calibration.json"
    assert main(["calibrate", str(tmp_path / "absent.csv"), "--out", str(out)]) == 2
    empty = _write(tmp_path / "empty.csv", [])
    assert main(["calibrate", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "absent.csv" in err[0] and "empty.csv" in err[1]
    assert not out.exists()
