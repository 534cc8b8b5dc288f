"""The streaming job: two queries over the cases topic, each with its own checkpoint.

- `sf311_warehouse`: Kafka -> curated rows collected to the driver -> Postgres `cases`. One Spark
  job per batch, so batches stay small and the warehouse lags the topic by seconds.
- `sf311_lake`: Kafka -> bronze.cases_raw, silver.cases_quarantine and silver.cases (MERGE).

Both decode and validate alike, and every sink is idempotent per batch (the Postgres ledger,
Delta txnAppId/txnVersion, newer-wins guards), so a crash anywhere replays safely.

A bounded run (`--once`) runs the lake query alone, and it loads Postgres too from the rows it
decoded, so a backfill reads and decodes each message once. Postgres' warehouse_offsets
records, per partition, how far the warehouse is loaded; the warehouse query skips what lies
below, so a streaming run after a bounded one does not decode and upsert those messages again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from sf311.lakehouse import bronze, decode, silver
from sf311.lakehouse.checkpoints import (
    LAKE_QUERY,
    WAREHOUSE_QUERY,
    checkpoint_location,
    parse_offsets,
)
from sf311.logs import configure_logging
from sf311.settings import Settings
from sf311.spark import build_spark
from sf311.warehouse.cases import (
    CASE_COLUMNS,
    BatchLoad,
    LakeBatch,
    OffsetRange,
    csv_chunks,
    load_batch,
    loaded_offsets,
    record_lake_batch,
    record_phases,
    retrying,
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
class BatchFigures:
    """What a batch held: its messages, the valid ones, the span and quantiles of their Kafka
    times and the id range of its valid cases."""

    rows_in: int
    rows_valid: int
    ts_min: datetime | None = None
    ts_max: datetime | None = None
    ts_p05: datetime | None = None
    ts_p50: datetime | None = None
    id_min: int | None = None
    id_max: int | None = None


@dataclass(frozen=True)
class WarehouseRows:
    """One batch collected for Postgres: its figures, the newest version of each valid case
    and the offsets of its messages."""

    figures: BatchFigures
    newest: pa.Table
    offsets: list[OffsetRange]


def batch_figures(table: pa.Table) -> BatchFigures:
    """Return the figures of a batch collected to Arrow (columns reason, kafka_timestamp and
    service_request_id)."""
    if table.num_rows == 0:
        return BatchFigures(0, 0)
    valid = pc.is_null(table["reason"])
    ts = pc.cast(table["kafka_timestamp"], pa.int64())
    bounds = pc.min_max(ts)
    p05, p50 = pc.quantile(ts, q=[0.05, 0.5], interpolation="lower").to_pylist()
    ids = pc.min_max(table["service_request_id"].filter(valid))
    return BatchFigures(
        rows_in=table.num_rows,
        rows_valid=pc.sum(valid).as_py() or 0,
        ts_min=_utc(bounds["min"].as_py()),
        ts_max=_utc(bounds["max"].as_py()),
        ts_p05=_utc(p05),
        ts_p50=_utc(p50),
        id_min=ids["min"].as_py(),
        id_max=ids["max"].as_py(),
    )


def offset_ranges(table: pa.Table) -> list[OffsetRange]:
    """Return the first and last offset of the batch's messages in each Kafka partition."""
    spans = table.group_by("kafka_partition").aggregate(
        [("kafka_offset", "min"), ("kafka_offset", "max")]
    )
    return [
        OffsetRange(p, first, last)
        for p, first, last in zip(
            spans["kafka_partition"].to_pylist(),
            spans["kafka_offset_min"].to_pylist(),
            spans["kafka_offset_max"].to_pylist(),
            strict=True,
        )
    ]


def warehouse_rows(table: pa.Table) -> WarehouseRows:
    """Return the figures, the newest valid version of each case and the offsets of a batch
    collected to Arrow (columns reason, kafka_timestamp, kafka_partition, kafka_offset and the
    warehouse's columns)."""
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
    return WarehouseRows(batch_figures(table), newest, offset_ranges(table))


