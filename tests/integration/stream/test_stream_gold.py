"""Gold tables equal the same aggregates computed here from silver.cases with independent SQL:
after a bounded run, after late updates to old cases and deletions at the source taken by the
streaming job (gold refreshed beside its batches), after a replay; a refresh whose mirror is
redone changes nothing; Postgres gold.* equal the lake's gold tables."""

from __future__ import annotations

import random
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from sf311.contract.registry import SchemaRegistry
from sf311.lakehouse import silver
from sf311.lakehouse.gold_tables import latest_version
from sf311.lakehouse.replay import replay
from sf311.lakehouse.sinks import GoldSink
from sf311.lakehouse.stream import run_stream, start_stream
from sf311.warehouse.gold import (
    BACKLOG_DAILY,
    DAILY_VOLUME,
    TABLES,
    Change,
    Progress,
    gold_schema,
    mirror,
    read_progress,
)
from tests.support import scratch

pytestmark = pytest.mark.integration

CATEGORIES = ["Graffiti", "Encampments", "Street and Sidewalk Cleaning", None]
NOTES = ["Case Resolved - done", "Duplicate of 1", "Case Transferred", "Cancelled", "see notes"]
START = datetime(2018, 11, 1, 8, 0, tzinfo=UTC)
# Midnight in San Francisco (PST, UTC-8): an instant on a day's boundary.
SF_MIDNIGHT = datetime(2019, 1, 10, 8, 0, tzinfo=UTC)


def case(sid: int, requested: datetime, closed: datetime | None, **fields) -> dict:
    """Return a v1 case record."""
    record = {
        "service_request_id": sid,
        "requested_datetime": requested,
        "updated_datetime": closed or requested + timedelta(hours=1),
        "closed_date": closed,
        "status_description": "Closed" if closed else "Open",
        "status_notes": NOTES[sid % len(NOTES)] if closed else None,
        "agency_responsible": ["DPW", "HSOC", None][sid % 3],
        "service_name": CATEGORIES[sid % 4],
        "supervisor_district": sid % 3 + 1,
        "neighborhood": ["Mission", None][sid % 2],
        "police_district": ["MISSION", "CENTRAL"][sid % 2],
        "source": ["Phone", "Web"][sid % 2],
    }
    record.update(fields)
    return record


def first_cases() -> list[dict]:
    """Return about 240 cases over 120 days, open and closed in every way gold tells apart."""
    rng = random.Random(21)
    out = []
    for i in range(240):
        requested = START + timedelta(hours=rng.uniform(0, 120 * 24))
        closed = requested + timedelta(hours=rng.expovariate(1 / 200)) if i % 6 else None
        out.append(case(10_000 + i, requested, closed))
    out += [
        case(20_000, SF_MIDNIGHT, SF_MIDNIGHT + timedelta(days=1)),  # both on SF midnights
        case(20_001, SF_MIDNIGHT, SF_MIDNIGHT - timedelta(hours=2)),  # closed before opened
        case(20_002, SF_MIDNIGHT, datetime(1990, 1, 1, tzinfo=UTC)),  # closed_date invalid
        case(20_003, START - timedelta(days=200), None),  # old and still open
        # A category none of whose cases is resolved yet: no target until one is.
        case(20_004, START + timedelta(days=3), None, service_name="Tree Maintenance"),
    ]
    return out


def late_updates(cases: list[dict]) -> list[dict]:
    """Return newer versions: an old open case closed, a closed case reopened, a category
    changed, and new cases on later days."""
    by_id = {c["service_request_id"]: c for c in cases}
    old = by_id[20_003]
    reopened = next(c for c in cases if c["closed_date"] and c["service_request_id"] % 5 == 1)
    moved = next(c for c in cases if c["service_name"] == "Graffiti")
    tree = by_id[20_004]
    later = START + timedelta(days=125)
    return [
        {**old, "closed_date": later, "updated_datetime": later, "status_notes": "resolved"},
        {**tree, "closed_date": later, "updated_datetime": later, "status_notes": "resolved"},
        {**reopened, "closed_date": None, "updated_datetime": later, "status_notes": None},
        {**moved, "service_name": "Encampments", "updated_datetime": later},
        *[case(30_000 + i, later + timedelta(hours=7 * i), None) for i in range(5)],
    ]


