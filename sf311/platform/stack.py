"""`sf311 up | down | status`: start, stop and health-check the local stack."""

from __future__ import annotations

import sys
import time

from sf311.platform import pipeline
from sf311.platform.apps import app_services
from sf311.platform.process import (
    ProcessTable,
    StackError,
    port_is_free,
    process_table,
    wait_until,
)
from sf311.platform.services import Service, all_services, cluster_services
from sf311.settings import Settings


def _say(message: str) -> None:
    print(message, flush=True)


def _selected(settings: Settings, only: list[str] | None, apps: bool = False) -> list[Service]:
    """Return the named services; without names, the stack's, plus the optional ones (the
    Spark cluster, the apps) when apps is set."""
    services = all_services(settings)
    known = services + cluster_services(settings) + app_services(settings)
    if not only:
        return known if apps else services
    unknown = set(only) - {s.name for s in known}
    if unknown:
        raise StackError(
            f"unknown service(s) {sorted(unknown)}: choose from {[s.name for s in known]}"
        )
    return [s for s in known if s.name in only]


# They keep their state in Postgres and do not outlive its crash (Airflow's scheduler and
# dag-processor exit, the registry and MLflow keep dead pooled connections): when Postgres
# starts again, they restart with it.
RESTART_WITH_POSTGRES = ("registry", "mlflow", "airflow")
# Application processes `status` lists even when they do not run: the pipeline needs them.
EXPECTED_APPS = ("stream",)

# A process killed a moment ago may hold its ports while its threads exit.
PORT_GRACE_SECONDS = 30.0

# Exit codes of `sf311 status` (README, "Operations").
STATUS_OK, STATUS_DOWN, STATUS_BEHIND = 0, 1, 4


def _running(table: ProcessTable, service: Service) -> bool:
    return all(table.get(launch.name) for launch in service.launches())


def _alive(table: ProcessTable, service: Service) -> list[str]:
    return [launch.name for launch in service.launches() if table.get(launch.name)]