def not_loaded(
    loaded: Mapping[int, int], partition: str = "partition", offset: str = "offset"
) -> Column:
    """Return the condition that keeps the Kafka messages at or above the next_offset of their
    partition in warehouse_offsets, those the warehouse has still to load."""
    keep = F.lit(True)
    for p, next_offset in sorted(loaded.items()):
        keep &= (F.col(partition) != F.lit(p)) | (F.col(offset) >= F.lit(next_offset))
    return keep


def collect_warehouse(
    validated: DataFrame, loaded: Mapping[int, int] | None = None
) -> tuple[pa.Table, list[int]]:
    """Return a batch collected to Arrow for the warehouse, in one Spark job, and its unknown
    schema ids; column `to_load` tells the messages not loaded yet (not_loaded)."""
    flat = silver.flatten(validated)
    table = flat.select(
        "reason", unknown_schema_id().alias("unknown_id"), "kafka_partition", "kafka_offset",
        not_loaded(loaded or {}, "kafka_partition", "kafka_offset").alias("to_load"),
        *CASE_COLUMNS,
    ).toArrow()  # fmt: skip
    unknown = pc.unique(table["unknown_id"].drop_null()).to_pylist()
    return table, unknown


def lake_figures(validated: DataFrame) -> tuple[BatchFigures, list[int]]:
    """Return a batch's figures, computed in Spark, and the schema ids the decode did not
    know."""
    valid_id = F.when(F.col("reason").isNull(), F.col("case.service_request_id"))
    row = validated.agg(
        F.count(F.lit(1)).alias("rows_in"),
        F.count(F.when(F.col("reason").isNull(), 1)).alias("rows_valid"),
        F.min(F.unix_micros("kafka_timestamp")).alias("ts_min"),
        F.max(F.unix_micros("kafka_timestamp")).alias("ts_max"),
        F.percentile_approx(F.unix_micros("kafka_timestamp"), [0.05, 0.5]).alias("pct"),
        F.min(valid_id).alias("id_min"),
        F.max(valid_id).alias("id_max"),
        F.collect_set(unknown_schema_id()).alias("unknown_ids"),
    ).first()
    if row.rows_in == 0:
        return BatchFigures(0, 0), row.unknown_ids
    p05, p50 = row.pct
    figures = BatchFigures(
        rows_in=row.rows_in,
        rows_valid=row.rows_valid,
        ts_min=_utc(row.ts_min),
        ts_max=_utc(row.ts_max),
        ts_p05=_utc(p05),
        ts_p50=_utc(p50),
        id_min=row.id_min,
        id_max=row.id_max,
    )
    return figures, row.unknown_ids


def read_loaded_offsets(settings: Settings) -> dict[int, int]:
    """Return the cases topic's warehouse_offsets, waiting out a Postgres outage as a load does."""
    return retrying(
        settings.postgres_dsn.get_secret_value(),
        lambda conn: loaded_offsets(conn, settings.kafka_topic),
        settings.stream_pg_retry_seconds,
    )


