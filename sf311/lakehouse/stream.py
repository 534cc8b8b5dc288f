"""The streaming job: Kafka -> foreachBatch(bronze, silver, quarantine, warehouse)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow.compute as pc
from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from sf311.lakehouse import bronze, decode, silver
from sf311.lakehouse.checkpoints import QUERY_NAME, checkpoint_location
from sf311.logs import configure_logging
from sf311.settings import Settings
from sf311.spark import build_spark
from sf311.warehouse.cases import CASE_COLUMNS, BatchLoad, load_batch_retrying, record_phases

log = logging.getLogger(__name__)

AVAILABLE_NOW = "availablenow"
# Postgres CSV: a quote doubles inside a quoted value; an unquoted empty field is NULL.
CSV_OPTIONS = {"escape": '"', "nullValue": "", "emptyValue": '""'}


def trigger_options(trigger: str, once: bool = False) -> dict[str, object]:
    """Return DataStreamWriter.trigger keyword arguments for a trigger setting."""
    if once or trigger.replace("_", "").replace(" ", "").lower() == AVAILABLE_NOW:
        return {"availableNow": True}
    return {"processingTime": trigger}


def kafka_messages(spark: SparkSession, settings: Settings) -> DataFrame:
    """Return the streaming DataFrame of the cases topic."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", settings.stream_starting_offsets)
        .option("maxOffsetsPerTrigger", settings.stream_max_offsets_per_trigger)
        .load()
    )


# Session settings of the streaming job. A micro-batch commits to up to three Delta tables every
# few seconds: re-shuffling each write (optimizeWrite) and compacting after each commit
# (autoCompact) cost more per batch than the small files they save, so the job compacts every
# `stream_compact_every` batches instead; the logs of these tables are small enough to replay in
# 2 partitions rather than Delta's 50, whose task overhead dominated small batches.
STREAM_SQL_CONF = {
    "spark.databricks.delta.optimizeWrite.enabled": "false",
    "spark.databricks.delta.autoCompact.enabled": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
}


def warehouse_csv(curated: DataFrame) -> DataFrame:
    """Return the id and one Postgres-ready CSV line (CASE_COLUMNS order) per curated row."""
    cols = []
    for field_ in curated.select(*CASE_COLUMNS).schema.fields:
        col = F.col(field_.name)
        if field_.dataType.simpleString() == "string":
            # Postgres text cannot hold NUL characters.
            col = F.regexp_replace(col, "\u0000", "")
        cols.append(col.alias(field_.name))
    return curated.select(
        "service_request_id", F.to_csv(F.struct(*cols), CSV_OPTIONS).alias("line")
    )


@dataclass(frozen=True)
class CuratedBatch:
    """A batch's curated rows collected to the driver: CSV text for COPY, count and id range."""

    csv_chunks: list[str]
    rows: int
    id_min: int | None
    id_max: int | None


def collect_curated(curated: DataFrame) -> CuratedBatch:
    """Return the curated rows as a few large CSV strings plus their count and id range, in
    one Spark job."""
    table = warehouse_csv(curated).toArrow()
    ids = table["service_request_id"]
    chunks = ["".join(f"{line}\n" for line in c.to_pylist()) for c in table["line"].chunks]
    if table.num_rows == 0:
        return CuratedBatch(chunks, 0, None, None)
    bounds = pc.min_max(ids)
    return CuratedBatch(chunks, table.num_rows, bounds["min"].as_py(), bounds["max"].as_py())


def batch_figures(validated: DataFrame) -> Row:
    """Return rows_in, rows_valid, ts_min, ts_max, pct (Kafka time p05, p50 in ms) and
    unknown_ids (schema ids the decode did not know)."""
    unknown = F.when(F.col("decode_error") == F.lit(decode.UNKNOWN_SCHEMA_ID), F.col("schema_id"))
    return validated.agg(
        F.count(F.lit(1)).alias("rows_in"),
        F.count(F.when(F.col("reason").isNull(), 1)).alias("rows_valid"),
        F.min("kafka_timestamp").alias("ts_min"),
        F.max("kafka_timestamp").alias("ts_max"),
        F.percentile_approx(F.unix_millis("kafka_timestamp"), [0.05, 0.5]).alias("pct"),
        F.collect_set(unknown).alias("unknown_ids"),
    ).first()


