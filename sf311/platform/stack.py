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


def _running(table: ProcessTable, service: Service) -> bool:
    return all(table.get(launch.name) for launch in service.launches())


def _preflight(table: ProcessTable, services: list[Service]) -> list[Service]:
    """Return the services to start, or raise before anything starts."""
    for service in services:
        service.check_installed()
    to_start = [s for s in services if not _running(table, s)]
    for service in to_start:
        for launch in service.launches():
            if table.get(launch.name):
                raise StackError(
                    f"{service.name}: only part of it is running: run `make down`, then `make up`"
                )
        for endpoint in service.endpoints():
            if not port_is_free(endpoint.host, endpoint.port):
                raise StackError(
                    f"{service.name}: port {endpoint} is taken by another process: stop it, "
                    "or point sf311 at other ports through SF311_* settings (see README)"
                )
    return to_start


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


def status(settings: Settings, only: list[str] | None = None) -> bool:
    """Print each service's state and return True when all selected services are healthy."""
    table = process_table(settings)
    all_ok = True
    healthy: set[str] = set()
    _say(f"  {'service':<9} {'state':<9} {'pids':<22} address")
    for service in _selected(settings, only, apps=True):
        pids = [r.pid for launch in service.launches() if (r := table.get(launch.name))]
        if service.optional and not pids and not only:
            continue
        ok = service.healthy()
        state = "healthy" if ok else ("starting" if pids else "down")
        all_ok &= ok
        if ok:
            healthy.add(service.name)
        _say(
            f"  {service.name:<9} {state:<9} {','.join(map(str, pids)) or '-':<22} "
            f"{service.describe()}"
        )
    if {"postgres", "kafka"} <= healthy:
        _say("")
        for line in pipeline.report(settings):
            _say(line)
    return all_ok


def run_action(settings: Settings, action: str, only: list[str] | None = None) -> int:
    """Run up, down or status and return the process exit code."""
    try:
        if action == "up":
            up(settings, only)
            return 0
        if action == "down":
            down(settings, only)
            return 0
        return 0 if status(settings, only) else 1
    except StackError as err:
        print(f"sf311 {action}: {err}", file=sys.stderr)
        return 1
