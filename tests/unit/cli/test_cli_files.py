"""`sf311 ingest --source file` ends bad input with one line naming the file (and line), exit 2."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

CASE = b'{"service_request_id": 1, "requested_datetime": "2023-11-27T08:00:00.000"}\n'
BAD_FILES = {
    "missing.csv": (None, "no such file"),
    "folder.csv": ("dir", "is a directory"),
    "unreadable.csv": ("mem", "cannot be read (Input/output error)"),
    "notes.txt": (b"CaseID\n1\n", "unknown file type"),
    "empty.csv": (b"", "is empty (0 bytes)"),
    "header.csv": (b"CaseID,Opened\n", "holds no rows"),
    "array.json": (b"[]\n", "holds no rows"),
    "other.csv": (b"a,b,c\n1,2,3\n", "line 1: no column of the header (a, b, c)"),
    "latin1.csv": (b"CaseID,Opened\n1,x\n2,caf\xe9\n", "line 3: bytes that are not UTF-8"),
    "latin1.jsonl": (CASE + b'{"service_request_id": 2, "notes": "\xe9"}\n', "line 2: bytes"),
    "junk.jsonl": (CASE * 3 + b"\xff\xfe\n", "line 4: bytes that are not UTF-8"),
    "open.json": (b'[{"service_request_id": 1},', "not a readable JSON file"),
    "plain.csv.gz": (b"CaseID\n1\n", "not a whole gzip file"),
    "cut.csv.gz": (gzip.compress(b"CaseID\n1\n" * 1000)[:-9], "not a whole gzip file"),
}


def _make(path: Path, content: bytes | str | None) -> None:
    if content == "dir":
        path.mkdir()
    elif content == "mem":
        # Reading a process's memory at offset 0 fails with EIO, even for root.
        os.symlink("/proc/self/mem", path)
    elif content is not None:
        path.write_bytes(content)


@pytest.mark.usefixtures("no_kafka")
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_input_exits_2_with_one_line_naming_the_file(sf311, tmp_path: Path, name: str):
    content, message = BAD_FILES[name]
    path = tmp_path / name
    _make(path, content)
    code, out, err = sf311("ingest", "--source", "file", str(path))
    assert code == 2 and out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"sf311 ingest: {path}: ") and message in err, err


@pytest.mark.usefixtures("no_kafka")
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("export.csv", b"CaseID,Opened,Category\n1,11/27/2023 08:00:00 AM,Street\n"),
        ("api.csv", b"service_request_id,requested_datetime\n1,2023-11-27T08:00:00.000\n"),
        ("cases.jsonl", CASE),
        ("cases.json.gz", gzip.compress(b"[" + CASE.strip() + b"]")),
    ],
)
def test_good_files_pass_the_same_checks(sf311, tmp_path: Path, name: str, content: bytes):
    (tmp_path / name).write_bytes(content)
    code, out, err = sf311("ingest", "--source", "file", str(tmp_path / name))
    assert (code, out.strip()) == (0, "read=1 produced=1 dead_lettered=0"), err


def test_a_bad_file_is_refused_before_any_service_is_reached(sf311, tmp_path, monkeypatch):
    # No no_kafka fixture: Kafka and the registry at unused ports would fail otherwise.
    monkeypatch.setenv("SF311_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("SF311_SCHEMA_REGISTRY_URL", "http://127.0.0.1:9/apis/ccompat/v7")
    (tmp_path / "other.csv").write_bytes(b"a,b\n1,2\n")
    code, _, err = sf311("ingest", "--source", "file", str(tmp_path / "other.csv"))
    assert code == 2 and "no column of the header" in err
