"""The streaming job: two queries over the cases topic, each with its own checkpoint.

- `sf311_warehouse`: Kafka -> curated rows collected to the driver -> Postgres `cases`. One Spark
  job per batch, so batches stay small and the warehouse lags the topic by seconds.
- `sf311_lake`: Kafka -> bronze.cases_raw, silver.cases_quarantine and silver.cases (MERGE).

Both decode and validate alike, and every sink is idempotent per batch (the Postgres ledger,
Delta txnAppId/txnVersion, newer-wins guards), so a crash anywhere replays safely.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from sf311.lakehouse import bronze, decode, silver
from sf311.lakehouse.checkpoints import LAKE_QUERY, WAREHOUSE_QUERY, checkpoint_location
from sf311.logs import configure_logging
from sf311.settings import Settings
from sf311.spark import build_spark
from sf311.warehouse.cases import (
    CASE_COLUMNS,
    BatchLoad,
    LakeBatch,
    csv_chunks,
    load_batch_retrying,
    record_lake_batch,
    record_phases,
)

log = logging.getLogger(__name__)

AVAILABLE_NOW = "availablenow"


def trigger_options(trigger: str, once: bool = False) -> dict[str, object]:
    """Return DataStreamWriter.trigger keyword arguments for a trigger setting."""
    if once or trigger.replace("_", "").replace(" ", "").lower() == AVAILABLE_NOW:
        return {"availableNow": True}
    return {"processingTime": trigger}


# A large batch is split into Spark tasks of at most this many messages, so a task's decoded
# rows fit in memory (one task per Kafka partition ran out of a 2 GB heap at 1M-row batches).
MAX_RECORDS_PER_TASK = 100_000


def kafka_messages(spark: SparkSession, settings: Settings, max_offsets: int) -> DataFrame:
    """Return the streaming DataFrame of the cases topic, at most max_offsets per batch."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", settings.stream_starting_offsets)
        .option("maxOffsetsPerTrigger", max_offsets)
        .option("maxRecordsPerPartition", MAX_RECORDS_PER_TASK)
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


# silver's MERGE asks Spark to broadcast the batch's rows; the steps of a MERGE that do not join
# them, or cannot build that side, log a warning about the hint: two lines a batch, harmless.
HINT_LOGGER = "org.apache.spark.sql.catalyst.analysis.HintErrorLogger"


def quiet_hint_warnings(spark: SparkSession) -> None:
    """Keep only errors of Spark's hint logger in this JVM's log."""
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        HINT_LOGGER, jvm.org.apache.logging.log4j.Level.ERROR
    )


def unknown_schema_id() -> Column:
    """Return the schema id of a message whose id the decode did not know, else null (a
    decode error is also the row's validation reason)."""
    return F.when(F.col("reason") == F.lit(decode.UNKNOWN_SCHEMA_ID), F.col("schema_id"))


def job_tag(query_id: str, batch_id: int, phase: str) -> str:
    """Return the Spark job tag of one phase of one micro-batch of a query (its id is unique
    per checkpoint, so batch ids never collide across queries or runs)."""
    return f"{query_id}-batch-{batch_id}-{phase}"


@dataclass
class PhaseClock:
    """Seconds spent in each phase of one micro-batch; each phase tags the Spark jobs it runs."""

    spark: SparkSession
    query_id: str
    batch_id: int
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the block as `phase` and tag its Spark jobs with job_tag(query_id, batch, phase)."""
        sc = self.spark.sparkContext
        tag = job_tag(self.query_id, self.batch_id, phase)
        sc.addJobTag(tag)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.monotonic() - t0, 3)
            sc.removeJobTag(tag)


@dataclass
class BatchDecoder:
    """Kafka rows of one batch -> validated bronze-shaped rows, with writer schemas fetched
    from the registry as new ids appear."""

    registry: decode.SchemaRegistry
    reader_schema: str
    rules: silver.Rules = silver.Rules()

    def validated(
        self, messages: DataFrame, batch_id: int, started: datetime, writers: dict[int, str]
    ) -> DataFrame:
        """Return the batch decoded with the given writer schemas, and validated."""
        decoded = decode.decode(decode.frame(messages), writers, self.reader_schema)
        raw = bronze.bronze_rows(decoded, batch_id, started)
        return silver.validate(raw, as_of=started, rules=self.rules)

    def collect(
        self,
        messages: DataFrame,
        batch_id: int,
        started: datetime,
        action: Callable[[DataFrame], tuple[Any, list[int]]],
    ) -> Any:
        """Return action(validated) decoded with the writer schema of every id the registry
        knows among the batch's ids; action returns its result and the unknown ids it met.

        It decodes with the writer schemas met so far, sparing a Spark job that would list the
        batch's schema ids; only a batch holding an id new to this job is decoded again."""
        while True:
            # Both queries share the cache: decide on the snapshot this decode used.
            writers = self.registry.known()
            result, unknown = action(self.validated(messages, batch_id, started, writers))
            if not self.registry.writer_schemas(i for i in unknown if i not in writers):
                return result


