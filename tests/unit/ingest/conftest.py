"""Fixtures of the ingest unit tests: SODA servers on loopback over inline rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sf311.ingest.soda_server import Dataset, Faults, SodaServer, start_server
from sf311.settings import Settings

DATASET = "test-0001"


@pytest.fixture
def soda() -> Iterator[Callable[..., tuple[SodaServer, Settings]]]:
    """Start SODA servers over given rows; return each with settings that point sodapy at it."""
    servers: list[SodaServer] = []

    def start(
        rows: list[dict], faults: Faults | None = None, app_token: str | None = None, **settings
    ) -> tuple[SodaServer, Settings]:
        server = start_server(Dataset(rows), DATASET, faults=faults, app_token=app_token)
        servers.append(server)
        values = {
            "socrata_domain": server.domain,
            "socrata_scheme": "http",
            "socrata_dataset": DATASET,
            "socrata_backoff_seconds": 0.001,
            "socrata_backoff_max_seconds": 0.01,
            "socrata_timeout_seconds": 5,
            **settings,
        }
        return server, Settings(**values)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
