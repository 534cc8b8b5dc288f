"""The stack's closed surface: every listening socket on loopback, secrets out of command lines,
logs and readable files, MLflow writes for the `sf311` user alone, the analyst confined to the
warehouse."""

from __future__ import annotations

import ipaddress
import os
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from sf311.credentials import MLFLOW_READER, mlflow_login, secrets_dir
from sf311.platform.process import process_table
from sf311.platform.services import Airflow, Mlflow, Postgres, dsn_parts
from sf311.settings import Settings

LISTEN = "0A"


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _tree(roots: list[int]) -> set[int]:
    """Return the pids of roots and all their descendants."""
    children, seen, todo = _children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def _stack_pids(settings: Settings) -> set[int]:
    table = process_table(settings)
    roots = [r.pid for name in table.names() if (r := table.get(name))]
    assert roots, "no process of the stack is running"
    return _tree(roots)


def _socket_inodes(pids: set[int]) -> dict[int, int]:
    """Return socket inode -> pid for every socket the processes hold open."""
    inodes = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except (FileNotFoundError, ProcessLookupError):
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[int(target[8:-1])] = pid
    return inodes


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    # /proc/net/tcp{,6} print each 32-bit word of the address in host (little-endian) order.
    return ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))


def _listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """Return (address, port, process name) of every TCP socket the processes listen on."""
    owners = _socket_inodes(pids)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            inode = int(fields[9])
            if fields[3] == LISTEN and inode in owners:
                host, port = fields[1].split(":")
                comm = Path(f"/proc/{owners[inode]}/comm").read_text().strip()
                found.append((str(_address(host)), int(port, 16), comm))
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def test_every_socket_of_the_stack_listens_on_loopback(settings: Settings) -> None:
    sockets = _listening(_stack_pids(settings))
    ports = {port for _, port, _ in sockets}
    expected = {Postgres(settings).port, Mlflow(settings).http.port, Airflow(settings).http.port}
    assert expected <= ports, sockets
    assert [s for s in sockets if not _loopback(s[0])] == []


def test_a_spark_session_listens_on_loopback_only(spark: Any) -> None:
    spark.range(10).count()  # the block manager serves after a first job
    sockets = _listening(_tree([os.getpid()]))
    assert any(comm == "java" for _, _, comm in sockets), sockets
    assert [s for s in sockets if not _loopback(s[0])] == []


def _known_secrets(settings: Settings) -> dict[str, str]:
    """Return what must never show: each generated secret and each DSN's `:password@`."""
    airflow = Airflow(settings)
    known = {p.name: p.read_text().strip() for p in secrets_dir(settings).iterdir()}
    known["airflow admin"] = airflow.admin_password()
    known["airflow jwt"] = (airflow.home / "jwt_secret").read_text().strip()
    for name in ("postgres_dsn", "analyst_dsn", "mlflow_backend_dsn", "airflow_dsn"):
        known[name] = f":{dsn_parts(getattr(settings, name).get_secret_value())[3]}@"
    assert all(len(v) >= 8 for k, v in known.items() if not k.endswith("_dsn")), known.keys()
    return known


def test_secrets_stay_out_of_command_lines_and_logs(settings: Settings) -> None:
    known = _known_secrets(settings)
    assert f"mlflow-{MLFLOW_READER}" in known and f"mlflow-{settings.mlflow_username}" in known
    places: dict[str, bytes] = {}
    for pid in _stack_pids(settings):
        try:
            places[f"pid {pid} argv"] = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
    logs = [settings.state_dir / "logs", Airflow(settings).home / "logs"]
    for path in (p for root in logs for p in root.rglob("*") if p.is_file()):
        places[str(path)] = path.read_bytes()
    leaks = [
        (what, where)
        for what, secret in known.items()
        for where, text in places.items()
        if secret.encode() in text
    ]
    assert leaks == []


def test_secret_files_are_readable_by_their_owner_alone(settings: Settings) -> None:
    airflow = Airflow(settings)
    folders = [secrets_dir(settings), airflow.home]
    files = [
        *secrets_dir(settings).iterdir(),
        airflow.password_file,
        airflow.home / "jwt_secret",
        Mlflow(settings).auth_config,
    ]
    assert {oct(f.stat().st_mode & 0o777) for f in folders} == {"0o700"}
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {
        f.name: "0o600" for f in files
    }


def _mlflow(settings: Settings, auth: tuple[str, str] | None, path: str, **body: Any) -> Any:
    url = f"{settings.mlflow_tracking_uri.rstrip('/')}/api/2.0/mlflow/{path}"
    return requests.post(url, json=body, auth=auth, timeout=30)


def test_mlflow_lets_only_sf311_register_models_and_move_the_champion(
    settings: Settings,
) -> None:
    writer = mlflow_login(settings)
    reader = mlflow_login(settings.model_copy(update={"mlflow_username": MLFLOW_READER}))
    name = f"sf311-surface-{uuid.uuid4().hex[:8]}"
    assert _mlflow(settings, None, "registered-models/create", name=name).status_code == 401
    assert _mlflow(settings, writer, "registered-models/create", name=name).ok
    try:
        run = _mlflow(settings, writer, "runs/create", experiment_id="0").json()["run"]["info"]
        version = {"name": name, "source": f"runs:/{run['run_id']}/model", "run_id": run["run_id"]}
        alias = {"name": name, "alias": "champion", "version": "1"}

        assert _mlflow(settings, reader, "model-versions/create", **version).status_code == 403
        assert _mlflow(settings, writer, "model-versions/create", **version).ok
        assert _mlflow(settings, reader, "registered-models/alias", **alias).status_code == 403
        assert _mlflow(settings, writer, "registered-models/alias", **alias).ok
        champion = requests.get(
            f"{settings.mlflow_tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias",
            params={"name": name, "alias": "champion"},
            auth=reader,
            timeout=30,
        )
        assert champion.json()["model_version"]["version"] == "1"
        _mlflow(settings, writer, "runs/delete", run_id=run["run_id"])
    finally:
        requests.delete(
            f"{settings.mlflow_tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/delete",
            json={"name": name},
            auth=writer,
            timeout=30,
        )


def test_the_analyst_connects_to_the_warehouse_alone(settings: Settings) -> None:
    host, port, user, password, warehouse = dsn_parts(settings.analyst_dsn.get_secret_value())
    login = {"host": host, "port": port, "user": user, "password": password, "connect_timeout": 5}
    with psycopg.connect(dbname=warehouse, **login) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    others = ["postgres", *(db for db in Postgres(settings).databases() if db != warehouse)]
    assert len(others) >= 5
    for db in others:
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(dbname=db, **login).close()
