"""Benchmark of the streaming job: Kafka -> Postgres, bronze, silver, gold and case
predictions (when MLflow holds a champion) on the local stack.

1. Backfill: N generated cases over 18 years (10 % of them later versions of earlier ids) are
   produced to a fresh topic, then one bounded run (`sf311 stream --once`) loads them: the lake
   query alone, which loads Postgres too from the rows it decoded. Rows/s into Postgres (reported as
   sf311_warehouse, from the job's stream_batches) and into Delta (sf311_lake, from
   lake_batches) per phase, Spark jobs per phase, when each caught up, end to end, and the CPU
   seconds Spark, Postgres, Kafka and this driver spent on it (per million rows: what the
   pipeline itself spent, whatever else ran). `--scale` repeats it at each size, each on its
   own topic, schema and lake, and records the scale curve. The peak memory of the Spark
   driver, Postgres and the machine during the run (sampled every 2 s) and the gold tables'
   row counts come with each size.
2. Steady: a producer sends R events/s for S seconds while the job runs with its default
   processingTime trigger; freshness = Postgres commit time - Kafka timestamp, p50/p95 (and the
   same to the silver commit, for the lake), and from Kafka timestamp to each open case's
   prediction (`scored_at`; a champion must be registered, see --model-name).

3. `--master spark://HOST:PORT` runs each backfill again on that master (`make cluster-up`: a
   standalone master and two workers of 1 core on this machine) after the settings' own master
   (local[2]), in the same run, and reports the time ratio master / local per size.

Everything lands in throwaway topics, Postgres schemas and lake folders, removed afterwards;
with `--database NAME` the largest backfill's warehouse is a database kept for the dashboard
and scoring benchmarks (`bench.dashboard --database NAME`, `bench.score --database NAME`).
Usage: .venv/bin/python -m bench.stream [--rows 1000000 | --full | --scale 100000,1000000]
       [--rate 1000 --steady-seconds 300] [--master spark://127.0.0.1:7077] [--database NAME]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pyspark.sql import SparkSession

from bench.results import Figure, PeakMemory, cpu_seconds, write_results
from sf311.contract.registry import SchemaRegistry
from sf311.contract.schema import latest_schema_path, load_schema
from sf311.ingest.generate import CaseGenerator
from sf311.ingest.normalize import normalize
from sf311.ingest.records import CaseEncoder
from sf311.lakehouse.checkpoints import LAKE_QUERY, QUERIES, WAREHOUSE_QUERY
from sf311.lakehouse.stream import run_stream, start_stream
from sf311.lakehouse.writers import job_tag
from sf311.model.predictions import CasePredictionSink
from sf311.settings import Settings, load_settings
from sf311.spark import build_spark
from sf311.warehouse.gold import TABLES as GOLD_TABLES
from sf311.warehouse.gold import gold_schema
from sf311.warehouse.migrate import migrate
from tests.support import scratch

POOL = 200_000
# The city's whole dataset: about 8 million cases since 2008.
FULL_ROWS = 8_000_000
HISTORY_DAYS = 18 * 365
TARGET_ROWS_PER_S = 15_000
TARGET_FRESHNESS_P95_S = 5.0
# An open case's prediction written within a minute of it landing (issue #22).
TARGET_SCORE_FRESHNESS_S = 60.0
TARGET_FULL_SECONDS = 360.0
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _cases_pool(size: int) -> list[dict[str, Any]]:
    gen = CaseGenerator(seed=1, days=HISTORY_DAYS)
    pool = []
    for i in range(size):
        case = normalize(gen.case(i, size), "generator")
        if isinstance(case, dict):
            pool.append(case)
    return pool


class Feed:
    """Encodes generated cases with fresh ids; every 10th is a later version of an earlier id.

    The `rows` messages walk the pool (HISTORY_DAYS, oldest first) once, in time order as
    the extractor's backfill reads the city's cases; a pool case met again is moved by up to
    two days, so that repeated cases spread over days as the gold tables' rows would."""

    def __init__(self, encoder: CaseEncoder, pool: list[dict[str, Any]], rows: int) -> None:
        self.encoder = encoder
        self.pool = pool
        self.rows = rows
        self.first_id = 50_000_000
        self.next = 0
        self.rng = random.Random(3)
        self.ids: set[int] = set()

    def message(self) -> tuple[bytes, bytes]:
        """Return the (key, value) of the next case version."""
        i = self.next
        self.next += 1
        case = dict(self.pool[min(i * len(self.pool) // self.rows, len(self.pool) - 1)])
        shift = HOUR_MS * (i % 48)
        for field in ("requested_datetime", "updated_datetime", "closed_date"):
            if case[field] is not None:
                case[field] += shift
        if i % 10 == 9:
            sid = self.first_id + self.rng.randrange(i)
            case["updated_datetime"] = (
                case["updated_datetime"] or case["requested_datetime"]
            ) + DAY_MS
        else:
            sid = self.first_id + i
        case["service_request_id"] = sid
        self.ids.add(sid)
        return str(sid).encode(), self.encoder.encode(case)


def _producer(settings: Settings) -> Producer:
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "compression.type": "lz4",
        }
    )


def _send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)


