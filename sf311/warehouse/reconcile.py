"""Reconciliation of Postgres `cases` with the Socrata source, per San Francisco requested day.

Per day of the window, the count and the sum of ids of the cases here (not deleted) are compared
with the source's (`$select=count(*), sum(service_request_id)` grouped by
`date_trunc_ymd(requested_datetime)`). For days that differ the two id sets are compared: ids
missing here are re-extracted through the ordinary ingest path (Kafka, then the stream), ids gone
from the source get `cases.deleted_at`, ids back at the source lose it and are re-extracted, and
ids on another day at the source than here (a changed request time) are re-extracted too.

An id gone from the source is also sent to the cases topic as a tombstone (its key, no value)
before Postgres marks it, so that silver.cases marks it too and gold stops counting it; a run that
fails between the two finds the id here again and sends it again, which changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from sf311.contract.city import LOCAL_TZ, LOCAL_ZONE
from sf311.ingest.extract import get_page, socrata_client, soql_time
from sf311.ingest.produce import CaseProducer
from sf311.ingest.run import ingest_from
from sf311.ingest.sources import IdsSource
from sf311.settings import Settings
from sf311.warehouse.reconcile_runs import ReconcileCounts, close_run, open_run

log = logging.getLogger(__name__)

# Rows per request when listing a day's ids at the source (SODA 2.x's largest page).
ID_PAGE = 50_000
_DAY = "date_trunc_ymd(requested_datetime)"

# Per local day: cases here that are not deleted, and the sum of their ids.
_HERE_DAYS = f"""
SELECT (requested_datetime AT TIME ZONE '{LOCAL_TZ}')::date, count(*), sum(service_request_id)
FROM cases
WHERE deleted_at IS NULL
  AND requested_datetime >= (%(start)s::timestamp AT TIME ZONE '{LOCAL_TZ}')
  AND requested_datetime < (%(stop)s::timestamp AT TIME ZONE '{LOCAL_TZ}')
GROUP BY 1
"""
_HERE_IDS = f"""
SELECT service_request_id, deleted_at IS NOT NULL
FROM cases
WHERE requested_datetime >= (%(start)s::timestamp AT TIME ZONE '{LOCAL_TZ}')
  AND requested_datetime < (%(stop)s::timestamp AT TIME ZONE '{LOCAL_TZ}')
"""
_HERE_ANY = (
    "SELECT service_request_id, deleted_at IS NOT NULL FROM cases "
    "WHERE service_request_id = ANY(%s)"
)
_MARK_DELETED = (
    "UPDATE cases SET deleted_at = now() WHERE service_request_id = ANY(%s) AND deleted_at IS NULL"
)
_CLEAR_DELETED = (
    "UPDATE cases SET deleted_at = NULL "
    "WHERE service_request_id = ANY(%s) AND deleted_at IS NOT NULL"
)


class ReconcileRefused(RuntimeError):
    """The run would mark more cases deleted than settings.reconcile_max_deleted_share allows."""


@dataclass(frozen=True)
class DayTally:
    """Cases of one San Francisco day: how many, and the sum of their ids."""

    cases: int
    id_sum: int


@dataclass(frozen=True)
class Differences:
    """The ids of the differing days: missing here, gone from the source, back at the source, and
    at the source on another day than here (its requested time changed)."""

    missing_here: set[int]
    gone: set[int]
    back: set[int]
    moved: set[int]


def window(settings: Settings, today: date | None = None) -> tuple[date, date]:
    """Return the first and last San Francisco day a run compares (the last is today)."""
    last = today or datetime.now(LOCAL_ZONE).date()
    return last - timedelta(days=settings.reconcile_window_days - 1), last


def _floating(day: date) -> str:
    return soql_time(datetime(day.year, day.month, day.day))


def _number(value: Any) -> int:
    # The JSON API writes numbers as strings, a sum possibly with a decimal point.
    return int(Decimal(str(value)))


def source_days(settings: Settings, first: date, last: date) -> dict[date, DayTally]:
    """Return the source's cases per requested day in [first, last]."""
    params = {
        "select": f"{_DAY} AS day, count(*) AS cases, sum(service_request_id) AS id_sum",
        "where": f"requested_datetime >= '{_floating(first)}'"
        f" AND requested_datetime < '{_floating(last + timedelta(days=1))}'",
        "group": _DAY,
        "limit": (last - first).days + 1,
    }
    with socrata_client(settings) as client:
        rows = get_page(client, settings, params)
    return {
        datetime.fromisoformat(str(row["day"])).date(): DayTally(
            _number(row["cases"]), _number(row.get("id_sum") or 0)
        )
        for row in rows
        if row.get("day")
    }


def here_days(conn: psycopg.Connection, first: date, last: date) -> dict[date, DayTally]:
    """Return the warehouse's cases (not deleted) per requested day in [first, last]."""
    rows = conn.execute(_HERE_DAYS, {"start": first, "stop": last + timedelta(days=1)})
    return {day: DayTally(n, int(total)) for day, n, total in rows}


def _source_day_ids(client: Any, settings: Settings, day: date) -> Iterator[int]:
    """Yield the source's ids requested on `day`, keyset-paged on service_request_id."""
    where = (
        f"requested_datetime >= '{_floating(day)}'"
        f" AND requested_datetime < '{_floating(day + timedelta(days=1))}'"
    )
    after: int | None = None
    while True:
        page_where = where if after is None else f"{where} AND service_request_id > {after}"
        params = {
            "select": "service_request_id",
            "where": page_where,
            "order": "service_request_id",
            "limit": ID_PAGE,
        }
        ids = [_number(r["service_request_id"]) for r in get_page(client, settings, params)
               if r.get("service_request_id") is not None]  # fmt: skip
        yield from ids
        if len(ids) < ID_PAGE:
            return
        after = ids[-1]


