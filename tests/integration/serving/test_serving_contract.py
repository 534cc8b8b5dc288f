"""The prediction API's closed contract on a real uvicorn over loopback: schemathesis with all
its checks against /openapi.json, and bodies too large refused before they are read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from sf311.model.champion import LoadedModel, ModelService
from sf311.serving.body import MAX_BODY_BYTES
from sf311.settings import Settings
from tests.support import scratch
from tests.support.api_server import serve_api
from tests.support.models import paper_scorer

pytestmark = pytest.mark.integration
# Per operation and phase; the whole run takes about a minute on two shared cores.
MAX_EXAMPLES = 60
CASE = {"requested_datetime": "2019-01-15T20:00:00-08:00", "service_name": "B"}


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    # Its own migrated warehouse: stored predictions are read whatever the shared one holds.
    db = scratch.create(settings, "serving_contract_test")
    local = settings.model_copy(update={"analyst_dsn": SecretStr(db.analyst_dsn)})
    service = ModelService(LoadedModel(paper_scorer(["A", "B"]), "7"))
    with serve_api(local, service) as url:
        yield url
    scratch.drop(settings, db.name)


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(api_url, tmp_path) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    command = [
        str(schemathesis),
        "run",
        f"{api_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--request-timeout",
        "30",
    ]
    # Random ids are unknown cases, so the stored-prediction route rightly answers 404 to almost
    # all: no warning for that (its 200 is checked on a seeded warehouse beside this file).
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-path = "/cases/{service_request_id}/prediction"\n'
        "warnings = false\n"
    )
    started = time.monotonic()
    # Its example database and reports land in tmp_path, not in the work tree.
    run = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
    )
    took = time.monotonic() - started
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis failed after {took:.0f} s:\n{report[-6000:]}"
    # Nothing skipped or errored: each of the five operations was really exercised.
    assert "5 selected / 5 total" in report and "No issues found" in report, report[-3000:]
    print(f"schemathesis: {took:.0f} s, {MAX_EXAMPLES} examples per operation and phase")


def _exchange(url: str, request: bytes, chunks: Sequence[bytes] = ()) -> bytes:
    """Send `request`, then `chunks` until the server answers early; return the answer.
    Reading between chunks catches an answer the server sends before it closes on unread data."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(0.01)
        answer = b""
        for chunk in chunks:
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                pass
            if answer:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def _head(length_header: str) -> bytes:
    return (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{length_header}\r\n\r\n"
    ).encode()


def test_declared_length_over_the_limit_is_refused_unread(api_url) -> None:
    # 1 GB announced, none of it sent: the answer can only come from the declared length.
    answer = _exchange(api_url, _head("Content-Length: 1000000000"))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()


def test_chunked_body_is_refused_once_past_the_limit(api_url) -> None:
    chunk = b" " * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = MAX_BODY_BYTES // len(chunk) + 20  # a little over the limit, then no more
    answer = _exchange(api_url, _head("Transfer-Encoding: chunked"), [framed] * sent)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_chunked_body_under_the_limit_is_scored(api_url) -> None:
    body = json.dumps(CASE).encode()
    framed = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:9], body[9:]))
    answer = _exchange(api_url, _head("Transfer-Encoding: chunked") + framed + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
