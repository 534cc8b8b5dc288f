"""A private stack (Postgres, Kafka, schema registry) under its own state folder and on free
ports, for tests that kill services: never the shared stack other tests and people use."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from sf311.platform import stack
from sf311.platform.process import process_table
from sf311.settings import PROJECT_ROOT, Settings

SERVICES = ["postgres", "kafka", "registry"]


def free_ports(n: int) -> list[int]:
    """Return n loopback ports free at the time of the call."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def private_settings(settings: Settings, state: Path) -> Settings:
    """Return settings whose stack lives in `state` on free ports, with the shared jars."""
    pg, kafka, controller, registry, management = free_ports(5)
    state.mkdir(parents=True, exist_ok=True)
    if not (state / "jars").exists():
        (state / "jars").symlink_to(settings.state_dir / "jars")

    def dsn(user: str, db: str) -> SecretStr:
        return SecretStr(f"postgresql://{user}:{user}@127.0.0.1:{pg}/{db}")

    return settings.model_copy(
        update={
            "state_dir": state,
            "postgres_dsn": dsn("sf311", "sf311"),
            "analyst_dsn": dsn("analyst", "sf311"),
            "mlflow_backend_dsn": dsn("sf311", "mlflow"),
            "airflow_dsn": dsn("sf311", "airflow"),
            "kafka_bootstrap_servers": f"127.0.0.1:{kafka}",
            "kafka_controller_port": controller,
            "schema_registry_url": f"http://127.0.0.1:{registry}/apis/ccompat/v7",
            "registry_management_port": management,
            "lake_path": str(state / "lake"),
            "checkpoint_path": str(state / "checkpoints"),
        }
    )


@contextmanager
def private_stack(settings: Settings, state: Path) -> Iterator[Settings]:
    """Start Postgres, Kafka and the registry privately; yield their settings; stop them."""
    private = private_settings(settings, state)
    try:
        stack.up(private, only=SERVICES)
        yield private
    finally:
        stack.down(private)


def kill9(settings: Settings, process: str) -> None:
    """Crash one process of a private stack: SIGKILL to its main process alone, as a crash
    would, then wait until it is gone (its children are left to die or linger)."""
    running = process_table(settings).get(process)
    assert running is not None, f"{process} is not running"
    assert settings.state_dir != PROJECT_ROOT / "var", "kill9 is for private stacks only"
    os.kill(running.pid, signal.SIGKILL)
    # Reaped (it is this process's child) only once all its threads have exited.
    deadline = time.monotonic() + 30
    while Path(f"/proc/{running.pid}").exists() and time.monotonic() < deadline:
        try:
            os.waitpid(running.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
