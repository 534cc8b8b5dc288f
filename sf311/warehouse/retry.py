"""Postgres work retried with backoff while the server is unreachable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def retrying(
    dsn: str,
    work: Callable[[psycopg.Connection], _T],
    retry_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Return work(connection), reconnecting with backoff while Postgres is unreachable for up
    to retry_seconds; work must be safe to run again after an unknown outcome."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                return work(conn)
        except psycopg.OperationalError as err:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("postgres unavailable (%s); retrying in %.1f s", err, delay)
            sleep(delay)
            delay = min(delay * 2, 5.0)