EXPECTED = {
    "daily_volume": """
        SELECT day, category, neighborhood, supervisor_district, police_district, source,
               CAST(sum(o) AS INT) AS opened, CAST(sum(c) AS INT) AS closed
        FROM (SELECT to_date(from_utc_timestamp(requested_datetime, 'America/Los_Angeles')) day,
                     service_name category, neighborhood, supervisor_district, police_district,
                     source, 1 o, 0 c FROM s
              UNION ALL
              SELECT to_date(from_utc_timestamp(closed_date, 'America/Los_Angeles')),
                     service_name, neighborhood, supervisor_district, police_district, source, 0, 1
              FROM s WHERE closed_date IS NOT NULL)
        GROUP BY ALL""",
    "backlog_daily": """
        WITH days AS (
            SELECT explode(sequence(min(to_date(from_utc_timestamp(requested_datetime,
                                                                   'America/Los_Angeles'))),
                                    to_date(from_utc_timestamp(max(greatest(requested_datetime,
                                        closed_date)), 'America/Los_Angeles')))) AS day FROM s),
        ends AS (SELECT day, to_utc_timestamp(date_add(day, 1), 'America/Los_Angeles') AS e
                 FROM days)
        SELECT day, service_name AS category,
               CASE WHEN age < 86400 THEN '0-1 d' WHEN age < 7 * 86400 THEN '1-7 d'
                    WHEN age < 30 * 86400 THEN '7-30 d' WHEN age < 90 * 86400 THEN '30-90 d'
                    ELSE '90+ d' END AS age_bucket,
               CAST(count(*) AS INT) AS open_cases
        FROM (SELECT ends.day, s.service_name,
                     unix_micros(ends.e) / 1e6 - unix_micros(s.requested_datetime) / 1e6 AS age
              FROM s JOIN ends ON s.requested_datetime < ends.e
                               AND (s.closed_date IS NULL OR s.closed_date > ends.e)
              WHERE NOT array_contains(s.quality_flags, 'closed_date_invalid'))
        GROUP BY ALL""",
    "resolution_stats": """
        SELECT trunc(to_date(from_utc_timestamp(closed_date, 'America/Los_Angeles')), 'MM') month,
               service_name category, neighborhood, CAST(count(*) AS INT) closed_cases,
               percentile(resolution_hours, 0.5) p50_hours,
               percentile(resolution_hours, 0.9) p90_hours
        FROM s
        WHERE closure_kind = 'resolved' AND resolution_hours >= 0
          AND NOT arrays_overlap(quality_flags, array('closed_before_opened',
                                                      'closed_date_invalid'))
        GROUP BY ALL""",
    "sla_daily": """
        SELECT day, category, agency, max(target) target_hours, CAST(count(*) AS INT) opened,
               CAST(sum(CASE WHEN target IS NULL THEN NULL WHEN counted AND closed_date IS NOT
                   NULL AND resolution_hours <= target THEN 1 ELSE 0 END) AS INT) met,
               CAST(sum(CASE WHEN target IS NULL THEN NULL WHEN counted AND (resolution_hours >
                   target OR (closed_date IS NULL AND age > target)) THEN 1 ELSE 0 END) AS INT)
                   missed,
               CAST(sum(CASE WHEN target IS NULL THEN NULL WHEN counted AND closed_date IS NULL
                   AND age <= target THEN 1 ELSE 0 END) AS INT) pending
        FROM (SELECT to_date(from_utc_timestamp(requested_datetime, 'America/Los_Angeles')) day,
                     s.service_name category, agency_responsible agency, t.target_hours target,
                     closed_date, resolution_hours,
                     (unix_micros(a.as_of) - unix_micros(requested_datetime)) / 3.6e9 age,
                     closure_kind <> 'cancelled_or_invalid' AND NOT arrays_overlap(quality_flags,
                         array('closed_before_opened', 'closed_date_invalid')) counted
              FROM s CROSS JOIN (SELECT max(greatest(requested_datetime, closed_date)) as_of
                                 FROM s) a
              LEFT JOIN t ON s.service_name <=> t.category)
        GROUP BY ALL""",
}
TARGETS = """
    SELECT c.category, p.p90 AS target_hours
    FROM (SELECT DISTINCT service_name AS category FROM s) c
    LEFT JOIN (SELECT service_name, percentile(resolution_hours, 0.9) AS p90
               FROM s CROSS JOIN (SELECT max(greatest(requested_datetime, closed_date)) as_of
                                  FROM s) a
               WHERE closure_kind = 'resolved' AND resolution_hours >= 0
                 AND NOT arrays_overlap(quality_flags, array('closed_before_opened',
                                                             'closed_date_invalid'))
                 AND closed_date > a.as_of - INTERVAL 365 DAYS AND closed_date <= a.as_of
               GROUP BY 1) p ON c.category <=> p.service_name"""


