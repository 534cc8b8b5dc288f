"""`sf311 replay`: rebuild silver.cases, silver.cases_quarantine and Postgres `cases` from bronze.

Bronze keeps every Kafka message as received (raw bytes included), so after a crash or a fix in
decoding or validation everything downstream can be derived again: each message is decoded
anew from its bytes, validated, deduplicated (newest updated_datetime wins), and the results
replace silver, the quarantine and the warehouse table. Each target is replaced atomically and
only from bronze, so running it twice gives the same result and no message of bronze is lost.

Stop the streaming job first: a batch committed while replay runs could be overwritten by the
older snapshot of bronze that replay read. Then run a bounded run (`sf311 stream --once`)
before streaming again: the warehouse query may have loaded messages that bronze did not hold
yet, which replay takes back out of `cases`; replay sets warehouse_offsets to where bronze
ends, so the bounded run's lake query loads them again as it writes them to bronze.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sf311.lakehouse import bronze, decode, silver
from sf311.lakehouse.stream import STREAM_SQL_CONF
from sf311.logs import configure_logging
from sf311.settings import Settings
from sf311.spark import build_spark
from sf311.warehouse.cases import CASE_COLUMNS, csv_chunks, replace_cases

log = logging.getLogger(__name__)

MESSAGE_KEY = ["topic", "partition", "offset"]
# Cases collected to the driver at a time on their way to Postgres, so memory stays bounded.
SLICE_ROWS = 500_000


@dataclass(frozen=True)
class ReplayResult:
    """Counts of one replay: bronze in, silver and quarantine out, Postgres changes."""

    bronze_rows: int
    messages: int
    silver_rows: int
    quarantined: int
    postgres_changed: int
    postgres_deleted: int
    postgres_rows: int

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


def _csv_slices(curated: DataFrame, rows: int) -> Iterator[bytes]:
    """Yield the CSV chunks of the curated (persisted) rows, one slice of ids at a time."""
    slices = max(1, -(-rows // SLICE_ROWS))
    for n in range(slices):
        part = curated.where(F.pmod(F.col("service_request_id"), F.lit(slices)) == n)
        yield from csv_chunks(part.select(*CASE_COLUMNS).toArrow())


def replay(
    spark: SparkSession,
    settings: Settings,
    registry: decode.SchemaRegistry,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ReplayResult:
    """Rebuild silver.cases, its quarantine and Postgres `cases` from bronze; return the counts."""
    for key, value in STREAM_SQL_CONF.items():
        spark.conf.set(key, value)
    raw = spark.read.format("delta").load(settings.table_path(bronze.TABLE))
    ids = [r.schema_id for r in raw.select("schema_id").distinct().collect() if r.schema_id]
    reader = decode.reader_schema(settings.schemas_dir)
    validated = revalidate(raw, registry.writer_schemas(ids), reader, as_of=clock())
    # Deserialized, as the stream's cache: no serializer pass on each write and read.
    validated = validated.persist(StorageLevel.MEMORY_AND_DISK_DESER)
    curated = silver.curated_rows(validated).persist(StorageLevel.MEMORY_AND_DISK_DESER)
    try:
        counts = validated.agg(
            F.count(F.lit(1)), F.count(F.when(F.col("reason").isNotNull(), 1))
        ).first()
        messages, quarantined = counts[0], counts[1]
        log.info("replay: %d messages in bronze, %d rejected", messages, quarantined)
        silver.overwrite_quarantine(
            silver.quarantine_rows(validated), settings.table_path(silver.QUARANTINE_TABLE)
        )
        silver.overwrite_silver(spark, curated, settings.table_path(silver.TABLE))
        silver_rows = curated.count()
        log.info("replay: silver.cases rewritten with %d cases; loading Postgres", silver_rows)
        ends = raw.groupBy("topic", "partition").agg((F.max("offset") + 1).alias("end"))
        offsets = [(r.topic, r.partition, r.end) for r in ends.collect()]
        with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
            changed, deleted, total = replace_cases(
                conn, _csv_slices(curated, silver_rows), offsets
            )
    finally:
        curated.unpersist()
        validated.unpersist()
    result = ReplayResult(
        bronze_rows=raw.count(),
        messages=messages,
        silver_rows=silver_rows,
        quarantined=quarantined,
        postgres_changed=changed,
        postgres_deleted=deleted,
        postgres_rows=total,
    )
    log.info("replay finished: %s", result.summary(), extra=asdict(result))
    return result


def run_replay(settings: Settings) -> ReplayResult:
    """Build the SparkSession, replay bronze into silver and Postgres, and return the counts."""
    configure_logging(settings)
    spark = build_spark(settings, app_name="sf311-replay")
    try:
        return replay(spark, settings, decode.SchemaRegistry(settings.schema_registry_url))
    finally:
        spark.stop()
