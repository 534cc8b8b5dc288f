"""The streaming job end to end on the real Kafka, registry, Spark, Delta and Postgres."""

from __future__ import annotations

import random
import time
from collections import Counter

from stream_support import latest, make_versions

from sf311.lakehouse import decode, silver
from sf311.lakehouse.checkpoints import LAKE_QUERY
from sf311.lakehouse.stream import run_stream, start_stream


def _poison(env, rng: random.Random) -> list[tuple[bytes, str]]:
    """Return 24 bad messages (1 % of the test's 2,400) with the reason each must get."""
    out = []
    for i in range(4):
        sid = 9_000_000 + i * 10
        good = env.frame(make_versions(1, 0, seed=i, first_id=sid)[0])
        # Opened far in the future: no case yet (a closure before the opening is only a flag).
        bad_times = make_versions(1, 0, seed=i, first_id=sid + 1)[0]
        bad_times["requested_datetime"] = bad_times["requested_datetime"].replace(year=2100)
        ancient = make_versions(1, 0, seed=i, first_id=sid + 2)[0]
        ancient["requested_datetime"] = ancient["requested_datetime"].replace(year=1970)
        no_id = make_versions(1, 0, seed=i, first_id=0)[0]
        unknown = make_versions(1, 0, seed=i, first_id=sid + 3)[0]
        out += [
            (b"\x7f" + rng.randbytes(40), decode.NOT_FRAMED),
            (env.frame(unknown, 987_654), decode.UNKNOWN_SCHEMA_ID),
            (good[: len(good) // 2], decode.UNDECODABLE),
            (env.frame(bad_times), silver.BAD_REQUESTED),
            (env.frame(ancient), silver.BAD_REQUESTED),
            (env.frame(no_id), silver.MISSING_ID),
        ]  # fmt: skip
    return out


def _index_oids(conn) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT indexrelid::regclass::text, indexrelid::int8 FROM pg_index"
            " WHERE indrelid = 'cases'::regclass"
        ).fetchall()
    )


def test_poison_is_quarantined_with_reasons_and_every_valid_row_lands(spark, stream_env):
    rng = random.Random(7)
    versions = make_versions(ids=2000, updates=400, seed=1)
    poison = _poison(stream_env, rng)
    messages = [(str(v["service_request_id"]).encode(), stream_env.frame(v)) for v in versions]
    for value, _ in poison:
        messages.insert(rng.randrange(len(messages)), (b"poison", value))
    stream_env.produce(messages)

    with stream_env.pg() as conn:
        indexes = _index_oids(conn)
    run_stream(spark, stream_env.settings, once=True)

    truth = latest(versions)
    assert stream_env.silver_cases(spark) == truth
    assert stream_env.pg_cases() == truth
    quarantined = stream_env.delta(spark, silver.QUARANTINE_TABLE).collect()
    assert Counter((bytes(q.value), q.reason) for q in quarantined) == Counter(poison)
    bronze = stream_env.delta(spark, "bronze.cases_raw")
    assert bronze.count() == len(messages)
    assert bronze.select("partition", "offset").distinct().count() == len(messages)

    with stream_env.pg() as conn:
        ledger = conn.execute(
            "SELECT sum(rows_in), sum(rows_quarantined), count(*), "
            "bool_and(lag_p95_seconds >= lag_p50_seconds) FROM stream_batches"
        ).fetchone()
    assert ledger[:2] == (len(messages), len(poison))
    assert ledger[3] is True
    with stream_env.pg() as conn:
        vacuumed = conn.execute(
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables"
            " WHERE relid = 'cases'::regclass"
        ).fetchone()[0]
    # The bounded run vacuums what it loaded: the open-case views read their index alone.
    assert vacuumed is True
    with stream_env.pg() as conn:
        rebuilt = _index_oids(conn)
        assert conn.execute("SELECT count(*) FROM deferred_indexes").fetchone()[0] == 0
    # Into an empty `cases`, the run built every secondary index anew after its loads.
    assert rebuilt.keys() == indexes.keys()
    assert [n for n in indexes if rebuilt[n] == indexes[n]] == ["cases_pkey"]

    # A second run finds nothing new and changes nothing.
    run_stream(spark, stream_env.settings, once=True)
    assert stream_env.pg_cases() == truth
    assert stream_env.delta(spark, "bronze.cases_raw").count() == len(messages)
    with stream_env.pg() as conn:
        assert conn.execute("SELECT count(*) FROM stream_batches").fetchone()[0] == ledger[2]


def test_the_warehouse_query_skips_what_a_bounded_run_loaded(spark, stream_env):
    first = make_versions(ids=600, updates=150, seed=21)
    second = make_versions(ids=600, updates=150, seed=22, first_id=3_000_000)
    stream_env.produce_cases(first)
    # A bounded run is the lake query alone; it loads Postgres from the rows it decoded.
    progress = run_stream(spark, stream_env.settings, once=True)
    assert set(progress) == {LAKE_QUERY}
    assert stream_env.pg_cases() == latest(first)

    stream_env.produce_cases(second)
    streams = start_stream(spark, stream_env.settings)
    try:
        truth = latest(first + second)
        deadline = time.monotonic() + 600
        while stream_env.pg_cases() != truth:
            assert streams.exception() is None and time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        streams.stop()
    with stream_env.pg() as conn:
        by_query = dict(
            conn.execute(
                "SELECT query_id = %s, sum(rows_in) FROM stream_batches GROUP BY 1",
                [progress[LAKE_QUERY]["id"]],
            ).fetchall()
        )
    # The warehouse query started at offset 0 of its own checkpoint, yet decoded and loaded
    # only the second wave: every message is counted once.
    assert by_query == {True: len(first), False: len(second)}


def test_a_bounded_run_first_catches_up_a_warehouse_behind_the_lake(spark, stream_env):
    versions = make_versions(ids=500, updates=100, seed=23)
    stream_env.produce_cases(versions)
    run_stream(spark, stream_env.settings, once=True)
    # The lake has committed every message; make the warehouse lag behind it, as when the
    # warehouse query fell behind while streaming.
    with stream_env.pg() as conn:
        conn.execute("TRUNCATE cases, case_predictions, warehouse_offsets")
        lake_batches = conn.execute("SELECT count(*) FROM lake_batches").fetchone()[0]
    assert stream_env.pg_cases() == {}

    run_stream(spark, stream_env.settings, once=True)
    # The lake query had nothing new to read; the warehouse query reloaded what it lacked.
    assert stream_env.pg_cases() == latest(versions)
    assert stream_env.pg_count("lake_batches") == lake_batches
