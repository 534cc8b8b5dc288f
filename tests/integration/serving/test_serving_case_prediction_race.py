"""The keeper's upsert and the warehouse load's UPDATE closing the same case, in two sessions on
a scratch warehouse: whichever commits first, no prediction of the closed case remains."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest

from sf311.settings import Settings
from sf311.warehouse import predictions as store
from tests.support import scratch

pytestmark = pytest.mark.integration

DB_NAME = "serving_case_prediction_race_test"
OPENED = datetime(2026, 1, 1, tzinfo=UTC)
SCORED = datetime(2026, 1, 2, tzinfo=UTC)
CLOSE = "UPDATE cases SET closed_date = %s WHERE service_request_id = %s"
PREDICTED = "SELECT count(*) FROM case_predictions WHERE service_request_id = %s"
_ids = itertools.count(1)


def _predicted(sid: int) -> list[store.PredictionRow]:
    return [(sid, "v1", OPENED, OPENED, OPENED)]


@pytest.fixture(scope="module")
def db(settings: Settings) -> Iterator[scratch.ScratchDb]:
    yield scratch.create(settings, DB_NAME)
    scratch.drop(settings, DB_NAME)


@pytest.fixture
def case(db: scratch.ScratchDb) -> int:
    """Return the id of a fresh open case."""
    sid = next(_ids)
    with psycopg.connect(db.owner_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime,"
            " service_name, kafka_timestamp, batch_id) VALUES (%s, %s, %s, 'Graffiti', now(), 0)",
            [sid, OPENED, OPENED],
        )
    return sid


class Side(threading.Thread):
    """One session's statements run on a thread, so the test can watch it wait for a lock."""

    def __init__(self, conn: psycopg.Connection, work: Callable[[psycopg.Connection], object]):
        super().__init__(daemon=True)
        self.conn, self.work = conn, work
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work(self.conn)
        except BaseException as err:  # noqa: BLE001 - re-raised on the test's thread by done()
            self.error = err

    def waits_for(self, observer: psycopg.Connection, blocker: psycopg.Connection) -> bool:
        """Return True once this side waits for a lock `blocker` holds, False if it finished
        without waiting."""
        deadline = time.monotonic() + 30
        while self.is_alive():
            row = observer.execute(
                "SELECT %s = ANY (pg_blocking_pids(%s))",
                [blocker.info.backend_pid, self.conn.info.backend_pid],
            ).fetchone()
            if row and row[0]:
                return True
            assert time.monotonic() < deadline, "neither waiting for a lock nor finished"
            self.join(0.01)  # polls the observable wait; no timing is relied on
        return False

    def done(self) -> object:
        """Return what the side's work returned, once it ended; re-raise its error."""
        self.join(30)
        assert not self.is_alive(), "still running"
        if self.error is not None:
            raise self.error
        return self.result


def _upsert(sid: int) -> Callable[[psycopg.Connection], int]:
    def upsert(conn: psycopg.Connection) -> int:
        with conn.transaction():
            return store.upsert_predictions(conn, _predicted(sid), SCORED)

    return upsert


def _close(sid: int) -> Callable[[psycopg.Connection], None]:
    def close(conn: psycopg.Connection) -> None:
        conn.execute(CLOSE, [SCORED, sid])
        conn.commit()

    return close


@dataclass(frozen=True)
class Sessions:
    """The keeper's session and the load's (its transaction left to the test), and one that
    watches them."""

    keeper: psycopg.Connection
    loader: psycopg.Connection
    observer: psycopg.Connection

    def predicted(self, sid: int) -> int:
        """Return how many committed predictions case `sid` has."""
        row = self.observer.execute(PREDICTED, [sid]).fetchone()
        return row[0] if row else 0


@pytest.fixture
def sessions(db: scratch.ScratchDb) -> Iterator[Sessions]:
    with (
        psycopg.connect(db.owner_dsn, autocommit=True) as keeper,
        psycopg.connect(db.owner_dsn) as loader,
        psycopg.connect(db.owner_dsn, autocommit=True) as observer,
    ):
        yield Sessions(keeper, loader, observer)


def test_a_case_closed_while_its_prediction_is_written_waits_for_it_and_deletes_it(
    sessions: Sessions, case: int
) -> None:
    with sessions.keeper.transaction():
        # The keeper's upsert reads the case open and writes its prediction, uncommitted.
        assert store.upsert_predictions(sessions.keeper, _predicted(case), SCORED) == 1
        # The load closes the case and commits (or tries to) before the keeper commits.
        closing = Side(sessions.loader, _close(case))
        closing.start()
        waited = closing.waits_for(sessions.observer, sessions.keeper)
    closing.done()
    assert sessions.predicted(case) == 0
    # The load's UPDATE waited for the keeper's commit, so its trigger saw the row.
    assert waited


def test_a_case_closed_before_its_prediction_is_written_gets_none(
    sessions: Sessions, case: int
) -> None:
    # The load's UPDATE and its trigger ran (nothing to delete yet), not committed.
    sessions.loader.execute(CLOSE, [SCORED, case])
    scoring = Side(sessions.keeper, _upsert(case))
    scoring.start()
    waited = scoring.waits_for(sessions.observer, sessions.loader)
    sessions.loader.commit()
    written = scoring.done()
    assert sessions.predicted(case) == 0
    # The keeper's read waited for the load's commit, then found the case closed.
    assert waited and written == 0
