"""The streaming job: Kafka -> foreachBatch(bronze, silver, quarantine, warehouse)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from sf311.lakehouse import bronze, decode, silver
from sf311.settings import Settings
from sf311.spark import build_spark
from sf311.warehouse.cases import CASE_COLUMNS, BatchLoad, load_batch_retrying

log = logging.getLogger(__name__)

QUERY_NAME = "sf311_cases"
AVAILABLE_NOW = "availablenow"
# Postgres CSV: a quote doubles inside a quoted value; an unquoted empty field is NULL.
CSV_OPTIONS = {"escape": '"', "nullValue": "", "emptyValue": '""'}


def trigger_options(trigger: str, once: bool = False) -> dict[str, object]:
    """Return DataStreamWriter.trigger keyword arguments for a trigger setting."""
    if once or trigger.replace("_", "").replace(" ", "").lower() == AVAILABLE_NOW:
        return {"availableNow": True}
    return {"processingTime": trigger}


def checkpoint_location(settings: Settings, query_name: str = QUERY_NAME) -> str:
    """Return the checkpoint folder of one streaming query."""
    return f"{settings.checkpoint_root.rstrip('/')}/{query_name}"


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


def warehouse_csv(curated: DataFrame) -> DataFrame:
    """Return one Postgres-ready CSV line per curated row, columns in CASE_COLUMNS order."""
    cols = []
    for field in curated.select(*CASE_COLUMNS).schema.fields:
        col = F.col(field.name)
        if field.dataType.simpleString() == "string":
            # Postgres text cannot hold NUL characters.
            col = F.regexp_replace(col, "\u0000", "")
        cols.append(col.alias(field.name))
    return curated.select(F.to_csv(F.struct(*cols), CSV_OPTIONS).alias("line"))


def csv_chunks(lines: DataFrame) -> list[str]:
    """Return the CSV lines of warehouse_csv collected to the driver as a few large strings."""
    table = lines.toArrow()
    return ["".join(f"{line}\n" for line in chunk.to_pylist()) for chunk in table["line"].chunks]


@dataclass
class BatchWriter:
    """The foreachBatch function: one micro-batch through bronze, silver and the warehouse."""

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

    def __call__(self, messages: DataFrame, batch_id: int) -> None:
        started = self.clock()
        t0 = time.monotonic()
        # A new checkpoint gets a new query id, hence new Delta txnAppIds: a reset replays.
        app_id = f"sf311.{self.query_name}.{self.query_id()}"
        s = self.settings
        framed = decode.frame(messages).persist(StorageLevel.MEMORY_AND_DISK)
        cached = [framed]
        try:
            writers = self.registry.writer_schemas(decode.schema_ids(framed))
            decoded = decode.decode(framed, writers, self.reader_schema)
            raw = bronze.bronze_rows(decoded, batch_id, started).persist(
                StorageLevel.MEMORY_AND_DISK
            )
            cached.append(raw)
            bronze.write_bronze(raw, s.table_path(bronze.TABLE), app_id, batch_id)
            t1 = time.monotonic()

            validated = silver.validate(raw, as_of=started, rules=self.rules)
            figures = validated.agg(
                F.count(F.lit(1)).alias("rows_in"),
                F.count(F.when(F.col("reason").isNull(), 1)).alias("rows_valid"),
                F.min("kafka_timestamp").alias("ts_min"),
                F.max("kafka_timestamp").alias("ts_max"),
                F.percentile_approx(F.unix_millis("kafka_timestamp"), [0.05, 0.5]).alias("pct"),
            ).first()
            rows_in, rows_valid = figures.rows_in, figures.rows_valid
            if rows_in == 0:
                return
            if rows_in > rows_valid:
                silver.append_quarantine(
                    silver.quarantine_rows(validated),
                    s.table_path(silver.QUARANTINE_TABLE),
                    app_id,
                    batch_id,
                )
            curated = silver.curated_rows(validated).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(curated)
            rows_curated, lo, hi = curated.agg(
                F.count(F.lit(1)), F.min("service_request_id"), F.max("service_request_id")
            ).first()
            action = silver.merge_silver(
                self.spark, curated, s.table_path(silver.TABLE), app_id, batch_id, (lo, hi)
            )
            t2 = time.monotonic()

            chunks = csv_chunks(warehouse_csv(curated))
            p05, p50 = (datetime.fromtimestamp(ms / 1000, UTC) for ms in figures.pct)
            load = BatchLoad(
                query_id=self.query_id(),
                batch_id=batch_id,
                csv_chunks=chunks,
                rows_in=rows_in,
                rows_valid=rows_valid,
                rows_quarantined=rows_in - rows_valid,
                rows_curated=rows_curated,
                # Spark hands back naive local times; make them instants.
                kafka_ts_min=figures.ts_min.astimezone(UTC),
                kafka_ts_max=figures.ts_max.astimezone(UTC),
                kafka_ts_p05=p05,
                kafka_ts_p50=p50,
                bronze_seconds=t1 - t0,
                silver_seconds=t2 - t1,
                started_at=started,
            )
            changed = load_batch_retrying(
                s.postgres_dsn.get_secret_value(), load, s.stream_pg_retry_seconds
            )
            log.info(
                "batch %d: %d in, %d valid, %d curated, silver %s, warehouse %s rows "
                "(bronze %.1fs, silver %.1fs, warehouse %.1fs)",
                batch_id, rows_in, rows_valid, rows_curated, action,
                "replayed: 0" if changed is None else changed,
                t1 - t0, t2 - t1, time.monotonic() - t2,
            )  # fmt: skip
        finally:
            for df in cached:
                df.unpersist()


def start_stream(spark: SparkSession, settings: Settings, once: bool = False) -> StreamingQuery:
    """Return the started streaming query of the cases topic."""
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # py4j logs every gateway call at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    spark = build_spark(settings, app_name="sf311-stream")
    try:
        progress = run_stream(spark, settings, once)
    finally:
        spark.stop()
    log.info("stream finished; last progress: %s", progress)
    return 0
