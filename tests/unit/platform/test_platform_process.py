"""Process groups: started, found again, stopped whole, never confused with another PID."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from sf311.platform.process import Launch, ProcessTable, port_is_free

# A parent that starts a child ignoring SIGTERM, as Airflow's task workers do.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def table(tmp_path: Path) -> ProcessTable:
    return ProcessTable(tmp_path / "run", tmp_path / "logs")


def test_stop_kills_the_whole_group_including_children_that_ignore_sigterm(
    table: ProcessTable,
) -> None:
    running = table.start(Launch("stubborn", [sys.executable, "-c", STUBBORN]))
    log = table.log_path("stubborn")
    deadline = time.monotonic() + 20
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(log.read_text().split()[0])
    assert table.get("stubborn") == running
    assert _alive(child)

    assert table.stop("stubborn", timeout=1.0) is True
    assert not _alive(running.pid)
    assert not _alive(child)
    assert table.get("stubborn") is None
    assert table.names() == []


def test_a_recycled_pid_is_not_taken_for_ours(table: ProcessTable) -> None:
    running = table.start(Launch("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"]))
    pidfile = table.run_dir / "sleeper.json"
    record = json.loads(pidfile.read_text())
    record["start_ticks"] -= 1  # same PID, different start time: another process
    pidfile.write_text(json.dumps(record))
    assert table.get("sleeper") is None
    assert not pidfile.exists()
    os.killpg(running.pgid, 9)


def test_stop_of_nothing_running_is_harmless(table: ProcessTable) -> None:
    assert table.stop("never-started") is False


def test_port_is_free_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)


def test_a_process_that_exited_is_not_running_even_before_it_is_reaped(
    table: ProcessTable,
) -> None:
    table.start(Launch("brief", [sys.executable, "-c", "raise SystemExit(3)"]))
    deadline = time.monotonic() + 30
    # Its pidfile stays until get() looks; the exited child is a zombie of this process.
    while table.get("brief") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert table.get("brief") is None
    assert table.names() == []