def produce_backfill(settings: Settings, feed: Feed, rows: int) -> float:
    """Produce `rows` messages as fast as possible; return messages/s."""
    producer = _producer(settings)
    t0 = time.monotonic()
    for n in range(rows):
        key, value = feed.message()
        _send(producer, settings.kafka_topic, key, value)
        if n % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(600) == 0, "messages not delivered"
    return rows / (time.monotonic() - t0)


def produce_steady(settings: Settings, feed: Feed, rate: int, seconds: float) -> int:
    """Produce `rate` messages/s for `seconds`, in 100 ms ticks; return the count sent."""
    producer = _producer(settings)
    per_tick = max(1, rate // 10)
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        tick = start + (sent // per_tick + 1) * 0.1
        for _ in range(per_tick):
            key, value = feed.message()
            _send(producer, settings.kafka_topic, key, value)
            sent += 1
        producer.poll(0)
        time.sleep(max(0.0, tick - time.monotonic()))
    assert producer.flush(60) == 0
    return sent


def _ledger(
    conn: psycopg.Connection, query: str, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Return the batches of one query from its table (stream_batches or lake_batches)."""
    table = "stream_batches" if query == WAREHOUSE_QUERY else "lake_batches"
    cur = conn.execute(
        "SELECT query_id, batch_id, rows_in, rows_quarantined, phase_seconds, finished_at,"
        " extract(epoch FROM finished_at - started_at)::float8 AS seconds,"
        f" lag_p50_seconds, lag_p95_seconds FROM {table}"
        " WHERE %(since)s::timestamptz IS NULL OR kafka_ts_min >= %(since)s ORDER BY batch_id",
        {"since": since},
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def spark_jobs(spark: SparkSession, batches: list[dict[str, Any]]) -> dict[str, int]:
    """Return the number of Spark jobs each phase ran over the batches (tagged by the job)."""
    tracker = spark.sparkContext._jsc.sc().statusTracker()
    jobs: dict[str, int] = {}
    for b in batches:
        for phase in b["phase_seconds"] or {}:
            n = len(tracker.getJobIdsForTag(job_tag(b["query_id"], b["batch_id"], phase)))
            jobs[phase] = jobs.get(phase, 0) + n
    return jobs


def phase_totals(batches: list[dict[str, Any]]) -> dict[str, float]:
    """Return the seconds of each phase summed over the batches."""
    totals: dict[str, float] = {}
    for b in batches:
        for phase, seconds in (b["phase_seconds"] or {}).items():
            totals[phase] = round(totals.get(phase, 0.0) + seconds, 2)
    return totals


@contextmanager
def bench_env(
    base: Settings, database: str | None = None, **overrides: Any
) -> Iterator[tuple[Settings, int, str]]:
    """Yield settings on a fresh topic, Postgres schema and lake, the schema id and the DSN.

    With `database`, the warehouse is a fresh database of that name instead of a schema (its
    gold tables in schema `gold`, as the dashboard reads them), kept afterwards for
    `bench.dashboard --database` and `bench.score`.
    """
    tag = uuid.uuid4().hex[:8]
    schema = f"bench_stream_{tag}"
    lake = base.state_dir / "bench" / f"stream-{tag}"
    owner_dsn = base.postgres_dsn.get_secret_value()
    if database:
        dsn = scratch.create(base, database).owner_dsn
    else:
        dsn = f"{owner_dsn}{'&' if '?' in owner_dsn else '?'}options=" + quote(
            f"-c search_path={schema}"
        )
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        migrate(dsn)
    settings = load_settings(
        kafka_topic=f"sf311.bench.stream.{tag}",
        lake_path=str(lake / "lake"),
        checkpoint_path=str(lake / "checkpoints"),
        postgres_dsn=dsn,
        **overrides,
    )
    admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap_servers})
    topic = NewTopic(settings.kafka_topic, num_partitions=base.kafka_partitions)
    for future in admin.create_topics([topic]).values():
        future.result()
    reader = load_schema(latest_schema_path(base.schemas_dir))
    registry = SchemaRegistry(base.schema_registry_url)
    schema_id = registry.register(settings.case_subject, reader)
    try:
        yield settings, schema_id, dsn
    finally:
        for future in admin.delete_topics([settings.kafka_topic]).values():
            future.result()
        registry.delete(settings.case_subject)
        if not database:
            with psycopg.connect(owner_dsn, autocommit=True) as conn:
                # Gold's mirror of a warehouse in schema X lives in X_gold (migration 0013).
                conn.execute(f"DROP SCHEMA {schema}, {schema}_gold CASCADE")
        shutil.rmtree(lake, ignore_errors=True)


def backfill(spark: SparkSession, settings: Settings, feed: Feed, rows: int, dsn: str) -> dict:
    """Return the backfill figures: produce rate, per query and phase, and end to end."""
    produce_rate = produce_backfill(settings, feed, rows)
    started = datetime.now(UTC)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    with PeakMemory() as memory:
        run_stream(spark, settings, once=True, extra_sinks=(CasePredictionSink,))
    wall = time.monotonic() - t0
    cpu = {kind: round(used - cpu0[kind], 1) for kind, used in cpu_seconds().items()}
    with psycopg.connect(dsn) as conn:
        ledgers = {q: _ledger(conn, q) for q in QUERIES}
        loaded = conn.execute("SELECT count(*) FROM cases").fetchone()[0]
        predictions = conn.execute("SELECT count(*) FROM case_predictions").fetchone()[0]
        gold = gold_schema(conn)
        gold_rows = {
            t.name: conn.execute(f"SELECT count(*) FROM {gold}.{t.name}").fetchone()[0]
            for t in GOLD_TABLES
        }
    queries = {}
    for query, batches in ledgers.items():
        consumed = sum(b["rows_in"] for b in batches)
        totals = phase_totals(batches)
        caught_up = (max(b["finished_at"] for b in batches) - started).total_seconds()
        queries[query] = {
            "rows_consumed": consumed,
            "rows_quarantined": sum(b["rows_quarantined"] for b in batches),
            "batches": len(batches),
            "caught_up_seconds": round(caught_up, 1),
            "rows_per_s": round(consumed / caught_up),
            "phase_seconds": totals,
            "phase_rows_per_s": {p: round(consumed / s) for p, s in totals.items() if s > 0},
            "spark_jobs_per_batch": {
                p: round(n / len(batches), 1) for p, n in spark_jobs(spark, batches).items()
            },
        }
    consumed = min(q["rows_consumed"] for q in queries.values())
    return {
        "rows": rows,
        "distinct_ids": len(feed.ids),
        "postgres_rows": loaded,
        "produce_rows_per_s": round(produce_rate),
        # The bounded run's Postgres loads follow its lake batches.
        "max_offsets_per_batch": settings.stream_lake_max_offsets_per_trigger,
        "queries": queries,
        "end_to_end_rows_per_s": round(consumed / wall),
        "end_to_end_seconds": round(wall, 1),
        # After the last lake batch: gold's one refresh of the bounded run, mainly.
        "after_lake_seconds": round(wall - queries[LAKE_QUERY]["caught_up_seconds"], 1),
        # What the pipeline's processes spent, apart from the rest of the machine; 2 cores give
        # 2 CPU-s per second of wall time.
        "cpu_seconds": cpu,
        "cpu_seconds_per_million_rows": round(sum(cpu.values()) * 1e6 / consumed, 1),
        # Proportional set sizes sampled every 2 s; "machine" is all memory in use, the rest
        # of the stack (Kafka, the registry, MLflow, Airflow) included.
        "peak_memory_mb": memory.peaks,
        "gold_rows": gold_rows,
        "case_predictions": predictions,
    }


def steady(spark: SparkSession, settings: Settings, feed: Feed, rate: int, seconds: float,
           dsn: str) -> dict:  # fmt: skip
    """Return the freshness figures of a steady `rate` events/s stream."""
    streams = start_stream(spark, settings, extra_sinks=(CasePredictionSink,))
    try:
        time.sleep(5)
        since = datetime.now(UTC)
        sent_box: list[int] = []
        producer = threading.Thread(
            target=lambda: sent_box.append(produce_steady(settings, feed, rate, seconds))
        )
        producer.start()
        # What the job's own wait does between batches: gold refreshes here, beside them.
        while producer.is_alive():
            streams.between()
            producer.join(1)
        deadline = time.monotonic() + 120
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                ledgers = {q: _ledger(conn, q, since) for q in QUERIES}
                if all(sum(b["rows_in"] for b in bs) >= sent_box[0] for bs in ledgers.values()):
                    break
                streams.between()
                time.sleep(1)
            scores = _score_freshness(conn, since)
    finally:
        streams.stop()
    batches = ledgers[WAREHOUSE_QUERY]
    lake = ledgers[LAKE_QUERY]
    p50s = [b["lag_p50_seconds"] for b in batches]
    p95s = [b["lag_p95_seconds"] for b in batches]
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "trigger": settings.stream_trigger,
        "lake_trigger": settings.stream_lake_trigger,
        "sent": sent_box[0],
        "consumed": sum(b["rows_in"] for b in batches),
        "batches": len(batches),
        "batch_seconds_median": round(statistics.median(b["seconds"] for b in batches), 2),
        "phase_seconds_median": {
            p: round(statistics.median((b["phase_seconds"] or {}).get(p, 0.0) for b in batches), 2)
            for p in phase_totals(batches)
        },
        "freshness_p50_s": round(statistics.median(p50s), 2),
        "freshness_p95_s": round(_pct(p95s, 0.95), 2),
        "lake_batches": len(lake),
        "lake_batch_seconds_median": round(statistics.median(b["seconds"] for b in lake), 2),
        "lake_phase_seconds_median": {
            p: round(statistics.median((b["phase_seconds"] or {}).get(p, 0.0) for b in lake), 2)
            for p in phase_totals(lake)
        },
        "lake_freshness_p50_s": round(statistics.median(b["lag_p50_seconds"] for b in lake), 2),
        "lake_freshness_p95_s": round(_pct([b["lag_p95_seconds"] for b in lake], 0.95), 2),
        **scores,
    }


def _score_freshness(conn: psycopg.Connection, since: datetime) -> dict[str, Any]:
    """Return p50/p95/max seconds from each open case's Kafka timestamp to its prediction's
    scored_at, over the cases produced since `since`, once their number stops growing."""
    query = (
        "SELECT count(*), percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY s),"
        " max(s) FROM (SELECT extract(epoch FROM p.scored_at - c.kafka_timestamp)::float8 AS s"
        " FROM case_predictions p JOIN cases c USING (service_request_id)"
        " WHERE c.kafka_timestamp >= %s) lags"
    )
    before = None
    for _ in range(30):  # the batch's predictions commit after its ledger row
        row = conn.execute(query, [since]).fetchone()
        if row[0] and row[0] == before:
            break
        before = row[0]
        time.sleep(2)
    count, (p50, p95), worst = row[0], row[1] or (None, None), row[2]
    return {
        "scored_open_cases": count,
        "score_freshness_p50_s": p50 and round(p50, 2),
        "score_freshness_p95_s": p95 and round(p95, 2),
        "score_freshness_max_s": worst and round(worst, 2),
    }


def main() -> None:
    """Run the benchmark, print its figures and write them to bench/results/stream.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="backfill size")
    parser.add_argument(
        "--full", action="store_true",
        help=f"backfill {FULL_ROWS:,} rows (results in stream_full.json)",
    )  # fmt: skip
    parser.add_argument("--scale", default="", help="comma-separated backfill sizes to chart")
    parser.add_argument(
        "--max-offsets",
        type=int,
        default=None,
        help="rows per warehouse micro-batch (steady stream; a bounded run loads per lake batch)",
    )
    parser.add_argument(
        "--lake-max-offsets", type=int, default=None, help="rows per lake micro-batch"
    )
    parser.add_argument(
        "--database", default=None, help="load the largest backfill into a fresh database of "
        "this name and keep it (for bench.dashboard --database and bench.score)",
    )  # fmt: skip
    parser.add_argument(
        "--model-name", default=None, help="MLflow model whose champion scores the open cases "
        "(bench.score --register-only registers one); default: the settings' own",
    )  # fmt: skip
    parser.add_argument("--rate", type=int, default=1000, help="steady events/s")
    parser.add_argument("--steady-seconds", type=float, default=300)
    parser.add_argument(
        "--master", default=None, help="also run each backfill on this Spark master, e.g. "
        "spark://127.0.0.1:7077, and report its time / the settings' master's",
    )  # fmt: skip
    args = parser.parse_args()
    sizes = [int(n) for n in args.scale.split(",") if n] or [FULL_ROWS if args.full else args.rows]

    base = load_settings()
    overrides = {}
    if args.max_offsets:
        overrides["stream_max_offsets_per_trigger"] = args.max_offsets
    if args.lake_max_offsets:
        overrides["stream_lake_max_offsets_per_trigger"] = args.lake_max_offsets
    if args.model_name:
        overrides["model_name"] = args.model_name
    reader = load_schema(latest_schema_path(base.schemas_dir))
    pool = _cases_pool(POOL)
    details: dict[str, Any] = {"backfills": []}
    scale = []
    spark = build_spark(base, app_name="sf311-bench-stream")
    try:
        for rows in sizes:
            database = args.database if rows == max(sizes) else None
            with bench_env(base, database, **overrides) as (settings, schema_id, dsn):
                feed = Feed(CaseEncoder(reader, schema_id), pool, rows)
                result = backfill(spark, settings, feed, rows, dsn)
            print(json.dumps(result, indent=2))
            details["backfills"].append({"master": base.spark_master, **result})
            scale.append({"rows": rows, "seconds": result["end_to_end_seconds"]})
        if args.steady_seconds > 0:
            with bench_env(base, None, **overrides) as (settings, schema_id, dsn):
                rows = round(args.rate * args.steady_seconds)
                feed = Feed(CaseEncoder(reader, schema_id), pool, rows)
                details["steady"] = steady(
                    spark, settings, feed, args.rate, args.steady_seconds, dsn
                )
            print(json.dumps(details["steady"], indent=2))
    finally:
        spark.stop()
    if args.master:
        details["cluster"] = on_master(args.master, sizes, details["backfills"], overrides, pool)
        print(json.dumps(details["cluster"], indent=2))
    # The full backfill and the cluster comparison keep files of their own.
    name = "stream_full" if args.full else "stream_cluster" if args.master else "stream"
    write_results(name, figures(details), details, scale=scale if len(scale) > 1 else None)


def on_master(
    master: str, sizes: list[int], local: list[dict[str, Any]], overrides: dict[str, Any],
    pool: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """Return each backfill size run again on `master` and its time over the local run's."""
    base = load_settings(spark_master=master)
    reader = load_schema(latest_schema_path(base.schemas_dir))
    # This process's first SparkContext is stopped: the next one may name another master.
    spark = build_spark(base, app_name="sf311-bench-stream-cluster")
    runs = []
    try:
        for rows, before in zip(sizes, local, strict=True):
            with bench_env(base, None, spark_master=master, **overrides) as (
                settings,
                schema_id,
                dsn,
            ):
                result = backfill(spark, settings, Feed(CaseEncoder(reader, schema_id), pool, rows),
                                  rows, dsn)  # fmt: skip
            runs.append({
                "rows": rows,
                "local_seconds": before["end_to_end_seconds"],
                "master_seconds": result["end_to_end_seconds"],
                "master_over_local": round(
                    result["end_to_end_seconds"] / before["end_to_end_seconds"], 2
                ),
                "backfill": result,
            })  # fmt: skip
    finally:
        spark.stop()
    # Executors are separate JVMs that cpu_seconds() does not count: only wall time compares.
    return {"master": master, "local_master": local[0]["master"], "runs": runs}


def figures(details: dict[str, Any]) -> list[Figure]:
    """Return the benchmark's figures with their targets."""
    largest = max(details["backfills"], key=lambda b: b["rows"])
    out = [
        Figure("backfill end-to-end", largest["end_to_end_rows_per_s"], "rows/s",
               largest["rows"], TARGET_ROWS_PER_S),
        Figure("backfill CPU seconds per million rows",
               largest["cpu_seconds_per_million_rows"], "CPU-s", largest["rows"], better="lower"),
    ]  # fmt: skip
    for kind, mb in largest["peak_memory_mb"].items():
        out.append(Figure(f"backfill peak memory {kind}", mb, "MB", largest["rows"],
                          better="lower"))  # fmt: skip
    out.append(Figure("backfill after the last lake batch (gold)", largest["after_lake_seconds"],
                      "s", largest["rows"], better="lower"))  # fmt: skip
    for query, q in largest["queries"].items():
        out.append(Figure(f"backfill {query} caught up", q["rows_per_s"], "rows/s",
                          largest["rows"]))  # fmt: skip
        for phase, rate in q["phase_rows_per_s"].items():
            out.append(Figure(f"backfill {query} phase {phase}", rate, "rows/s", largest["rows"]))
    full = [b for b in details["backfills"] if b["rows"] >= FULL_ROWS]
    if full:
        out.append(Figure("full backfill time", full[0]["end_to_end_seconds"], "s",
                          full[0]["rows"], TARGET_FULL_SECONDS, "lower"))  # fmt: skip
    for run in details.get("cluster", {}).get("runs", []):
        out.append(Figure(f"backfill time on {details['cluster']['master']} / local",
                          run["master_over_local"], "x", run["rows"], better="lower"))  # fmt: skip
    if "steady" in details:
        st = details["steady"]
        rows = st["consumed"]
        out += [
            Figure(f"freshness p50 at {st['rate_per_s']} events/s", st["freshness_p50_s"], "s",
                   rows, better="lower"),
            Figure(f"freshness p95 at {st['rate_per_s']} events/s", st["freshness_p95_s"], "s",
                   rows, TARGET_FRESHNESS_P95_S, "lower"),
            Figure(f"lake freshness p95 at {st['rate_per_s']} events/s",
                   st["lake_freshness_p95_s"], "s", rows, better="lower"),
        ]  # fmt: skip
        if st["score_freshness_p95_s"] is not None:
            out.append(Figure(f"case prediction freshness p95 at {st['rate_per_s']} events/s",
                              st["score_freshness_p95_s"], "s", st["scored_open_cases"],
                              TARGET_SCORE_FRESHNESS_S, "lower"))  # fmt: skip
    return out


if __name__ == "__main__":
    main()