# What a lake batch's decode hands on: the cached rows, their figures and, in a bounded run,
# the rows to load into Postgres.
_Decoded = tuple[DataFrame, BatchFigures, WarehouseRows | None]


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

    def load_warehouse(
        self, rows: WarehouseRows, batch_id: int, started: datetime, seconds: dict[str, float]
    ) -> None:
        """Upsert a batch's rows into Postgres with its ledger row; seconds (the batch's phases
        so far) gets `postgres` and goes to the ledger."""
        f = rows.figures
        load = BatchLoad(
            query_id=self.query_id(),
            batch_id=batch_id,
            csv_chunks=csv_chunks(rows.newest),
            rows_in=f.rows_in,
            rows_valid=f.rows_valid,
            rows_quarantined=f.rows_in - f.rows_valid,
            rows_curated=rows.newest.num_rows,
            kafka_ts_min=f.ts_min,
            kafka_ts_max=f.ts_max,
            kafka_ts_p05=f.ts_p05,
            kafka_ts_p50=f.ts_p50,
            started_at=started,
            topic=self.settings.kafka_topic,
            offsets=rows.offsets,
            own_checkpoint=self.query_name == WAREHOUSE_QUERY,
        )
        dsn = self.settings.postgres_dsn.get_secret_value()
        t0 = time.monotonic()
        # The ledger makes a retry after an unknown commit outcome safe.
        changed = retrying(
            dsn, lambda conn: load_batch(conn, load), self.settings.stream_pg_retry_seconds
        )
        seconds["postgres"] = round(time.monotonic() - t0, 3)
        finished = self.clock()
        record_phases(dsn, load.query_id, batch_id, seconds, finished)
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
                "phase_seconds": seconds,
                "max_lag_seconds": round((finished - f.ts_min).total_seconds(), 3),
            },
        )  # fmt: skip


class WarehouseWriter(_Writer):
    """foreachBatch of sf311_warehouse: one batch -> Postgres `cases`, with its ledger row.

    It skips the messages warehouse_offsets records as loaded (by a bounded run's lake query),
    before decoding them."""

    query_name = WAREHOUSE_QUERY

    def __call__(self, messages: DataFrame, batch_id: int) -> None:
        started = self.clock()
        phase = self.begin(batch_id)
        with phase("decode"):
            loaded = read_loaded_offsets(self.settings)
            if loaded:
                messages = messages.where(not_loaded(loaded))

            def collect(validated: DataFrame) -> tuple[WarehouseRows, list[int]]:
                table, unknown = collect_warehouse(validated)
                return warehouse_rows(table), unknown

            rows = self.decoder.collect(messages, batch_id, started, collect)
        if rows.figures.rows_in:
            self.load_warehouse(rows, batch_id, started, phase.seconds)


