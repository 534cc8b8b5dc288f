"""The stack's own promises: `up` is idempotent, a taken port stops it before anything starts,
and Airflow's api-server serves the project's DAGs."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest
import requests
from pydantic import SecretStr

from sf311.platform import stack
from sf311.platform.process import StackError, process_table
from sf311.platform.services import Airflow
from sf311.settings import PROJECT_ROOT, Settings


def test_up_twice_is_harmless(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    table = process_table(settings)
    before = {name: table.get(name) for name in table.names()}
    stack.up(settings)
    out = capsys.readouterr().out
    assert out.count("already running") == 5
    assert {name: table.get(name) for name in table.names()} == before


def _isolated(settings: Settings, state: Path, kafka_port: int) -> Settings:
    return settings.model_copy(
        update={
            "state_dir": state,
            "postgres_dsn": SecretStr("postgresql://sf311:sf311@127.0.0.1:55999/sf311"),
            "kafka_bootstrap_servers": f"127.0.0.1:{kafka_port}",
        }
    )


def test_a_missing_download_fails_clearly_and_starts_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(StackError, match=r"kafka: no broker jars in .*: run `make setup`"):
        stack.up(_isolated(settings, tmp_path, 59092), only=["postgres", "kafka"])
    assert not (tmp_path / "postgres" / "data").exists()


def test_a_taken_port_fails_clearly_and_starts_nothing(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "jars").symlink_to(settings.state_dir / "jars")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(StackError, match=rf"kafka: port 127\.0\.0\.1:{port} is taken"):
            stack.up(_isolated(settings, tmp_path, port), only=["postgres", "kafka"])
    assert not any((tmp_path / "run").glob("*.json"))
    assert not (tmp_path / "postgres" / "data").exists()


def _project_dag_ids() -> set[str]:
    ids = set()
    for path in (PROJECT_ROOT / "dags").glob("*.py"):
        ids |= set(re.findall(r"dag_id=\"([\w.-]+)\"", path.read_text()))
    return ids


def test_airflow_api_lists_the_project_dags(settings: Settings) -> None:
    expected = _project_dag_ids()
    assert expected, "dags/ defines no DAG with an explicit dag_id"
    airflow = Airflow(settings)
    base = f"http://{airflow.http}"
    token = requests.post(
        f"{base}/auth/token",
        json={"username": "admin", "password": airflow.admin_password()},
        timeout=10,
    )
    assert token.status_code == 201, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert requests.get(f"{base}/api/v2/dags", timeout=10).status_code == 401

    deadline = time.monotonic() + 120  # the dag-processor parses dags/ on its own schedule
    listed: set[str] = set()
    while time.monotonic() < deadline:
        answer = requests.get(f"{base}/api/v2/dags", headers=headers, timeout=10)
        assert answer.status_code == 200
        listed = {d["dag_id"] for d in answer.json()["dags"]}
        if expected <= listed:
            break
        time.sleep(3)
    assert expected <= listed
    errors = requests.get(f"{base}/api/v2/importErrors", headers=headers, timeout=10).json()
    assert errors["total_entries"] == 0, errors