def _utc(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


@dataclass(frozen=True)
class WarehouseRows:
    """One batch collected for Postgres: its figures and the newest version of each valid case."""

    rows_in: int
    rows_valid: int
    newest: pa.Table
    ts_min: datetime | None
    ts_max: datetime | None
    ts_p05: datetime | None
    ts_p50: datetime | None


def warehouse_rows(table: pa.Table) -> WarehouseRows:
    """Return the figures and the newest valid version of each case of a batch collected to
    Arrow (columns reason, kafka_timestamp, service_request_id, updated_datetime, kafka_offset
    and the rest of the warehouse's columns)."""
    valid = table.filter(pc.is_null(table["reason"]))
    # Newest version of each id; an id's versions share a Kafka partition, so the offset
    # breaks ties in arrival order (as silver.curated_rows does).
    valid = valid.sort_by(
        [("service_request_id", "ascending"), ("updated_datetime", "descending"),
         ("kafka_offset", "descending")]
    )  # fmt: skip
    ids = valid["service_request_id"].to_numpy()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    newest = valid.filter(pa.array(first))
    if table.num_rows == 0:
        return WarehouseRows(0, 0, newest, None, None, None, None)
    ts = pc.cast(table["kafka_timestamp"], pa.int64())
    bounds = pc.min_max(ts)
    p05, p50 = pc.quantile(ts, q=[0.05, 0.5], interpolation="lower").to_pylist()
    return WarehouseRows(
        rows_in=table.num_rows,
        rows_valid=valid.num_rows,
        newest=newest,
        ts_min=_utc(bounds["min"].as_py()),
        ts_max=_utc(bounds["max"].as_py()),
        ts_p05=_utc(p05),
        ts_p50=_utc(p50),
    )


def collect_warehouse(validated: DataFrame) -> tuple[WarehouseRows, list[int]]:
    """Return a batch's WarehouseRows and its unknown schema ids, in one Spark job."""
    flat = silver.flatten(validated)
    table = flat.select(
        "reason", unknown_schema_id().alias("unknown_id"), "kafka_offset", *CASE_COLUMNS
    ).toArrow()
    unknown = pc.unique(table["unknown_id"].drop_null()).to_pylist()
    return warehouse_rows(table), unknown


def lake_figures(validated: DataFrame) -> Row:
    """Return rows_in, rows_valid, ts_min, ts_max, pct (Kafka time p05, p50 in ms), the id range
    of the valid rows and unknown_ids (schema ids the decode did not know)."""
    valid_id = F.when(F.col("reason").isNull(), F.col("case.service_request_id"))
    return validated.agg(
        F.count(F.lit(1)).alias("rows_in"),
        F.count(F.when(F.col("reason").isNull(), 1)).alias("rows_valid"),
        F.min("kafka_timestamp").alias("ts_min"),
        F.max("kafka_timestamp").alias("ts_max"),
        F.percentile_approx(F.unix_millis("kafka_timestamp"), [0.05, 0.5]).alias("pct"),
        F.min(valid_id).alias("id_min"),
        F.max(valid_id).alias("id_max"),
        F.collect_set(unknown_schema_id()).alias("unknown_ids"),
    ).first()


class _Writer:
    """What both foreachBatch functions share: the session, settings, decoder and query id."""

    query_name: str

    def __init__(self, spark: SparkSession, settings: Settings, decoder: BatchDecoder,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:  # fmt: skip
        self.spark = spark
        self.settings = settings
        self.decoder = decoder
        self.clock = clock
        self._query_id: str | None = None

    def begin(self, batch_id: int) -> PhaseClock:
        """Put this thread's Spark jobs in the query's scheduler pool; return the batch's clock."""
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", self.query_name)
        return PhaseClock(self.spark, self.query_id(), batch_id)

    def query_id(self) -> str:
        """Return the id of the running query, stable across restarts from one checkpoint."""
        if self._query_id is None:
            running = [q for q in self.spark.streams.active if q.name == self.query_name]
            if len(running) != 1:
                raise RuntimeError(f"expected one active query {self.query_name!r}")
            self._query_id = running[0].id
        return self._query_id


class WarehouseWriter(_Writer):
    """foreachBatch of sf311_warehouse: one batch -> Postgres `cases`, with its ledger row."""

    query_name = WAREHOUSE_QUERY

    def __call__(self, messages: DataFrame, batch_id: int) -> None:
        started = self.clock()
        phase = self.begin(batch_id)
        with phase("decode"):
            rows = self.decoder.collect(messages, batch_id, started, collect_warehouse)
        if rows.rows_in == 0:
            return
        load = BatchLoad(
            query_id=self.query_id(),
            batch_id=batch_id,
            csv_chunks=csv_chunks(rows.newest),
            rows_in=rows.rows_in,
            rows_valid=rows.rows_valid,
            rows_quarantined=rows.rows_in - rows.rows_valid,
            rows_curated=rows.newest.num_rows,
            kafka_ts_min=rows.ts_min,
            kafka_ts_max=rows.ts_max,
            kafka_ts_p05=rows.ts_p05,
            kafka_ts_p50=rows.ts_p50,
            started_at=started,
        )
        dsn = self.settings.postgres_dsn.get_secret_value()
        with phase("postgres"):
            changed = load_batch_retrying(dsn, load, self.settings.stream_pg_retry_seconds)
        finished = self.clock()
        record_phases(dsn, load.query_id, batch_id, phase.seconds, finished)
        log.info(
            "warehouse batch %d: %d in, %d valid, %d curated, %s rows upserted",
            batch_id, load.rows_in, load.rows_valid, load.rows_curated,
            "replayed: 0" if changed is None else changed,
            extra={
                "query": self.query_name,
                "batch_id": batch_id,
                "rows_in": load.rows_in,
                "rows_valid": load.rows_valid,
                "rows_curated": load.rows_curated,
                "rows_upserted": changed,
                "phase_seconds": phase.seconds,
                "max_lag_seconds": round((finished - rows.ts_min).total_seconds(), 3),
            },
        )  # fmt: skip


class LakeWriter(_Writer):
    """foreachBatch of sf311_lake: one batch -> bronze, the quarantine and silver (MERGE)."""

    query_name = LAKE_QUERY

    def __call__(self, messages: DataFrame, batch_id: int) -> None:
        started = self.clock()
        phase = self.begin(batch_id)
        # A new checkpoint gets a new query id, hence new Delta txnAppIds: a reset replays.
        app_id = f"sf311.{self.query_name}.{self.query_id()}"
        s = self.settings
        cached: list[DataFrame] = []

        def persisted(validated: DataFrame) -> tuple[tuple[DataFrame, Row], list[int]]:
            # Deserialized: the column batches stay as built. The serialized level (PySpark's
            # MEMORY_AND_DISK) copies each through the serializer on every write and read,
            # about a tenth of the lake query's JVM CPU per batch.
            validated = validated.persist(StorageLevel.MEMORY_AND_DISK_DESER)
            cached.append(validated)
            figures = lake_figures(validated)
            return (validated, figures), figures.unknown_ids

        try:
            with phase("decode"):
                validated, figures = self.decoder.collect(messages, batch_id, started, persisted)
            if figures.rows_in == 0:
                return
            with phase("bronze"):
                bronze.write_bronze(
                    validated.select(*bronze.COLUMNS), s.table_path(bronze.TABLE), app_id, batch_id
                )
            if figures.rows_valid < figures.rows_in:
                with phase("quarantine"):
                    silver.append_quarantine(
                        silver.quarantine_rows(validated),
                        s.table_path(silver.QUARANTINE_TABLE),
                        app_id,
                        batch_id,
                    )
            with phase("silver"):
                # Not persisted here: MERGE materializes its source itself, once.
                action = silver.merge_silver(
                    self.spark,
                    silver.curated_rows(validated),
                    s.table_path(silver.TABLE),
                    app_id,
                    batch_id,
                    (figures.id_min, figures.id_max),
                )
            if s.stream_compact_every and batch_id % s.stream_compact_every == 0 and batch_id:
                with phase("compact"):
                    compact_tables(self.spark, s)
        finally:
            for df in cached:
                df.unpersist()
        p05, p50 = (datetime.fromtimestamp(ms / 1000, UTC) for ms in figures.pct)
        batch = LakeBatch(
            query_id=self.query_id(),
            batch_id=batch_id,
            rows_in=figures.rows_in,
            rows_valid=figures.rows_valid,
            # Spark hands back naive local times; make them instants.
            kafka_ts_min=figures.ts_min.astimezone(UTC),
            kafka_ts_max=figures.ts_max.astimezone(UTC),
            kafka_ts_p05=p05,
            kafka_ts_p50=p50,
            silver_action=action,
            phase_seconds=phase.seconds,
            started_at=started,
            finished_at=self.clock(),
        )
        record_lake_batch(s.postgres_dsn.get_secret_value(), batch)
        max_lag = (batch.finished_at - batch.kafka_ts_min).total_seconds()
        log.info(
            "lake batch %d: %d in, %d valid, silver %s",
            batch_id, batch.rows_in, batch.rows_valid, action,
            extra={
                "query": self.query_name,
                "batch_id": batch_id,
                "rows_in": batch.rows_in,
                "rows_valid": batch.rows_valid,
                "silver_action": action,
                "phase_seconds": phase.seconds,
                "max_lag_seconds": round(max_lag, 3),
            },
        )  # fmt: skip


def compact_tables(spark: SparkSession, settings: Settings) -> None:
    """Compact the small files the stream's frequent commits leave in bronze and silver."""
    for name in (bronze.TABLE, silver.TABLE):
        path = settings.table_path(name)
        if DeltaTable.isDeltaTable(spark, path):
            DeltaTable.forPath(spark, path).optimize().executeCompaction()


@dataclass
class Streams:
    """The job's running queries, handled as one."""

    queries: list[StreamingQuery]

    @property
    def active(self) -> bool:
        """Return True while every query runs."""
        return all(q.isActive for q in self.queries)

    def exception(self) -> Exception | None:
        """Return the first query's failure, or None."""
        return next((e for q in self.queries if (e := q.exception()) is not None), None)

    def stop(self) -> None:
        """Stop every query that still runs."""
        for q in self.queries:
            if q.isActive:
                q.stop()

    def wait(self, once: bool) -> None:
        """Return when every query has finished (once) or when any has stopped; a failure
        raises."""
        if once:
            for q in self.queries:
                q.awaitTermination()
        else:
            # Polls these queries rather than the session's awaitAnyTermination, which also
            # returns at once for any query that ended earlier in the same session.
            while self.active:
                self.queries[0].awaitTermination(1)
        error = self.exception()
        if error is not None:
            raise error


def start_stream(spark: SparkSession, settings: Settings, once: bool = False) -> Streams:
    """Return the started warehouse and lake queries of the cases topic."""
    for key, value in STREAM_SQL_CONF.items():
        spark.conf.set(key, value)
    quiet_hint_warnings(spark)
    decoder = BatchDecoder(
        decode.SchemaRegistry(settings.schema_registry_url),
        decode.reader_schema(settings.schemas_dir),
    )
    warehouse = trigger_options(settings.stream_trigger, once)
    once = once or "availableNow" in warehouse
    writers = [
        (
            WarehouseWriter(spark, settings, decoder),
            warehouse,
            settings.stream_max_offsets_per_trigger,
        ),
        (
            LakeWriter(spark, settings, decoder),
            trigger_options(settings.stream_lake_trigger, once),
            settings.stream_lake_max_offsets_per_trigger,
        ),
    ]
    return Streams(
        [
            kafka_messages(spark, settings, max_offsets)
            .writeStream.queryName(writer.query_name)
            .option("checkpointLocation", checkpoint_location(settings, writer.query_name))
            .foreachBatch(writer)
            .trigger(**trigger)
            .start()
            for writer, trigger, max_offsets in writers
        ]
    )


def run_stream(spark: SparkSession, settings: Settings, once: bool = False) -> dict[str, dict]:
    """Run the job (to the end of the topic when once); return each query's last progress."""
    streams = start_stream(spark, settings, once)
    try:
        streams.wait(once)
    finally:
        streams.stop()
    return {q.name: q.lastProgress for q in streams.queries}


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