def rows(records) -> list[tuple]:
    """Return records as sorted tuples, floats rounded, None sorting first."""
    out = [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in records]
    return sorted(out, key=lambda r: [(v is not None, v) for v in r])


def expected_targets(spark, env) -> list[tuple]:
    """Return the default targets computed from silver as it is now."""
    silver.live(env.delta(spark, "silver.cases")).createOrReplaceTempView("s")
    return rows(spark.sql(TARGETS).collect())


def check_gold(spark, env, targets: list[tuple]) -> dict[str, list[tuple]]:
    """Assert every gold table equals its aggregate of silver (sla_daily against targets) and
    its Postgres mirror; return the tables' rows."""
    # Cases deleted at the source count nowhere.
    silver.live(env.delta(spark, "silver.cases")).createOrReplaceTempView("s")
    spark.createDataFrame(targets, "category string, target_hours double").createOrReplaceTempView(
        "t"
    )
    found = {}
    with env.pg() as conn:
        schema = gold_schema(conn)
        for t in TABLES:
            lake = env.delta(spark, f"gold.{t.name}").select(*t.columns)
            found[t.name] = rows(lake.collect())
            mirrored = conn.execute(
                sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, t.columns)),
                    sql.Identifier(schema, t.name),
                )
            ).fetchall()
            assert rows(mirrored) == found[t.name], t.name
    assert found["sla_targets"] == targets
    for name, query in EXPECTED.items():
        expected = spark.sql(query)
        if name == "sla_daily":
            expected = expected.selectExpr("*", "met / nullif(met + missed, 0) AS share_met")
        assert found[name] == rows(expected.collect()), name
    return found


def pg_deleted(env) -> list[int]:
    """Return the ids Postgres `cases` marks deleted."""
    with env.pg() as conn:
        rows = conn.execute("SELECT service_request_id FROM cases WHERE deleted_at IS NOT NULL")
        return sorted(r[0] for r in rows)


def lake_rows_in(env) -> int:
    """Return the messages the lake query's batches have taken, as its ledger records them."""
    with env.pg() as conn:
        return conn.execute("SELECT coalesce(sum(rows_in), 0) FROM lake_batches").fetchone()[0]


def reflected(env) -> int | None:
    """Return the silver version Postgres gold reflects, None before the first build."""
    with env.pg() as conn:
        progress = read_progress(conn)
    return None if progress is None else progress.silver_version


