"""The lake ledger's spool: the lake batch's flush and the driver's idle tick run at the same
time in one process; each spooled row is stored and dropped, neither flush fails."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pytest

from sf311.warehouse import ledgers


def test_two_flushes_at_once_store_every_row_and_neither_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored: list[int] = []

    class Conn:
        def transaction(self):
            return contextlib.nullcontext()

    def slow_insert(conn, row) -> None:
        time.sleep(0.05)  # keeps a file read and not yet dropped while the other flush globs
        stored.append(row["batch_id"])

    monkeypatch.setattr(ledgers.psycopg, "connect", lambda *a, **k: contextlib.nullcontext(Conn()))
    monkeypatch.setattr(ledgers, "insert_lake_batch", slow_insert)
    spool = tmp_path / "spool"
    spool.mkdir()
    for batch in range(4):
        (spool / f"q-{batch:012d}.json").write_text(json.dumps({"batch_id": batch}))
    ledger = ledgers.LakeLedger("postgresql://unused", spool)
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            assert ledger.flush("q") == 0
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=flush) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(set(stored)) == [0, 1, 2, 3] and not list(spool.glob("*.json"))
