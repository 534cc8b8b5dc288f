"""Table `case_predictions`: the open cases it scores read in slices, its guarded upsert, the
deletion of cases no longer open, the one stored prediction the API answers with, and the
daily record of its statuses (table overdue_history)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sf311.contract.city import LOCAL_TZ

TABLE = "case_predictions"
# The open cases with their own columns, as the model reads them (migration 0017 holds the rule).
OPEN_ROWS = "open_case_rows"
VALUES = ("model_version", "predicted_close_at", "lower_at", "upper_at")
COLUMNS = ("service_request_id", *VALUES, "scored_at")
# The case's columns each row carries (view open_cases, migration 0015), so that the views over
# open cases never join `cases`.
CASE_COPIES = (
    "category", "service_subtype", "neighborhood", "supervisor_district", "police_district",
    "source", "requested_datetime", "lat", "long",
)  # fmt: skip

# (service_request_id, model_version, predicted_close_at, lower_at, upper_at)
PredictionRow = tuple[int, str, datetime, datetime, datetime]


def _select(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("SELECT service_request_id, {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(OPEN_ROWS)
    )


def open_cases(
    conn: psycopg.Connection, ids: Sequence[int], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """Return the open cases among `ids` (distinct): service_request_id and `columns` of each."""
    # A join with the ids, not `= ANY (ids)`: on a just-loaded `cases` without statistics,
    # Postgres walked the open cases and tested each against the whole array (56k open cases
    # x 909k ids of a 1M backfill batch: 82 s, against 2.3 s once the table was analyzed).
    # A plain join, not `IN (SELECT unnest)`: hashing the open cases instead of probing the
    # index once per id took 2.2 s instead of 4.1 s for 1.6M ids of an 8M warehouse.
    query = sql.SQL("{} JOIN unnest(%s::bigint[]) AS batch(id) ON batch.id = service_request_id")
    query = query.format(_select(columns))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, [list(ids)]).fetchall()


def open_case_slices(
    conn: psycopg.Connection, columns: Sequence[str], rows: int
) -> Iterator[list[dict[str, Any]]]:
    """Yield every open case (service_request_id and `columns`) in id order, `rows` at a time;
    each slice is its own query, so a long walk holds no snapshot or cursor open."""
    query = sql.SQL("{} WHERE service_request_id > %s ORDER BY 1 LIMIT %s").format(_select(columns))
    after = -(2**63)
    while True:
        with conn.cursor(row_factory=dict_row) as cur:
            found = cur.execute(query, [after, rows]).fetchall()
        if not found:
            return
        yield found
        after = found[-1]["service_request_id"]


def upsert_predictions(
    conn: psycopg.Connection, rows: Sequence[PredictionRow], scored_at: datetime
) -> int:
    """Write predictions of the cases still open, each with its case's columns from view
    open_cases, changing a stored row only where a value differs, inside the caller's
    transaction, which share-locks those cases (an UPDATE closing one waits for its commit,
    then its trigger deletes the row); return the rows inserted or changed."""
    if not rows:
        return 0
    conn.execute(
        "CREATE TEMP TABLE predictions_stage ON COMMIT DROP"
        f" AS SELECT {', '.join(COLUMNS)} FROM {TABLE} WITH NO DATA"
    )
    with conn.cursor() as cur:
        with cur.copy(
            sql.SQL("COPY predictions_stage ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
            )
        ) as copy:
            for row in rows:
                copy.write_row((*row, scored_at))
        written = (*COLUMNS, *CASE_COPIES)
        changing = (*VALUES, *CASE_COPIES)
        cur.execute(
            sql.SQL(
                "INSERT INTO {table} ({cols}) SELECT {picked} FROM predictions_stage s"
                " JOIN open_cases o USING (service_request_id)"
                # Locked in id order, the order the warehouse load updates in: no deadlock.
                " ORDER BY service_request_id FOR SHARE OF o"
                " ON CONFLICT (service_request_id) DO UPDATE SET {updates}"
                " WHERE ({old}) IS DISTINCT FROM ({new})"
            ).format(
                table=sql.Identifier(TABLE),
                cols=sql.SQL(", ").join(map(sql.Identifier, written)),
                picked=sql.SQL(", ").join(
                    [sql.SQL("s.{}").format(sql.Identifier(c)) for c in COLUMNS]
                    + [sql.SQL("o.{}").format(sql.Identifier(c)) for c in CASE_COPIES]
                ),
                updates=sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in written[1:]
                ),
                old=sql.SQL(", ").join(
                    sql.SQL("{}.{}").format(sql.Identifier(TABLE), sql.Identifier(c))
                    for c in changing
                ),
                new=sql.SQL(", ").join(
                    sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in changing
                ),
            )
        )
        return cur.rowcount


def delete_predictions(conn: psycopg.Connection, ids: Sequence[int]) -> int:
    """Delete the predictions of `ids`; return the rows deleted."""
    # Only ids up to the highest one stored can have a row: a backfill batch's new cases, nearly
    # all of it and above that, are not sent (nor probed one by one in the index).
    top = conn.execute(f"SELECT max(service_request_id) FROM {TABLE}").fetchone()[0]
    held = [] if top is None else [i for i in ids if i <= top]
    if not held:
        return 0
    cur = conn.execute(f"DELETE FROM {TABLE} WHERE service_request_id = ANY (%s)", [held])
    return cur.rowcount


def delete_not_open(conn: psycopg.Connection) -> int:
    """Delete the predictions of cases no longer open (closed, or deleted by
    reconciliation); return the rows deleted."""
    query = sql.SQL(
        "DELETE FROM {} p WHERE NOT EXISTS (SELECT 1 FROM {} o"
        " WHERE o.service_request_id = p.service_request_id)"
    ).format(sql.Identifier(TABLE), sql.Identifier(OPEN_ROWS))
    return conn.execute(query).rowcount


def unscored_by(conn: psycopg.Connection, version: str) -> bool:
    """Return True when an open case has no prediction by model `version`."""
    query = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {} o LEFT JOIN {} p USING (service_request_id)"
        " WHERE p.model_version IS NULL OR p.model_version <> %s)"
    ).format(sql.Identifier(OPEN_ROWS), sql.Identifier(TABLE))
    row = conn.execute(query, [version]).fetchone()
    return bool(row and row[0])


def case_prediction(conn: psycopg.Connection, service_request_id: int) -> dict[str, Any] | None:
    """Return the stored prediction of an open case with its status (view open_case_status),
    or None when the case is unknown, closed or not scored yet."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT service_request_id, model_version, predicted_close_at, lower_at, upper_at,"
            " scored_at, status FROM open_case_status WHERE service_request_id = %s",
            [service_request_id],
        ).fetchone()


def record_statuses(conn: psycopg.Connection) -> int:
    """Replace today's rows of overdue_history (San Francisco's day) with the open scored cases
    per category and status now; return the categories recorded."""
    day = "(now() AT TIME ZONE %(zone)s)::date"
    with conn.transaction():
        conn.execute(f"DELETE FROM overdue_history WHERE day = {day}", {"zone": LOCAL_TZ})
        return conn.execute(
            "INSERT INTO overdue_history (day, category, overdue, at_risk, on_time, recorded_at)"
            f" SELECT {day}, category, count(*) FILTER (WHERE status = 'overdue'),"
            " count(*) FILTER (WHERE status = 'at_risk'),"
            " count(*) FILTER (WHERE status = 'on_time'), now()"
            " FROM open_case_status GROUP BY category",
            {"zone": LOCAL_TZ},
        ).rowcount