def job_tag(batch_id: int, phase: str) -> str:
    """Return the Spark job tag of one phase of one micro-batch."""
    return f"sf311-batch-{batch_id}-{phase}"


@dataclass
class PhaseClock:
    """Seconds spent in each phase of one micro-batch; each phase tags the Spark jobs it runs."""

    spark: SparkSession
    batch_id: int
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the block as `phase` and tag its Spark jobs with job_tag(batch_id, phase)."""
        sc = self.spark.sparkContext
        tag = job_tag(self.batch_id, phase)
        sc.addJobTag(tag)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.monotonic() - t0, 3)
            sc.removeJobTag(tag)


@dataclass
class BatchWriter:
    """The foreachBatch function: one micro-batch to Postgres first, then bronze and silver.

    Every sink is idempotent per batch id (the Postgres ledger, Delta txnAppId/txnVersion and
    MERGE's newer-wins guard), so the order is free: Postgres goes first so that freshness does
    not wait on Delta, and a crash between sinks replays the batch safely."""

    spark: SparkSession
    settings: Settings
    registry: decode.SchemaRegistry
    reader_schema: str
    query_name: str = QUERY_NAME
    rules: silver.Rules = silver.Rules()
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _query_id: str | None = None

    def query_id(self) -> str:
        """Return the id of the running query, stable across restarts from one checkpoint."""
        if self._query_id is None:
            running = [q for q in self.spark.streams.active if q.name == self.query_name]
            if len(running) != 1:
                raise RuntimeError(f"expected one active query {self.query_name!r}")
            self._query_id = running[0].id
        return self._query_id

    def _decode(
        self, messages: DataFrame, batch_id: int, started: datetime, cached: list[DataFrame]
    ) -> tuple[DataFrame, Row]:
        """Return the batch decoded and validated (persisted) and its batch_figures.

        It decodes with the writer schemas met so far, sparing a Spark job that would list the
        batch's schema ids; only a batch holding an id never looked up is decoded again."""
        framed = decode.frame(messages)
        while True:
            decoded = decode.decode(framed, self.registry.known(), self.reader_schema)
            raw = bronze.bronze_rows(decoded, batch_id, started)
            validated = silver.validate(raw, as_of=started, rules=self.rules)
            validated = validated.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(validated)
            figures = batch_figures(validated)
            unseen = self.registry.unseen(figures.unknown_ids)
            if not unseen:
                return validated, figures
            self.registry.writer_schemas(unseen)
            validated.unpersist()

    def __call__(self, messages: DataFrame, batch_id: int) -> None:
        started = self.clock()
        phase = PhaseClock(self.spark, batch_id)
        # A new checkpoint gets a new query id, hence new Delta txnAppIds: a reset replays.
        app_id = f"sf311.{self.query_name}.{self.query_id()}"
        s = self.settings
        cached: list[DataFrame] = []
        try:
            with phase("decode"):
                validated, figures = self._decode(messages, batch_id, started, cached)
            if figures.rows_in == 0:
                return
            with phase("curate"):
                curated = silver.curated_rows(validated).persist(StorageLevel.MEMORY_AND_DISK)
                cached.append(curated)
                collected = collect_curated(curated)
            p05, p50 = (datetime.fromtimestamp(ms / 1000, UTC) for ms in figures.pct)
            load = BatchLoad(
                query_id=self.query_id(),
                batch_id=batch_id,
                csv_chunks=collected.csv_chunks,
                rows_in=figures.rows_in,
                rows_valid=figures.rows_valid,
                rows_quarantined=figures.rows_in - figures.rows_valid,
                rows_curated=collected.rows,
                # Spark hands back naive local times; make them instants.
                kafka_ts_min=figures.ts_min.astimezone(UTC),
                kafka_ts_max=figures.ts_max.astimezone(UTC),
                kafka_ts_p05=p05,
                kafka_ts_p50=p50,
                bronze_seconds=None,
                silver_seconds=None,
                started_at=started,
            )
            dsn = s.postgres_dsn.get_secret_value()
            with phase("postgres"):
                changed = load_batch_retrying(dsn, load, s.stream_pg_retry_seconds)
            with phase("bronze"):
                bronze.write_bronze(
                    validated.select(*bronze.COLUMNS), s.table_path(bronze.TABLE), app_id, batch_id
                )
            if load.rows_quarantined:
                with phase("quarantine"):
                    silver.append_quarantine(
                        silver.quarantine_rows(validated),
                        s.table_path(silver.QUARANTINE_TABLE),
                        app_id,
                        batch_id,
                    )
            with phase("silver"):
                action = silver.merge_silver(
                    self.spark,
                    curated,
                    s.table_path(silver.TABLE),
                    app_id,
                    batch_id,
                    (collected.id_min, collected.id_max),
                )
            if s.stream_compact_every and batch_id % s.stream_compact_every == 0 and batch_id:
                with phase("compact"):
                    compact_tables(self.spark, s)
            finished = self.clock()
            record_phases(dsn, load.query_id, batch_id, phase.seconds, finished)
            freshness = (finished - figures.ts_min.astimezone(UTC)).total_seconds()
            log.info(
                "batch %d: %d in, %d valid, %d curated, silver %s, warehouse %s rows",
                batch_id, load.rows_in, load.rows_valid, load.rows_curated, action,
                "replayed: 0" if changed is None else changed,
                extra={
                    "batch_id": batch_id,
                    "rows_in": load.rows_in,
                    "rows_valid": load.rows_valid,
                    "rows_quarantined": load.rows_quarantined,
                    "rows_curated": load.rows_curated,
                    "rows_upserted": changed,
                    "silver_action": action,
                    "phase_seconds": phase.seconds,
                    "batch_seconds": round((finished - started).total_seconds(), 3),
                    "max_lag_seconds": round(freshness, 3),
                },
            )  # fmt: skip
        finally:
            for df in cached:
                df.unpersist()


def compact_tables(spark: SparkSession, settings: Settings) -> None:
    """Compact the small files the stream's frequent commits leave in bronze and silver."""
    for name in (bronze.TABLE, silver.TABLE):
        path = settings.table_path(name)
        if DeltaTable.isDeltaTable(spark, path):
            DeltaTable.forPath(spark, path).optimize().executeCompaction()


def start_stream(spark: SparkSession, settings: Settings, once: bool = False) -> StreamingQuery:
    """Return the started streaming query of the cases topic."""
    for key, value in STREAM_SQL_CONF.items():
        spark.conf.set(key, value)
    writer = BatchWriter(
        spark,
        settings,
        decode.SchemaRegistry(settings.schema_registry_url),
        decode.reader_schema(settings.schemas_dir),
    )
    return (
        kafka_messages(spark, settings)
        .writeStream.queryName(writer.query_name)
        .option("checkpointLocation", checkpoint_location(settings, writer.query_name))
        .foreachBatch(writer)
        .trigger(**trigger_options(settings.stream_trigger, once))
        .start()
    )


def run_stream(spark: SparkSession, settings: Settings, once: bool = False) -> dict | None:
    """Run the job (to the end of the topic when once) and return the last batch's progress."""
    query = start_stream(spark, settings, once)
    try:
        query.awaitTermination()
    finally:
        if query.isActive:
            query.stop()
    return query.lastProgress


def run_job(settings: Settings, once: bool = False) -> int:
    """Build the SparkSession, run the streaming job and return an exit code."""
    configure_logging(settings)
    spark = build_spark(settings, app_name="sf311-stream")
    try:
        progress = run_stream(spark, settings, once)
    finally:
        spark.stop()
    log.info("stream finished; last progress: %s", progress)
    return 0