class LakeWriter(_Writer):
    """foreachBatch of sf311_lake: one batch -> bronze, the quarantine and silver (MERGE).

    With loads_warehouse (a bounded run, which runs this query alone) it also loads Postgres
    from the rows it decoded, those warehouse_offsets does not record as loaded, in a thread
    beside the Delta writes; the warehouse query then skips them."""

    query_name = LAKE_QUERY

    def __init__(self, spark: SparkSession, settings: Settings, decoder: BatchDecoder,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 loads_warehouse: bool = False) -> None:  # fmt: skip
        super().__init__(spark, settings, decoder, clock)
        self.loader = ThreadPoolExecutor(1, "sf311-warehouse-load") if loads_warehouse else None

    def __call__(self, messages: DataFrame, batch_id: int) -> None:
        started = self.clock()
        phase = self.begin(batch_id)
        # A new checkpoint gets a new query id, hence new Delta txnAppIds: a reset replays.
        app_id = f"sf311.{self.query_name}.{self.query_id()}"
        s = self.settings
        cached: list[DataFrame] = []
        loaded = read_loaded_offsets(s) if self.loader else None

        def persisted(validated: DataFrame) -> tuple[_Decoded, list[int]]:
            # Deserialized: the column batches stay as built. The serialized level (PySpark's
            # MEMORY_AND_DISK) copies each through the serializer on every write and read,
            # about a tenth of the lake query's JVM CPU per batch.
            validated = validated.persist(StorageLevel.MEMORY_AND_DISK_DESER)
            cached.append(validated)
            if loaded is None:
                figures, unknown = lake_figures(validated)
                return (validated, figures, None), unknown
            table, unknown = collect_warehouse(validated, loaded)
            rows = warehouse_rows(table.filter(table["to_load"]))
            return (validated, batch_figures(table), rows), unknown

        pending: Future | None = None
        try:
            with phase("decode"):
                validated, figures, rows = self.decoder.collect(
                    messages, batch_id, started, persisted
                )
            if figures.rows_in == 0:
                return
            if self.loader and rows.figures.rows_in:
                seconds = {"decode": phase.seconds["decode"]}
                pending = self.loader.submit(self.load_warehouse, rows, batch_id, started, seconds)
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
            if pending is not None:
                wait([pending])
        if pending is not None:
            pending.result()  # the warehouse load's failure fails the batch, which is replayed
        batch = LakeBatch(
            query_id=self.query_id(),
            batch_id=batch_id,
            rows_in=figures.rows_in,
            rows_valid=figures.rows_valid,
            kafka_ts_min=figures.ts_min,
            kafka_ts_max=figures.ts_max,
            kafka_ts_p05=figures.ts_p05,
            kafka_ts_p50=figures.ts_p50,
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


def committed_offsets(spark: SparkSession, location: str, topic: str) -> dict[int, int]:
    """Return where the last batch a query committed read up to, per partition, from its
    checkpoint on whatever file system Spark reads it from; empty before its first commit."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path
    root = path(location)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    commits = path(root, "commits")
    if not fs.exists(commits):
        return {}
    done = [int(n) for st in fs.listStatus(commits) if (n := st.getPath().getName()).isdigit()]
    if not done:
        return {}
    stream = fs.open(path(root, f"offsets/{max(done)}"))
    try:
        text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    return parse_offsets(text, topic)


def warehouse_behind_lake(spark: SparkSession, settings: Settings) -> bool:
    """Return True when the lake query has committed messages that the warehouse has not
    loaded (the lake ran ahead while streaming): a bounded run loads the warehouse only from
    what its lake query reads, so it must run the warehouse query first."""
    topic = settings.kafka_topic
    lake = committed_offsets(spark, checkpoint_location(settings, LAKE_QUERY), topic)
    if not lake:
        return False
    own = committed_offsets(spark, checkpoint_location(settings, WAREHOUSE_QUERY), topic)
    loaded = read_loaded_offsets(settings)
    return any(end > max(own.get(p, 0), loaded.get(p, 0)) for p, end in lake.items())


def start_stream(spark: SparkSession, settings: Settings, once: bool = False) -> Streams:
    """Return the started queries of the cases topic: the warehouse and lake queries, or for a
    bounded run (once) the lake query alone, loading the warehouse too from what it decodes."""
    for key, value in STREAM_SQL_CONF.items():
        spark.conf.set(key, value)
    quiet_hint_warnings(spark)
    decoder = BatchDecoder(
        decode.SchemaRegistry(settings.schema_registry_url),
        decode.reader_schema(settings.schemas_dir),
    )
    warehouse_trigger = trigger_options(settings.stream_trigger, once)
    once = once or "availableNow" in warehouse_trigger

    def start(writer: _Writer, trigger: dict[str, object], max_offsets: int) -> StreamingQuery:
        return (
            kafka_messages(spark, settings, max_offsets)
            .writeStream.queryName(writer.query_name)
            .option("checkpointLocation", checkpoint_location(settings, writer.query_name))
            .foreachBatch(writer)
            .trigger(**trigger)
            .start()
        )

    def warehouse() -> StreamingQuery:
        writer = WarehouseWriter(spark, settings, decoder)
        return start(writer, warehouse_trigger, settings.stream_max_offsets_per_trigger)

    def lake() -> StreamingQuery:
        writer = LakeWriter(spark, settings, decoder, loads_warehouse=once)
        trigger = trigger_options(settings.stream_lake_trigger, once)
        return start(writer, trigger, settings.stream_lake_max_offsets_per_trigger)

    if not once:
        return Streams([warehouse(), lake()])
    if warehouse_behind_lake(spark, settings):
        log.info("the warehouse is behind the lake: the warehouse query runs to the end first")
        Streams([warehouse()]).wait(once=True)
    return Streams([lake()])


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
