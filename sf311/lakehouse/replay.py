"""`sf311 replay`: every sink derived from bronze (silver, the quarantine, Postgres `cases`)
rebuilt from bronze's raw bytes, decoded and validated anew; running it twice changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sf311.contract.registry import SchemaRegistry
from sf311.contract.schema import reader_schema
from sf311.lakehouse import bronze, decode, silver
from sf311.lakehouse.batch import Rebuild
from sf311.lakehouse.sinks import Sink, lake_sinks, utc_now
from sf311.lakehouse.tables import use_write_conf
from sf311.logs import configure_logging
from sf311.settings import Settings
from sf311.spark import build_spark

log = logging.getLogger(__name__)

MESSAGE_KEY = ["topic", "partition", "offset"]


@dataclass(frozen=True)
class ReplayResult:
    """Counts of one replay: bronze in, silver and quarantine out, Postgres and gold changes."""

    bronze_rows: int
    messages: int
    silver_rows: int
    quarantined: int
    postgres_changed: int
    postgres_deleted: int
    postgres_rows: int
    # Rows of Postgres schema gold changed and deleted by the rebuild of the gold tables.
    gold_changed: int = 0
    gold_deleted: int = 0

    def summary(self) -> str:
        """Return the counts as one line for a terminal."""
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


def revalidate(
    bronze_rows: DataFrame,
    writer_schemas: dict[int, str],
    reader_schema: str,
    as_of: datetime,
) -> DataFrame:
    """Return bronze rows, one per Kafka message, decoded again from their bytes and validated."""
    messages = bronze_rows.dropDuplicates(MESSAGE_KEY).drop("schema_id", "case", "decode_error")
    decoded = decode.decode(decode.frame(messages), writer_schemas, reader_schema).drop("payload")
    return silver.validate(decoded.select(*bronze.COLUMNS), as_of=as_of)


def replay(
    spark: SparkSession,
    settings: Settings,
    registry: SchemaRegistry,
    clock: Callable[[], datetime] = utc_now,
    extra_sinks: Sequence[type[Sink]] = (),
) -> ReplayResult:
    """Rebuild every sink derived from bronze (extra_sinks after SINKS), each atomically;
    return the counts.

    Stop the streaming job first (a batch committed meanwhile could be overwritten), then run
    a bounded run before streaming again: replay sets warehouse_offsets to where bronze ends,
    so that run loads again what the warehouse query had loaded beyond bronze."""
    use_write_conf(spark)
    raw = spark.read.format("delta").load(settings.table_path(bronze.TABLE))
    ids = [r.schema_id for r in raw.select("schema_id").distinct().collect() if r.schema_id]
    reader = reader_schema(settings.schemas_dir)
    validated = revalidate(raw, registry.writer_schemas(ids), reader, as_of=clock())
    # Deserialized, as the stream's cache: no serializer pass on each write and read.
    validated = validated.persist(StorageLevel.MEMORY_AND_DISK_DESER)
    curated = silver.with_deletions(silver.curated_rows(validated), silver.deletions(validated))
    curated = curated.persist(StorageLevel.MEMORY_AND_DISK_DESER)
    try:
        counts = validated.agg(F.count(F.lit(1)), F.count(F.when(silver.rejected(), 1))).first()
        messages, quarantined = counts[0], counts[1]
        log.info("replay: %d messages in bronze, %d rejected", messages, quarantined)
        ends = validated.groupBy("topic", "partition").agg((F.max("offset") + 1).alias("end"))
        rebuild = Rebuild(
            validated,
            curated,
            cases=curated.count(),
            ends=[(r.topic, r.partition, r.end) for r in ends.collect()],
        )
        written: dict[str, int] = {}
        extra = [sink(spark, settings, clock) for sink in extra_sinks]
        for sink in [*lake_sinks(spark, settings, clock), *extra]:
            written.update(sink.replace(rebuild))
    finally:
        curated.unpersist()
        validated.unpersist()
    result = ReplayResult(
        bronze_rows=raw.count(),
        messages=messages,
        silver_rows=rebuild.cases,
        quarantined=quarantined,
        **written,
    )
    log.info("replay finished: %s", result.summary(), extra=asdict(result))
    return result


def run_replay(settings: Settings, extra_sinks: Sequence[type[Sink]] = ()) -> ReplayResult:
    """Build the SparkSession, replay bronze into every derived sink, and return the counts."""
    configure_logging(settings)
    spark = build_spark(settings, app_name="sf311-replay")
    try:
        registry = SchemaRegistry(settings.schema_registry_url)
        return replay(spark, settings, registry, extra_sinks=extra_sinks)
    finally:
        spark.stop()