def wait_for(streams, check, what: str, timeout: float = 300) -> None:
    """Wait until check() holds while the streams run, doing between batches what the job's
    wait does; fail on a query's error or timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        assert streams.exception() is None, streams.exception()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        streams.between()
        time.sleep(0.5)


@pytest.fixture
def gold_env(stream_env):
    """stream_env, with its gold schema in Postgres dropped afterwards."""
    yield stream_env
    with stream_env.pg() as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(gold_schema(conn)))
        )


def test_gold_follows_silver_through_late_updates_redone_batches_and_replay(spark, gold_env):
    env = gold_env
    cases = first_cases()
    env.produce_cases(cases)
    run_stream(spark, env.settings, once=True)
    targets = expected_targets(spark, env)
    assert sum(1 for t in targets if t[1] is not None) >= 3
    first = check_gold(spark, env, targets)
    assert first["backlog_daily"] and first["resolution_stats"]

    assert [c for c, t in targets if t is None] == ["Tree Maintenance"]

    updates = late_updates(cases)
    env.produce_cases(updates)
    # Deleted at the source (reconcile's tombstones): an open case, a closed one, a midnight one.
    deleted = [10_000, 10_001, 20_000]
    env.produce([(str(i).encode(), None) for i in deleted])
    sent = len(cases) + len(updates) + len(deleted)
    streams = start_stream(spark, env.settings.model_copy(update={"stream_gold_seconds": 0.0}))
    try:
        # Streaming, gold follows silver between the lake query's batches, never inside one.
        wait_for(streams, lambda: lake_rows_in(env) == sent, "the lake")
        silver_path = env.settings.table_path("silver.cases")
        wait_for(streams, lambda: reflected(env) == latest_version(spark, silver_path), "gold")
    finally:
        streams.stop()
    with env.pg() as conn:
        phases = conn.execute("SELECT phase_seconds FROM lake_batches").fetchall()
    assert phases and not any("gold" in p for (p,) in phases)
    # A target once set stays; the category without one gets it from its first resolved case,
    # and its days already built are recomputed with it.
    now = dict(expected_targets(spark, env))
    targets = [(c, now[c] if t is None else t) for c, t in targets]
    assert dict(targets)["Tree Maintenance"] is not None
    second = check_gold(spark, env, targets)
    assert second["backlog_daily"] != first["backlog_daily"]
    marked = env.delta(spark, "silver.cases").where("deleted_at IS NOT NULL")
    assert sorted(r.service_request_id for r in marked.collect()) == deleted
    live_cases = len({c["service_request_id"] for c in cases + updates}) - len(deleted)
    assert sum(r[-2] for r in second["daily_volume"]) == live_cases  # opened
    # The warehouse query marks them in Postgres too: the views count what gold counts.
    assert pg_deleted(env) == deleted
    with env.pg() as conn:
        assert conn.execute("SELECT sum(opened) FROM daily_volume").fetchone()[0] == live_cases

    # The mirror of the last batch redone (as after a crash before its commit): no change.
    with env.pg() as conn:
        schema = gold_schema(conn)
        conn.execute(
            sql.SQL("UPDATE {} SET silver_version = silver_version - 1").format(
                sql.Identifier(schema, "progress")
            )
        )
    redone = GoldSink(spark, env.settings).update(full=False, retry_seconds=0)
    assert redone == {"gold_changed": 0, "gold_deleted": 0}
    assert check_gold(spark, env, targets) == second
    assert GoldSink(spark, env.settings).update(full=False, retry_seconds=0) is None

    with env.pg() as conn:  # as in a warehouse that never saw them: the replay marks them
        conn.execute("UPDATE cases SET deleted_at = NULL")
    replayed = replay(spark, env.settings, SchemaRegistry(env.settings.schema_registry_url))
    # A replay keeps the deletions and sets the targets again, from silver as it is now.
    assert env.delta(spark, "silver.cases").where("deleted_at IS NOT NULL").count() == 3
    assert pg_deleted(env) == deleted
    check_gold(spark, env, expected_targets(spark, env))
    # What a second replay does to gold: rebuilt, nothing changes.
    assert GoldSink(spark, env.settings).update(full=True, retry_seconds=0) == {
        "gold_changed": 0,
        "gold_deleted": 0,
    }
    assert replayed.gold_changed > 0
    assert replayed.silver_rows == len({c["service_request_id"] for c in cases}) + 5


def _estimated_rows(conn: psycopg.Connection, *tables: str) -> list[int]:
    return [
        conn.execute(
            "SELECT reltuples::int FROM pg_class WHERE oid = %s::regclass", [f"gold.{t}"]
        ).fetchone()[0]
        for t in tables
    ]


def test_the_postgres_mirror_replaces_slices_with_null_keys_and_redoes_to_no_change(settings):
    db = scratch.create(settings, "gold_mirror_test")
    try:
        d1, d2, d3 = date(2019, 1, 1), date(2019, 1, 2), date(2019, 1, 3)
        volume = pa.table({
            "day": [d1, d1, d2], "category": [None, "A", None], "neighborhood": [None, "", None],
            "supervisor_district": [None, 1, 2], "police_district": ["P", None, "P"],
            "source": ["Web", "Web", None], "opened": [1, 2, 3], "closed": [0, 1, 0],
        })  # fmt: skip
        backlog = pa.table({
            "day": [d1, d2, d3, d2], "category": [None, None, None, "A"],
            "age_bucket": ["0-1 d"] * 4, "open_cases": [1, 2, 3, 4],
        })  # fmt: skip
        with psycopg.connect(db.owner_dsn, autocommit=True) as conn:
            full = [Change(DAILY_VOLUME, volume, None), Change(BACKLOG_DAILY, backlog, None)]
            # Empty tables take the rows whole.
            assert mirror(conn, full, Progress("t1", 3, datetime(2019, 1, 3, tzinfo=UTC))) == {
                "gold_changed": 7, "gold_deleted": 0,
            }  # fmt: skip
            # A whole table replaced is analyzed with it (reltuples stays -1 until then).
            assert _estimated_rows(conn, "daily_volume", "backlog_daily", "monthly_volume") == [
                3, 4, 3,
            ]  # fmt: skip
            assert mirror(conn, full, Progress("t1", 3, datetime(2019, 1, 3, tzinfo=UTC))) == {
                "gold_changed": 0, "gold_deleted": 0,
            }  # fmt: skip
            # Slice (d1, null category) now holds one changed row; the null-category backlog
            # from d2 on holds one row: the rest of those slices goes, other slices stay.
            new_volume = pa.table({
                "day": [d1], "category": pa.array([None], pa.string()),
                "neighborhood": pa.array([None], pa.string()), "supervisor_district": [None],
                "police_district": ["P"], "source": ["Web"], "opened": [5], "closed": [1],
            })  # fmt: skip
            slices = pa.table({"day": [d1], "category": pa.array([None], pa.string())})
            new_backlog = backlog.slice(1, 1).set_column(3, "open_cases", pa.array([7]))
            starts = pa.table({"category": pa.array([None], pa.string()), "day": [d2]})
            changes = [Change(DAILY_VOLUME, new_volume, slices),
                       Change(BACKLOG_DAILY, new_backlog, starts)]  # fmt: skip
            later = Progress("t1", 4, datetime(2019, 1, 4, tzinfo=UTC))
            assert mirror(conn, changes, later) == {"gold_changed": 2, "gold_deleted": 1}
            assert mirror(conn, changes, later) == {"gold_changed": 0, "gold_deleted": 0}
            assert read_progress(conn) == later
            got = conn.execute(
                "SELECT day, category, supervisor_district, opened FROM gold.daily_volume"
            ).fetchall()
            assert sorted(got, key=str) == sorted(
                [(d1, None, None, 5), (d1, "A", 1, 2), (d2, None, 2, 3)], key=str
            )
            got = conn.execute(
                "SELECT day, category, open_cases FROM gold.backlog_daily"
            ).fetchall()
            assert sorted(got, key=str) == sorted(
                [(d1, None, 1), (d2, None, 7), (d2, "A", 4)], key=str
            )
        with psycopg.connect(db.analyst_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM gold.backlog_daily").fetchone()[0] == 3
    finally:
        scratch.drop(settings, "gold_mirror_test")