def _port_freed(host: str, port: int, grace: float) -> bool:
    """Return True once nothing listens on host:port, waiting up to grace seconds."""
    deadline = time.monotonic() + grace
    while not port_is_free(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _preflight(table: ProcessTable, services: list[Service]) -> list[Service]:
    """Return the services to start, stopping what is left of a partly running one; raise
    before anything starts when a binary is missing or a port is taken by another program."""
    for service in services:
        service.check_installed()
    freed: set[str] = set()
    for service in services:
        for launch in service.launches():
            if table.clear(launch.name):
                _say(f"  {service.name:<9} {launch.name} had died")
                freed.add(service.name)
    to_start = [s for s in services if not _running(table, s)]
    if any(s.name == "postgres" for s in to_start):
        to_start += [s for s in services if s.name in RESTART_WITH_POSTGRES and s not in to_start]
    for service in to_start:
        if alive := _alive(table, service):
            _say(f"  {service.name:<9} stopping {', '.join(alive)} to start it whole")
            _stop(table, service)
            freed.add(service.name)
    for service in to_start:
        grace = PORT_GRACE_SECONDS if service.name in freed else 0.0
        for endpoint in service.endpoints():
            if not _port_freed(endpoint.host, endpoint.port, grace):
                raise StackError(
                    f"{service.name}: port {endpoint} is taken by another process: stop it, "
                    "or point sf311 at other ports through SF311_* settings (see README)"
                )
    return [s for s in services if s in to_start]


def _start(table: ProcessTable, service: Service) -> None:
    service.prepare()
    for launch in service.launches():
        table.start(launch)


def _await(table: ProcessTable, service: Service, started: float) -> None:
    log = table.log_path(service.launches()[0].name)

    def ready() -> bool:
        if not _running(table, service):
            raise StackError(f"{service.name} exited during start; see {log}")
        return service.healthy()

    wait_until(ready, service.health_timeout, service.name, log)
    service.after_start()
    took = time.monotonic() - started
    _say(f"  {service.name:<9} healthy in {took:5.1f} s  ({service.describe()})")


def up(settings: Settings, only: list[str] | None = None) -> None:
    """Start the selected services and wait until each is healthy; undo this run on failure."""
    table = process_table(settings)
    services = _selected(settings, only)
    to_start = _preflight(table, services)
    for service in services:
        if service not in to_start:
            _say(f"  {service.name:<9} already running")
    begun: list[Service] = []
    try:
        # Postgres first: the registry, MLflow and Airflow keep their state in it.
        first = [s for s in to_start if s.name == "postgres"]
        rest = [s for s in to_start if s.name != "postgres"]
        for group in (first, rest):
            t0 = time.monotonic()
            for service in group:
                _say(f"  {service.name:<9} starting ...")
                begun.append(service)
                _start(table, service)
            for service in group:
                _await(table, service, t0)
        for service in services:
            if service not in to_start:
                service.after_start()
    except BaseException:
        for service in reversed(begun):
            _stop(table, service)
        raise


def _stop(table: ProcessTable, service: Service) -> bool:
    stopped = False
    for launch in reversed(service.launches()):
        stopped |= table.stop(launch.name, launch.stop_signal)
    return stopped


def down(settings: Settings, only: list[str] | None = None) -> None:
    """Stop every process the stack started, in reverse start order, and any leftover of ours."""
    table = process_table(settings)
    services = _selected(settings, only, apps=True)
    for service in reversed(services):
        if _stop(table, service):
            _say(f"  {service.name:<9} stopped")
    if not only:
        for name in table.names():
            table.stop(name)
            _say(f"  {name:<9} stopped (leftover)")


def _state(table: ProcessTable, service: Service) -> tuple[str, list[int], bool]:
    """Return a service's state word, the pids of its live processes and whether it is
    healthy."""
    running = [r for launch in service.launches() if (r := table.get(launch.name))]
    pids = [r.pid for r in running]
    missing = [launch.name for launch in service.launches() if not table.get(launch.name)]
    if running and missing:
        return f"partial ({', '.join(missing)} down)", pids, False
    ok = service.healthy()
    return ("healthy" if ok else ("starting" if pids else "down")), pids, ok


def _listed(service: Service, pids: list[int], only: list[str] | None) -> bool:
    return bool(only) or not service.optional or bool(pids) or service.name in EXPECTED_APPS


def status(settings: Settings, only: list[str] | None = None) -> int:
    """Print each expected process's state and the pipeline's; return STATUS_OK, STATUS_DOWN
    when one is not healthy, or STATUS_BEHIND when the stream is further behind the topic than
    status_max_lag messages."""
    table = process_table(settings)
    code = STATUS_OK
    healthy: set[str] = set()
    _say(f"  {'service':<9} {'state':<9} {'pids':<22} address")
    for service in _selected(settings, only, apps=True):
        state, pids, ok = _state(table, service)
        if not _listed(service, pids, only):
            continue
        if ok:
            healthy.add(service.name)
        else:
            code = STATUS_DOWN
        _say(
            f"  {service.name:<9} {state:<9} {','.join(map(str, pids)) or '-':<22} "
            f"{service.describe()}"
        )
    if {"postgres", "kafka"} <= healthy:
        by_query = pipeline.try_lags(settings)
        _say("")
        for line in pipeline.report(settings, by_query):
            _say(line)
        behind = pipeline.most_behind(by_query)
        if code == STATUS_OK and behind is not None and behind > settings.status_max_lag:
            _say(f"  stream behind by {behind:,} messages (> SF311_STATUS_MAX_LAG "
                 f"{settings.status_max_lag:,})")  # fmt: skip
            code = STATUS_BEHIND
    return code


def run_action(settings: Settings, action: str, only: list[str] | None = None) -> int:
    """Run up, down or status and return the process exit code."""
    try:
        if action == "up":
            up(settings, only)
            return 0
        if action == "down":
            down(settings, only)
            return 0
        return status(settings, only)
    except StackError as err:
        print(f"sf311 {action}: {err}", file=sys.stderr)
        return STATUS_DOWN