def _source_ids_among(client: Any, settings: Settings, ids: set[int]) -> set[int]:
    """Return which of these ids the source holds, whatever their day."""
    found: set[int] = set()
    chunk = IdsSource.CHUNK
    ordered = sorted(ids)
    for at in range(0, len(ordered), chunk):
        part = ordered[at : at + chunk]
        params = {
            "select": "service_request_id",
            "where": f"service_request_id IN ({', '.join(map(str, part))})",
            "limit": len(part),
        }
        found |= {_number(r["service_request_id"]) for r in get_page(client, settings, params)}
    return found


def differences(settings: Settings, conn: psycopg.Connection, days: list[date]) -> Differences:
    """Return the ids that differ between here and the source on these days."""
    absent_here, absent_there, back = set(), set(), set()
    with socrata_client(settings) as client:
        for day in days:
            there = set(_source_day_ids(client, settings, day))
            rows = conn.execute(_HERE_IDS, {"start": day, "stop": day + timedelta(days=1)})
            here: dict[int, bool] = dict(rows.fetchall())
            absent_here |= there - here.keys()
            absent_there |= {i for i, deleted in here.items() if not deleted} - there
            back |= {i for i, deleted in here.items() if deleted} & there
        # A case whose requested day changed is absent from one day on each side, not gone.
        still_there = _source_ids_among(client, settings, absent_there)
    elsewhere: dict[int, bool] = dict(conn.execute(_HERE_ANY, [sorted(absent_here)]).fetchall())
    back |= {i for i, deleted in elsewhere.items() if deleted}
    moved = still_there | {i for i, deleted in elsewhere.items() if not deleted}
    return Differences(absent_here - elsewhere.keys(), absent_there - still_there, back, moved)


def compare(
    settings: Settings, conn: psycopg.Connection, first: date, last: date
) -> tuple[ReconcileCounts, Differences, int]:
    """Return the day counts, the differing ids of [first, last] and the cases here in it,
    changing nothing."""
    there, here = source_days(settings, first, last), here_days(conn, first, last)
    differing = sorted(d for d in there.keys() | here.keys() if there.get(d) != here.get(d))
    no_ids: set[int] = set()
    diff = differences(settings, conn, differing) if differing else Differences(*[no_ids] * 4)
    counts = ReconcileCounts(
        days_compared=(last - first).days + 1,
        days_differing=len(differing),
        differing_days=differing,
        ids_missing_here=len(diff.missing_here),
    )
    return counts, diff, sum(t.cases for t in here.values())


def check_deletions(settings: Settings, diff: Differences, cases_here: int) -> None:
    """Raise ReconcileRefused when more than the allowed share of cases here would be deleted."""
    share = settings.reconcile_max_deleted_share
    if len(diff.gone) > share * cases_here:
        raise ReconcileRefused(
            f"{len(diff.gone):,} cases gone from the source, more than {share:.1%} of the "
            f"{cases_here:,} here in the window: nothing done (SF311_RECONCILE_MAX_DELETED_SHARE)"
        )


def send_deletions(settings: Settings, ids: set[int]) -> None:
    """Send a tombstone of each id to the cases topic, every one acknowledged (raises
    ProduceError otherwise)."""
    producer = CaseProducer(settings)
    producer.send_messages([(str(i).encode(), None) for i in sorted(ids)], [])
    producer.close()


def apply(
    settings: Settings, conn: psycopg.Connection, counts: ReconcileCounts, diff: Differences
) -> ReconcileCounts:
    """Mark, clear and re-extract the differing ids; return the counts with what was done."""
    if diff.gone:
        send_deletions(settings, diff.gone)
    with conn.transaction():
        counts.ids_marked_deleted = conn.execute(_MARK_DELETED, [sorted(diff.gone)]).rowcount
        counts.ids_restored = conn.execute(_CLEAR_DELETED, [sorted(diff.back)]).rowcount
    resend = diff.missing_here | diff.back | diff.moved
    if resend:
        counts.ids_reextracted = ingest_from(settings, IdsSource(settings, resend)).produced
    return counts


def reconcile(settings: Settings, today: date | None = None) -> ReconcileCounts:
    """Reconcile the window ending `today` (default: today in San Francisco); return its counts,
    recorded in reconcile_runs. Raises ReconcileRefused, or the error that stopped the run."""
    first, last = window(settings, today)
    with psycopg.connect(settings.postgres_dsn.get_secret_value(), autocommit=True) as conn:
        run_id = open_run(conn, first, last)
        log.info("reconcile run %d: %s .. %s", run_id, first, last)
        counts = ReconcileCounts(days_compared=(last - first).days + 1)
        try:
            counts, diff, cases_here = compare(settings, conn, first, last)
            check_deletions(settings, diff, cases_here)
            apply(settings, conn, counts, diff)
        except ReconcileRefused as err:
            close_run(conn, run_id, "refused", counts, str(err))
            raise
        except Exception as err:
            close_run(conn, run_id, "failed", counts, f"{type(err).__name__}: {err}"[:2000])
            raise
        close_run(conn, run_id, "succeeded", counts)
    log.info("reconcile run %d: %s", run_id, counts.summary())
    return counts
