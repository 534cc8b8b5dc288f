"""Work retried with backoff while the service it needs (Postgres, Kafka, the registry) is
unreachable, for at most a bound of seconds, each wait logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from sf311.errors import first_line

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def with_retries(
    work: Callable[[], _T],
    unavailable: type[Exception] | tuple[type[Exception], ...],
    service: str,
    retry_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Return work(), running it again with backoff while it raises `unavailable` for up to
    retry_seconds, then raising the last error; work must be safe to run again."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    while True:
        try:
            return work()
        except unavailable as err:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s unavailable (%s); retrying in %.1f s", service, first_line(err), delay)
            sleep(delay)
            delay = min(delay * 2, 5.0)


def retrying(
    dsn: str,
    work: Callable[[psycopg.Connection], _T],
    retry_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Return work(connection), reconnecting with backoff while Postgres is unreachable for up
    to retry_seconds; work must be safe to run again after an unknown outcome."""

    def attempt() -> _T:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return work(conn)

    return with_retries(attempt, psycopg.OperationalError, "postgres", retry_seconds, sleep)
