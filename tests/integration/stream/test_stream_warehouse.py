"""The warehouse on the real Postgres: migrations, grants, the guarded upsert and its ledger."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from sf311.lakehouse.figures import BatchFigures
from sf311.warehouse.cases import CASE_COLUMNS
from sf311.warehouse.copy import copy_arrow
from sf311.warehouse.indexes import defer_indexes, rebuilt_after, restore_indexes
from sf311.warehouse.ledgers import (
    BatchLoad,
    insert_lake_batch,
    lake_batch_row,
    load_batch,
    record_phases,
)
from sf311.warehouse.migrate import MigrationError, load_migrations, migrate
from sf311.warehouse.offsets import OffsetRange, advance_offsets, loaded_offsets
from sf311.warehouse.predictions import record_statuses

T = datetime(2019, 5, 1, 12, tzinfo=UTC)


def test_migrate_is_re_runnable_and_refuses_edited_history(schema_dsn, tmp_path):
    assert migrate(schema_dsn) == []
    with psycopg.connect(schema_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in load_migrations()]
    for m in load_migrations():
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(schema_dsn, tmp_path)


def test_analyst_reads_views_and_cannot_write(schema_dsn, analyst_dsn):
    with psycopg.connect(analyst_dsn, autocommit=True) as conn:
        for view in ("open_backlog", "daily_volume", "resolution_times", "recent_cases",
                     "stream_freshness", "cases", "stream_batches", "lake_batches",
                     "warehouse_offsets", "open_cases", "open_case_status",
                     "overdue_history"):  # fmt: skip
            conn.execute(f"SELECT * FROM {view} LIMIT 1").fetchall()
        # The role is read-only by default, but it may switch that off: grants must hold alone.
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            "DELETE FROM cases",
            "INSERT INTO stream_batches (query_id, batch_id) VALUES ('x', 1)",
            "UPDATE schema_migrations SET name = 'x'",
            "TRUNCATE cases",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_open_backlog_buckets_open_cases_by_age_at_each_edge(schema_dsn):
    # Ages in hours, a minute either side of each bucket's edge (24 h, 7, 30 and 90 days).
    ages = {"0-1 d": [1, 24 - 1 / 60], "1-7 d": [24 + 1 / 60, 168 - 1 / 60],
            "7-30 d": [168 + 1 / 60, 720 - 1 / 60], "30-90 d": [720 + 1 / 60, 2160 - 1 / 60],
            "90+ d": [2160 + 1 / 60, 9000]}  # fmt: skip
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]
        rows = [(a, b) for b, hours in ages.items() for a in hours]
        for i, (hours, _) in enumerate(rows):
            conn.execute(
                "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime,"
                " service_name, kafka_timestamp, batch_id) VALUES (%s, %s, %s, 'A', now(), 1)",
                (i + 1, now - timedelta(hours=hours), now),
            )
        # Closed, deleted at the source, or closed at an impossible date: in no bucket.
        for i, extra in enumerate(("closed_date = now()", "deleted_at = now()",
                                   "quality_flags = ARRAY['closed_date_invalid']")):  # fmt: skip
            conn.execute(
                "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime,"
                " service_name, kafka_timestamp, batch_id) VALUES (%s, %s, %s, 'A', now(), 1)",
                (100 + i, now - timedelta(hours=2), now),
            )
            conn.execute(f"UPDATE cases SET {extra} WHERE service_request_id = %s", (100 + i,))
        got = conn.execute(
            "SELECT age_bucket, open_cases, oldest_requested FROM open_backlog WHERE category = 'A'"
        ).fetchall()
    assert {b: (n, oldest) for b, n, oldest in got} == {
        b: (2, now - timedelta(hours=max(hours))) for b, hours in ages.items()
    }


def test_overdue_history_records_todays_statuses_per_category_and_replaces_them(schema_dsn):
    # Upper ends an hour past, 2 h ahead and 2 days ahead: overdue, at risk, on time.
    upper = {1: -1, 2: 2, 3: 48, 4: -1, 5: 48}
    names = {1: "A", 2: "A", 3: "A", 4: "B", 5: None}
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]
        for sid, name in names.items():
            conn.execute(
                "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime,"
                " service_name, kafka_timestamp, batch_id) VALUES (%s, %s, %s, %s, now(), 1)",
                (sid, now - timedelta(hours=5), now, name),
            )
        for sid, hours in upper.items():
            conn.execute(
                "INSERT INTO case_predictions (service_request_id, model_version,"
                " predicted_close_at, lower_at, upper_at, scored_at, category, requested_datetime)"
                " SELECT service_request_id, '1', %s, %s, %s, now(), category, requested_datetime"
                " FROM open_cases WHERE service_request_id = %s",
                (now, now, now + timedelta(hours=hours), sid),
            )
        yesterday = conn.execute(
            "SELECT (now() AT TIME ZONE 'America/Los_Angeles')::date - 1"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO overdue_history VALUES (%s, 'A', 9, 9, 9, now() - interval '1 day')",
            (yesterday,),
        )

        def recorded():
            return {
                (day, name): (overdue, at_risk, on_time)
                for day, name, overdue, at_risk, on_time in conn.execute(
                    "SELECT day, category, overdue, at_risk, on_time FROM overdue_history"
                )
            }

        assert record_statuses(conn) == 3
        today = yesterday + timedelta(days=1)
        assert recorded() == {
            (yesterday, "A"): (9, 9, 9),
            (today, "A"): (1, 1, 1),
            (today, "B"): (1, 0, 0),
            (today, None): (0, 0, 1),
        }
        # B's case closes (its prediction leaves with it): today's rows are replaced, not added to.
        conn.execute("UPDATE cases SET closed_date = now() WHERE service_request_id = 4")
        assert record_statuses(conn) == 2
        assert recorded() == {
            (yesterday, "A"): (9, 9, 9),
            (today, "A"): (1, 1, 1),
            (today, None): (0, 0, 1),
        }


def _batch(rows: pa.Table, batch_id: int, query_id: str = "q") -> BatchLoad:
    figures = BatchFigures(rows_in=3, rows_valid=2, ts_min=T, ts_max=T, ts_p05=T, ts_p50=T)
    return BatchLoad(query_id=query_id, batch_id=batch_id, figures=figures, rows=rows, started_at=T)


def _spark_type(column: str) -> str:
    if column in ("service_request_id", "batch_id"):
        return "long"
    if column in ("supervisor_district", "bos_2012"):
        return "int"
    if column in ("lat", "long", "resolution_hours"):
        return "double"
    if column == "quality_flags":
        return "array<string>"
    if column.endswith(("datetime", "_date", "_at", "_of", "timestamp")):
        return "timestamp"
    return "string"


def _arrow(spark, rows) -> pa.Table:
    """Return the rows as the Arrow table the warehouse query hands to load_batch."""
    schema = ", ".join(f"{c} {_spark_type(c)}" for c in CASE_COLUMNS)
    # Every curated row has a flags array, empty when nothing is wrong.
    values = [tuple(r.get(c, [] if c == "quality_flags" else None) for c in CASE_COLUMNS)
              for r in rows]  # fmt: skip
    df = spark.createDataFrame(values, schema)
    return df.toArrow()


def _indexes(conn: psycopg.Connection) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
            " WHERE indrelid = 'cases'::regclass"
        ).fetchall()
    )


def _insert_case(conn: psycopg.Connection, sid: int) -> None:
    conn.execute(
        "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime,"
        " service_name, kafka_timestamp, batch_id) VALUES (%s, now(), now(), 'A', now(), 1)",
        (sid,),
    )


def test_an_empty_cases_defers_its_secondary_indexes_until_restored(schema_dsn):
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        before = _indexes(conn)
        assert len(before) > 5
        deferred = defer_indexes(conn)
        assert sorted(deferred) == sorted(n for n in before if n != "cases_pkey")
        assert list(_indexes(conn)) == ["cases_pkey"]
        # Nothing is left to defer, and the definitions stay.
        assert defer_indexes(conn) == []
        kept = conn.execute("SELECT count(*) FROM deferred_indexes").fetchone()[0]
        assert kept == len(deferred)
        _insert_case(conn, 1)
        # An index built meanwhile (by hand, or a migration) is kept as it is.
        conn.execute(before[deferred[0]])
        assert restore_indexes(conn) == sorted(deferred)
        assert _indexes(conn) == before
        assert conn.execute("SELECT count(*) FROM deferred_indexes").fetchone()[0] == 0
        assert restore_indexes(conn) == []
        # A table that holds a case keeps its indexes.
        assert defer_indexes(conn) == []
        assert _indexes(conn) == before


def _definitions(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid), c.conname, pg_get_constraintdef(c.oid)"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid"
        " WHERE x.indrelid = %s::regclass ORDER BY 1",
        [table],
    ).fetchall()


def test_a_table_filled_with_its_indexes_rebuilt_after_ends_with_the_same_and_refuses_duplicates(
    schema_dsn,
):
    table = sql.Identifier("filled")
    rows = pa.table({"k": [1, 2, None], "v": ["a", "b", "c"]})
    with psycopg.connect(schema_dsn) as conn:
        conn.execute(
            "CREATE TABLE filled (k integer, v text, CONSTRAINT filled_key"
            " UNIQUE NULLS NOT DISTINCT (k)); CREATE INDEX filled_v ON filled (v)"
        )
        conn.commit()
        before = _definitions(conn, "filled")
        assert [d[0] for d in before] == ["filled_key", "filled_v"]
        with conn.cursor() as cur:
            with rebuilt_after(cur, table):
                assert _definitions(conn, "filled") == []
                copy_arrow(cur, table, ["k", "v"], [rows])
        conn.commit()
        assert _definitions(conn, "filled") == before
        assert conn.execute("SELECT count(*) FROM filled").fetchone()[0] == 3
        conn.execute("TRUNCATE filled")
        conn.commit()
        # A duplicate key fails the rebuilt constraint, as it would have failed the copy.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.cursor() as cur:
            with rebuilt_after(cur, table):
                copy_arrow(cur, table, ["k", "v"], [rows, rows.slice(2)])
        conn.rollback()
        assert _definitions(conn, "filled") == before


def test_copy_round_trips_nulls_empties_quotes_newlines_and_instants(schema_dsn, spark):
    nasty = 'say "hi",\nthen\\leave; \u00e9\u00e8 \t end'
    rows = [
        {"service_request_id": 1, "requested_datetime": T, "updated_datetime": T,
         "kafka_timestamp": T, "batch_id": 0, "status_notes": nasty, "address": "",
         "lat": 37.123456789012, "supervisor_district": 3, "resolution_hours": 1e-7,
         "quality_flags": ["closed_before_opened", "location_missing"], "closure_kind": "resolved"},
        {"service_request_id": 2, "requested_datetime": T, "updated_datetime": T,
         "kafka_timestamp": T, "batch_id": 0, "status_notes": "nul\u0000byte"},
    ]  # fmt: skip
    with psycopg.connect(schema_dsn) as conn:
        # Instants must load as the same instants whatever the session's zone.
        conn.execute("SET TIME ZONE 'America/Los_Angeles'")
        assert load_batch(conn, _batch(_arrow(spark, rows), 0)) == 2
        got = conn.execute(
            "SELECT status_notes, address, lat, supervisor_district, resolution_hours, "
            "requested_datetime, closed_date, quality_flags, closure_kind FROM cases"
            " ORDER BY 1 DESC"
        ).fetchall()
    flags = ["closed_before_opened", "location_missing"]
    assert got[0] == (nasty, "", 37.123456789012, 3, 1e-7, T, None, flags, "resolved")
    assert got[1][:2] == ("nulbyte", None)
    assert got[1][7:] == ([], None)


def test_copy_casts_rows_to_their_columns_types_and_names_a_type_it_lacks(schema_dsn):
    rows = pa.table({"n": pa.array([1, None], pa.int64()), "tag": ["a\u0000b", None]})
    with psycopg.connect(schema_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE t (n integer, tag text, amount numeric)")
        # 64-bit integers into a 32-bit column: binary COPY takes only the column's width.
        copy_arrow(cur, sql.Identifier("t"), ["n", "tag"], [rows])
        got = cur.execute("SELECT n, tag FROM t ORDER BY n").fetchall()
        assert got == [(1, "ab"), (None, None)]
        amounts = pa.table({"n": [2], "amount": [1.5]})
        with pytest.raises(TypeError, match="'amount': 'numeric'"):
            copy_arrow(cur, sql.Identifier("t"), ["n", "amount"], [amounts])


def test_upsert_keeps_newer_rows_and_a_replayed_batch_changes_nothing(schema_dsn, spark):
    def versions(*rows):
        cases = [
            {"service_request_id": sid, "requested_datetime": T, "updated_datetime": upd,
             "kafka_timestamp": T, "batch_id": b, "status_notes": note}
            for sid, upd, note, b in rows
        ]  # fmt: skip
        return _arrow(spark, cases)

    later = T.replace(hour=15)
    first = versions((1, later, "new", 0), (2, T, "old", 0))
    second = versions((1, T, "stale", 1), (2, later, "newer", 1), (3, T, "third", 1))
    with psycopg.connect(schema_dsn) as conn:
        assert load_batch(conn, _batch(first, 0)) == 2
        assert load_batch(conn, _batch(second, 1)) == 2
        assert load_batch(conn, _batch(second, 1)) is None
        assert load_batch(conn, _batch(first, 0)) is None
        assert load_batch(conn, _batch(first, 0, query_id="another")) == 0
        record_phases(schema_dsn, "q", 1, {"decode": 1.0, "postgres": 0.5}, T)
        phases = conn.execute(
            "SELECT phase_seconds, finished_at FROM stream_batches"
            " WHERE query_id = 'q' AND batch_id = 1"
        ).fetchone()
        got = conn.execute(
            "SELECT service_request_id, status_notes, batch_id FROM cases ORDER BY 1"
        ).fetchall()
        ledger = conn.execute(
            "SELECT query_id, batch_id, rows_upserted, lag_p50_seconds > 0 FROM stream_batches "
            "ORDER BY committed_at"
        ).fetchall()
    assert got == [(1, "new", 0), (2, "newer", 1), (3, "third", 1)]
    assert phases == ({"decode": 1.0, "postgres": 0.5}, T)
    assert ledger == [("q", 0, 2, True), ("q", 1, 2, True), ("another", 0, 0, True)]


def test_a_lake_batch_is_recorded_once_with_its_lags(schema_dsn):
    figures = BatchFigures(
        rows_in=10, rows_valid=9, ts_min=T, ts_max=T, ts_p05=T, ts_p50=T + timedelta(seconds=5)
    )

    def record(figures: BatchFigures) -> None:
        row = lake_batch_row("lake", 4, figures, "merge", {"bronze": 1.5}, T,
                             T + timedelta(seconds=10))  # fmt: skip
        with psycopg.connect(schema_dsn) as conn:
            insert_lake_batch(conn, row)

    record(figures)
    # A replayed batch (its Delta writes skipped by txnVersion) keeps the first figures.
    record(replace(figures, rows_in=99))
    with psycopg.connect(schema_dsn) as conn:
        rows = conn.execute(
            "SELECT rows_in, rows_quarantined, lag_p50_seconds, lag_p95_seconds, silver_action,"
            " phase_seconds FROM lake_batches"
        ).fetchall()
    assert rows == [(10, 1, 5.0, 10.0, "merge", {"bronze": 1.5})]


def test_offsets_move_on_only_past_messages_somebody_loaded(schema_dsn):
    def other(p, first, last):  # a bounded run's lake query
        advance_offsets(conn, "cases", [OffsetRange(p, first, last)], own_checkpoint=False)

    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        other(0, 5, 9)  # nothing recorded below 5: offsets 0-4 may be unloaded
        assert loaded_offsets(conn, "cases") == {}
        other(0, 0, 9)
        other(1, 0, 3)
        other(0, 12, 20)  # a gap: 10 and 11 are nobody's
        assert loaded_offsets(conn, "cases") == {0: 10, 1: 4}
        other(0, 8, 20)  # overlaps what is loaded
        assert loaded_offsets(conn, "cases") == {0: 21, 1: 4}
        # The warehouse query's checkpoint has seen everything before its batch.
        advance_offsets(conn, "cases", [OffsetRange(1, 30, 40)], own_checkpoint=True)
        other(0, 0, 3)  # never moves back
        advance_offsets(conn, "other-topic", [OffsetRange(0, 0, 99)], own_checkpoint=False)
        assert loaded_offsets(conn, "cases") == {0: 21, 1: 41}
        assert loaded_offsets(conn, "other-topic") == {0: 100}


def test_a_batch_moves_its_offsets_in_its_own_transaction(schema_dsn, spark):
    rows = [{"service_request_id": 1, "requested_datetime": T, "updated_datetime": T,
             "kafka_timestamp": T, "batch_id": 0}]  # fmt: skip
    batch = replace(_batch(_arrow(spark, rows), 0), topic="cases", offsets=[OffsetRange(0, 0, 2)])
    with psycopg.connect(schema_dsn) as conn:
        # A case without its required instant: the batch fails whole.
        i = batch.rows.schema.get_field_index("requested_datetime")
        unset = pa.nulls(1, batch.rows.schema.field(i).type)
        broken = replace(batch, rows=batch.rows.set_column(i, "requested_datetime", unset))
        with pytest.raises(psycopg.errors.NotNullViolation):
            load_batch(conn, broken)
        assert loaded_offsets(conn, "cases") == {}
        assert load_batch(conn, batch) == 1
        assert loaded_offsets(conn, "cases") == {0: 3}
