"""Background processes of the local stack, each in its own process group, tracked by pidfile."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sf311.settings import Settings


class StackError(RuntimeError):
    """A service cannot start or stop; the message says what to do."""


@dataclass(frozen=True)
class Launch:
    """How to start one long-running process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM


@dataclass(frozen=True)
class Running:
    """A started process as its pidfile records it."""

    name: str
    pid: int
    pgid: int
    start_ticks: int
    argv: list[str]


def _start_ticks(pid: int) -> int | None:
    """Return the process start time in clock ticks, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the parenthesised command name, which may itself hold spaces: the state
    # (field 3) and the start time (field 22).
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        # Dead but not yet reaped by its parent (us, when this process started it).
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return None
    return int(fields[19])


def port_is_free(host: str, port: int) -> bool:
    """Return True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Return True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ProcessTable:
    """Pidfiles under one run folder: which processes of ours are alive."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        """Return the log file of a named process."""
        return self.log_dir / f"{name}.log"

    def get(self, name: str) -> Running | None:
        """Return the named process when it is alive and is the one we started, else None."""
        path = self._pidfile(name)
        if not path.exists():
            return None
        running = Running(**json.loads(path.read_text()))
        if _start_ticks(running.pid) != running.start_ticks:
            path.unlink()
            return None
        return running

    def start(self, launch: Launch) -> Running:
        """Start a process in a new session (its own process group) and record it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(launch.name).open("ab")
        env = {**os.environ, **launch.env}
        try:
            proc = subprocess.Popen(
                launch.argv,
                cwd=launch.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=launch.user,
            )
        except FileNotFoundError as err:
            raise StackError(f"{launch.name}: {err.filename} not found: run `make setup`") from err
        finally:
            log.close()
        ticks = _start_ticks(proc.pid) or 0
        running = Running(launch.name, proc.pid, proc.pid, ticks, launch.argv)
        self._pidfile(launch.name).write_text(json.dumps(running.__dict__))
        return running

    def stop(self, name: str, stop_signal: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
        """Stop a process group we started: stop_signal, then SIGKILL; True if one was running."""
        running = self.get(name)
        if running is None:
            return False
        _signal_group(running.pgid, stop_signal)
        deadline = time.monotonic() + timeout
        while _group_alive(running.pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(running.pgid):
            _signal_group(running.pgid, signal.SIGKILL)
            while _group_alive(running.pgid):
                time.sleep(0.1)
        self._pidfile(name).unlink(missing_ok=True)
        return True

    def clear(self, name: str, timeout: float = 30.0) -> bool:
        """Drop the pidfile of a recorded process that died, killing what its group left
        behind; return True when there was one."""
        path = self._pidfile(name)
        if not path.exists():
            return False
        running = Running(**json.loads(path.read_text()))
        ticks = _start_ticks(running.pid)
        if ticks == running.start_ticks:
            return False
        # A leader killed with -9 leaves its children (Postgres backends holding the shared
        # memory, Airflow's workers); its PID reused by another group leader is not ours.
        if ticks is None and _group_alive(running.pgid):
            _signal_group(running.pgid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while _group_alive(running.pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
        path.unlink(missing_ok=True)
        return True

    def names(self) -> list[str]:
        """Return the names of every recorded process."""
        return sorted(p.stem for p in self.run_dir.glob("*.json"))


def process_table(settings: Settings) -> ProcessTable:
    """Return the pidfile table of the local stack under the state folder."""
    return ProcessTable(settings.state_dir / "run", settings.state_dir / "logs")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    # A zombie leader still counts in killpg; reap it if it is our child.
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return _group_has_live_member(pgid)


def _group_has_live_member(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    """Return once check() is true; raise StackError naming what and its log on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    hint = f"; see {log}" if log else ""
    raise StackError(f"{what} not healthy after {timeout:.0f} s{hint}")
