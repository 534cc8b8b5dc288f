"""bronze.cases_raw: every Kafka message as received, append-only, partitioned by ingest date."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sf311.lakehouse.tables import append_once, create_if_missing, stats_columns

TABLE = "bronze.cases_raw"

COLUMNS = [
    "key",
    "value",
    "topic",
    "partition",
    "offset",
    "kafka_timestamp",
    "schema_id",
    "case",
    "decode_error",
    "batch_id",
    "ingested_at",
    "ingest_date",
]

# Readers find a message by its Kafka coordinates, its case or its batch.
PROPERTIES = stats_columns(
    "partition", "offset", "kafka_timestamp", "schema_id", "case.service_request_id",
    "batch_id", "ingested_at",
)  # fmt: skip


def bronze_rows(decoded: DataFrame, batch_id: int, ingested_at: datetime) -> DataFrame:
    """Return decoded Kafka messages in the bronze.cases_raw shape, stamped with the batch."""
    stamp = F.lit(ingested_at).cast("timestamp")
    return (
        decoded.withColumnRenamed("timestamp", "kafka_timestamp")
        .withColumn("batch_id", F.lit(batch_id).cast("long"))
        .withColumn("ingested_at", stamp)
        .withColumn("ingest_date", F.to_date(stamp))
        .select(*COLUMNS)
    )


def write_bronze(rows: DataFrame, path: str, app_id: str, batch_id: int) -> None:
    """Append one batch to bronze; Delta skips it when (app_id, batch_id) already committed."""
    create_if_missing(rows.sparkSession, rows.schema, path, PROPERTIES, ["ingest_date"])
    # A newer reader schema adds fields to the `case` struct; bronze follows it.
    append_once(rows, path, app_id, batch_id, ["ingest_date"], merge_schema=True)
