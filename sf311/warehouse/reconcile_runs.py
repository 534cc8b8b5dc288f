"""Table `reconcile_runs`: a row per `sf311 reconcile` run, opened, then closed with its counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime

import psycopg

_COUNTS = (
    "days_compared",
    "days_differing",
    "differing_days",
    "ids_missing_here",
    "ids_reextracted",
    "ids_marked_deleted",
    "ids_restored",
)


@dataclass
class ReconcileCounts:
    """What one reconcile run found and did."""

    days_compared: int = 0
    days_differing: int = 0
    differing_days: list[date] = field(default_factory=list)
    ids_missing_here: int = 0
    ids_reextracted: int = 0
    ids_marked_deleted: int = 0
    ids_restored: int = 0

    def summary(self) -> str:
        """Return the one-line summary a reconcile run ends with."""
        return (
            f"days_compared={self.days_compared} days_differing={self.days_differing} "
            f"ids_missing_here={self.ids_missing_here} ids_reextracted={self.ids_reextracted} "
            f"ids_marked_deleted={self.ids_marked_deleted} ids_restored={self.ids_restored}"
        )


@dataclass(frozen=True)
class ReconcileRun:
    """A row of reconcile_runs."""

    run_id: int
    window_start: date
    window_end: date
    started_at: datetime
    finished_at: datetime | None
    status: str
    counts: ReconcileCounts
    error: str | None


def open_run(conn: psycopg.Connection, window_start: date, window_end: date) -> int:
    """Insert a 'running' row for a window and return its run_id."""
    row = conn.execute(
        "INSERT INTO reconcile_runs (window_start, window_end) VALUES (%s, %s) RETURNING run_id",
        (window_start, window_end),
    ).fetchone()
    assert row is not None
    return int(row[0])


def close_run(
    conn: psycopg.Connection,
    run_id: int,
    status: str,
    counts: ReconcileCounts,
    error: str | None = None,
) -> None:
    """Record a run's outcome ('succeeded', 'failed' or 'refused'), counts and error."""
    values = asdict(counts)
    sets = ", ".join(f"{name} = %({name})s" for name in _COUNTS)
    conn.execute(
        f"UPDATE reconcile_runs SET {sets}, status = %(status)s, error = %(error)s, "
        "finished_at = now() WHERE run_id = %(run_id)s",
        {**values, "status": status, "error": error, "run_id": run_id},
    )


def last_run(conn: psycopg.Connection) -> ReconcileRun | None:
    """Return the newest reconcile run; None before the first (or before migration 0010)."""
    missing = conn.execute("SELECT to_regclass('reconcile_runs') IS NULL").fetchone()
    if missing is None or missing[0]:
        return None
    row = conn.execute(
        "SELECT run_id, window_start, window_end, started_at, finished_at, status, error, "
        f"{', '.join(_COUNTS)} FROM reconcile_runs ORDER BY started_at DESC, run_id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    counts = ReconcileCounts(*(v if v is not None else d for v, d in zip(
        row[7:], asdict(ReconcileCounts()).values(), strict=True)))  # fmt: skip
    run_id, window_start, window_end, started_at, finished_at, status, error = row[:7]
    return ReconcileRun(
        run_id, window_start, window_end, started_at, finished_at, status, counts, error
    )
