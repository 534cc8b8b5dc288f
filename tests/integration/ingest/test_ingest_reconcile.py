"""Reconciliation end to end: a SODA source that deletes cases and changes others silently,
ingest to Kafka, a bounded stream run into Postgres, `sf311 reconcile`, and the extractor's
watermark on :updated_at. Real Kafka, registry, Postgres and Spark; about 60-90 s."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import fastavro
import psycopg
import pytest
from pydantic import SecretStr

from sf311.contract.city import LOCAL_TZ, LOCAL_ZONE
from sf311.contract.frame import split
from sf311.contract.registry import SchemaRegistry
from sf311.ingest.run import ingest_socrata
from sf311.ingest.soda_server import Dataset, SodaServer, start_server
from sf311.platform.pipeline import reconcile_line
from sf311.settings import Settings
from sf311.warehouse.gold import gold_schema
from sf311.warehouse.migrate import migrate
from sf311.warehouse.reconcile import ReconcileRefused, reconcile
from sf311.warehouse.reconcile_runs import last_run

pytestmark = pytest.mark.integration

FIRST_ID = 7_100_000
DAYS = 3
PER_DAY = 60


def source_rows(today: date) -> list[dict[str, str]]:
    """Return PER_DAY cases on each of the DAYS days before `today`, in the API's form."""
    rows = []
    for n in range(DAYS * PER_DAY):
        day = today - timedelta(days=1 + n // PER_DAY)
        requested = datetime(day.year, day.month, day.day, 8 + n % 12, n % 60)
        rows.append(
            {
                "service_request_id": str(FIRST_ID + n),
                "requested_datetime": requested.strftime("%Y-%m-%dT%H:%M:%S.000"),
                "updated_datetime": (requested + timedelta(hours=1)).strftime(
                    "%Y-%m-%dT%H:%M:%S.000"
                ),
                "status_description": "Open",
                "status_notes": "as filed",
                "service_name": "Graffiti",
                "supervisor_district": "3",
                "lat": "37.78",
                "long": "-122.41",
                "source": "Web",
            }
        )
    return rows


@pytest.fixture
def warehouse(settings: Settings) -> Iterator[str]:
    """A DSN scoped to a fresh, migrated schema of the warehouse, dropped afterwards."""
    schema = f"test_reconcile_{uuid.uuid4().hex[:8]}"
    owner = settings.postgres_dsn.get_secret_value()
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{owner}?options={quote(f'-c search_path={schema}')}"
    migrate(dsn)
    yield dsn
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def source(
    fresh: Settings, warehouse: str, tmp_path: Path
) -> Iterator[tuple[SodaServer, Settings]]:
    """A SODA server over source_rows (loaded an hour ago) and settings for this test alone."""
    today = datetime.now(LOCAL_ZONE).date()
    loaded = datetime.now(UTC) - timedelta(hours=1)
    server = start_server(Dataset(source_rows(today), loaded_at=loaded), fresh.socrata_dataset)
    settings = fresh.model_copy(
        update={
            "socrata_domain": server.domain,
            "socrata_scheme": "http",
            "socrata_overlap_seconds": 0,
            "postgres_dsn": SecretStr(warehouse),
            "lake_path": str(tmp_path / "lake"),
            "checkpoint_path": str(tmp_path / "checkpoints"),
            "spark_master": "local[2]",
            "reconcile_window_days": 7,
        }
    )
    yield server, settings
    server.shutdown()
    server.server_close()


def cases(settings: Settings) -> dict[int, tuple[str | None, datetime | None]]:
    """Return {id: (status_notes, deleted_at)} of the test's warehouse."""
    with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
        rows = conn.execute("SELECT service_request_id, status_notes, deleted_at FROM cases")
        return {r[0]: (r[1], r[2]) for r in rows}


def silver_deleted(spark, settings: Settings) -> set[int]:
    """Return the ids silver.cases marks deleted."""
    cases = spark.read.format("delta").load(settings.table_path("silver.cases"))
    marked = cases.where("deleted_at IS NOT NULL").select("service_request_id").collect()
    return {r[0] for r in marked}


def produced_notes(read_topic: Callable, settings: Settings) -> dict[int, list[str | None]]:
    """Return {id: [status_notes of each message, in topic order]} of the case topic."""
    registry = SchemaRegistry(settings.schema_registry_url)
    parsed: dict[int, dict] = {}
    out: dict[int, list[str | None]] = {}
    for key, value in read_topic(settings.kafka_topic):
        if value is None:
            continue  # a tombstone: reconcile's deletion
        schema_id, body = split(value)
        if schema_id not in parsed:
            parsed[schema_id] = fastavro.parse_schema(json.loads(registry.writer_schema(schema_id)))
        record = fastavro.schemaless_reader(io.BytesIO(body), parsed[schema_id])
        out.setdefault(int(key), []).append(record["status_notes"])
    return out


def test_reconcile_marks_deletions_reextracts_missing_and_ingest_catches_silent_changes(
    spark, source, read_topic
) -> None:
    from sf311.lakehouse.stream import run_stream

    server, settings = source
    dsn = settings.postgres_dsn.get_secret_value()
    all_ids = set(range(FIRST_ID, FIRST_ID + DAYS * PER_DAY))

    first = ingest_socrata(settings)
    assert (first.read, first.produced, first.dead_lettered) == (len(all_ids), len(all_ids), 0)
    run_stream(spark, settings, once=True)
    assert set(cases(settings)) == all_ids

    # In agreement: nothing differs, nothing is done.
    agreed = reconcile(settings)
    assert (agreed.days_compared, agreed.days_differing, agreed.ids_missing_here) == (7, 0, 0)

    # The source deletes 6 cases on two days and rewrites 4 without moving updated_datetime;
    # the warehouse loses 3 rows (a load that never happened).
    deleted = {
        FIRST_ID + 1,
        FIRST_ID + 2,
        FIRST_ID + 3,
        FIRST_ID + 61,
        FIRST_ID + 62,
        FIRST_ID + 63,
    }
    silent = {FIRST_ID + 10, FIRST_ID + 70, FIRST_ID + 130, FIRST_ID + 131}
    lost = {FIRST_ID + 20, FIRST_ID + 140, FIRST_ID + 141}
    assert server.dataset.delete(deleted) == len(deleted)
    for rid in silent:
        server.dataset.change(rid, {"status_notes": "rewritten", "supervisor_district": "4"})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM cases WHERE service_request_id = ANY(%s)", [sorted(lost)])

    found = reconcile(settings)
    # Deletions on days 1 and 2, losses on days 1 and 3: every day differs.
    assert found.days_differing == 3
    assert (found.ids_missing_here, found.ids_reextracted) == (len(lost), len(lost))
    assert (found.ids_marked_deleted, found.ids_restored) == (len(deleted), 0)
    here = cases(settings)
    assert {i for i, (_, gone) in here.items() if gone is not None} == deleted
    assert set(here) == all_ids - lost  # marked, never removed

    # The next ingest run reads exactly the silently changed rows, by :updated_at.
    changed = ingest_socrata(settings)
    assert (changed.read, changed.produced) == (len(silent), len(silent))
    notes = produced_notes(read_topic, settings)
    assert {i for i, seen in notes.items() if seen[-1] == "rewritten"} == silent
    assert {i for i, seen in notes.items() if len(seen) == 2} == silent | lost

    run_stream(spark, settings, once=True)
    here = cases(settings)
    assert set(here) == all_ids  # the lost rows are back through Kafka and the stream
    assert {i for i, (notes, _) in here.items() if notes == "rewritten"} == silent
    silver = spark.read.format("delta").load(settings.table_path("silver.cases"))
    rewritten = silver.where("status_notes = 'rewritten'").select("service_request_id").collect()
    assert {r[0] for r in rewritten} == silent
    assert {i for i, (_, gone) in here.items() if gone is not None} == deleted
    with psycopg.connect(dsn) as conn:
        volume = conn.execute("SELECT sum(opened) FROM daily_volume").fetchone()[0]
        gold = conn.execute(f"SELECT sum(opened) FROM {gold_schema(conn)}.daily_volume")
        gold_volume = gold.fetchone()[0]
    assert volume == len(all_ids) - len(deleted)  # the views leave deleted cases out
    # Reconcile's tombstones reached the lake: silver marks the cases and gold leaves them out.
    assert silver_deleted(spark, settings) == deleted
    assert gold_volume == volume

    # Idempotent: twice more, nothing differs and nothing changes.
    before = cases(settings)
    for _ in range(2):
        again = reconcile(settings)
        assert (again.days_differing, again.ids_reextracted, again.ids_marked_deleted) == (0, 0, 0)
    assert cases(settings) == before
    assert ingest_socrata(settings).read == 0

    # A case back at the source loses its mark on the next run.
    back = FIRST_ID + 62
    server.dataset.add([r for r in source_rows(datetime.now(LOCAL_ZONE).date())
                        if int(r["service_request_id"]) == back])  # fmt: skip
    restored = reconcile(settings)
    assert (restored.ids_restored, restored.ids_marked_deleted) == (1, 0)
    assert cases(settings)[back][1] is None
    # Its re-extract, identical to the version silver holds, lifts silver's mark too.
    run_stream(spark, settings, once=True)
    assert silver_deleted(spark, settings) == deleted - {back}

    with psycopg.connect(dsn) as conn:
        run = last_run(conn)
        assert run is not None and run.status == "succeeded"
        assert run.counts.ids_restored == 1
        statuses = [r[0] for r in conn.execute("SELECT status FROM reconcile_runs")]
    assert statuses == ["succeeded"] * 5
    assert "succeeded" in reconcile_line(run) and "1 restored" in reconcile_line(run)


def test_a_source_answering_short_is_refused_and_marks_nothing(source) -> None:
    server, settings = source
    dsn = settings.postgres_dsn.get_secret_value()
    rows = source_rows(datetime.now(LOCAL_ZONE).date())
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The warehouse agrees with the source (inserted directly: this test is about the source).
        for row in rows:
            conn.execute(
                "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime, "
                f"kafka_timestamp, batch_id) VALUES (%s, %s::timestamp AT TIME ZONE '{LOCAL_TZ}', "
                "now(), now(), 0)",
                (int(row["service_request_id"]), row["requested_datetime"]),
            )
    assert reconcile(settings).days_differing == 0
    # The source answers without a whole day: a third of the window's cases, far above 5 %.
    server.dataset.delete(int(r["service_request_id"]) for r in rows[:PER_DAY])
    with pytest.raises(ReconcileRefused, match="nothing done"):
        reconcile(settings)
    with psycopg.connect(dsn) as conn:
        marked = conn.execute("SELECT count(*) FROM cases WHERE deleted_at IS NOT NULL")
        assert marked.fetchone()[0] == 0
        run = last_run(conn)
    assert run is not None and run.status == "refused"
    assert (run.counts.days_differing, run.counts.ids_marked_deleted) == (1, 0)
    assert "nothing done" in reconcile_line(run)
