"""`sf311 up` after crashes: a dead process with leftovers, a partly running service and the
services that restart with Postgres are brought back without hand work."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from sf311.platform import stack
from sf311.platform.process import Launch, process_table
from sf311.platform.services import Service
from sf311.settings import Settings

# A process that starts a child of its own group, as Postgres starts its backends.
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


class Fake(Service):
    """A service made of Python processes; healthy while all of them run."""

    def __init__(self, settings: Settings, name: str, parts: tuple[str, ...]) -> None:
        super().__init__(settings)
        self.name = name
        self.parts = parts

    def launches(self) -> list[Launch]:
        return [Launch(f"{self.name}-{p}", [sys.executable, "-c", PARENT]) for p in self.parts]

    def healthy(self) -> bool:
        table = process_table(self.settings)
        return all(table.get(launch.name) for launch in self.launches())


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Fake]:
    settings = Settings().model_copy(update={"state_dir": tmp_path})
    services = [
        Fake(settings, "postgres", ("main",)),
        Fake(settings, "broker", ("main",)),
        Fake(settings, "airflow", ("api", "scheduler")),
    ]
    monkeypatch.setattr(stack, "all_services", lambda _: services)
    monkeypatch.setattr(stack, "cluster_services", lambda _: [])
    monkeypatch.setattr(stack, "app_services", lambda _: [])
    yield services
    stack.down(settings)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _child(settings: Settings, name: str) -> int:
    log = process_table(settings).log_path(name)
    deadline = time.monotonic() + 20
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    return int(log.read_text().split()[-1])


def _pids(settings: Settings) -> dict[str, int]:
    table = process_table(settings)
    return {n: r.pid for n in table.names() if (r := table.get(n))}


def _crash(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)


def test_up_restarts_a_partly_running_service_whole(fakes, capsys) -> None:
    settings = fakes[0].settings
    stack.up(settings)
    before = _pids(settings)
    _crash(before["airflow-scheduler"])
    assert stack.status(settings) == stack.STATUS_DOWN
    assert "partial (airflow-scheduler down)" in capsys.readouterr().out

    stack.up(settings)
    after = _pids(settings)
    assert "stopping airflow-api to start it whole" in capsys.readouterr().out
    assert not _alive(before["airflow-api"])
    assert after["airflow-api"] != before["airflow-api"]
    assert after["broker-main"] == before["broker-main"]
    assert stack.status(settings) == stack.STATUS_OK


def test_up_clears_what_a_crashed_process_left_and_restarts_its_dependents(fakes) -> None:
    settings = fakes[0].settings
    stack.up(settings)
    before = _pids(settings)
    orphan = _child(settings, "postgres-main")
    _crash(before["postgres-main"])
    assert _alive(orphan)

    stack.up(settings)
    after = _pids(settings)
    assert not _alive(orphan)
    assert after["postgres-main"] != before["postgres-main"]
    # Airflow keeps its state in Postgres: it starts again with it; the broker does not.
    assert after["airflow-api"] != before["airflow-api"]
    assert after["airflow-scheduler"] != before["airflow-scheduler"]
    assert after["broker-main"] == before["broker-main"]


def test_status_exits_behind_when_a_query_lags_more_than_the_setting(
    fakes, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from sf311.platform import pipeline

    settings = fakes[0].settings.model_copy(update={"status_max_lag": 5})
    fakes[1].name = "kafka"  # the pipeline's lines need Postgres and Kafka healthy
    stream = Fake(settings, "stream", ("main",))
    monkeypatch.setattr(stack, "app_services", lambda _: [stream])
    stack.up(settings)
    stack.up(settings, only=["stream"])
    lag = {"q": pipeline.Lag({0: 10}, {0: 5})}
    monkeypatch.setattr(pipeline, "try_lags", lambda _: lag)
    monkeypatch.setattr(pipeline, "report", lambda *_: [])
    assert stack.status(settings) == stack.STATUS_OK
    lag["q"] = pipeline.Lag({0: 10}, {0: 3})
    assert stack.status(settings) == stack.STATUS_BEHIND
    assert "stream behind by 7 messages" in capsys.readouterr().out

    process_table(settings).stop("stream-main")
    assert stack.status(settings) == stack.STATUS_DOWN
    assert re.search(r"stream\s+down", capsys.readouterr().out)
