"""The lake's Delta tables: creation with the properties every writer relies on, the session
settings of their writers, the idempotent append and compaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

# Frequent small commits: compaction runs every few batches, small logs replay in 2 partitions.
WRITE_CONF = {
    "spark.databricks.delta.optimizeWrite.enabled": "false",
    "spark.databricks.delta.autoCompact.enabled": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
}


def use_write_conf(spark: SparkSession) -> None:
    """Set WRITE_CONF on the session of the lake's writers."""
    for key, value in WRITE_CONF.items():
        spark.conf.set(key, value)


def stats_columns(*columns: str) -> dict[str, str]:
    """Return the table property that limits Delta's per-file statistics to these columns."""
    # Delta otherwise gathers statistics on the first 32 leaf columns, a cost on every row.
    return {"delta.dataSkippingStatsColumns": ",".join(columns)}


def create_if_missing(
    spark: SparkSession,
    schema: StructType,
    path: str,
    properties: Mapping[str, str],
    partition_by: Sequence[str] = (),
) -> None:
    """Create the Delta table at path, empty with the schema and properties, if absent."""
    # Only an existence check when present: loading the snapshot would repeat the write's own.
    if DeltaTable.isDeltaTable(spark, path):
        return
    # An empty append, not DeltaTable.createIfNotExists: the catalog takes a _delta_log folder
    # without a commit (a writer killed mid-create) for a table and fails DELTA_TABLE_NOT_FOUND.
    writer = spark.createDataFrame([], schema).write.format("delta").mode("append")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.options(**properties).save(path)
    except Exception:
        # Two writers creating it at once: Delta fails the second, whose table now exists.
        if not DeltaTable.isDeltaTable(spark, path):
            raise


def append_once(
    rows: DataFrame,
    path: str,
    app_id: str,
    batch_id: int,
    partition_by: Sequence[str] = (),
    merge_schema: bool = False,
) -> None:
    """Append rows to the Delta table at path; Delta skips the append when (app_id, batch_id)
    has already committed to it."""
    writer = rows.write.format("delta").mode("append")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    writer.option("txnAppId", app_id).option("txnVersion", batch_id).save(path)


def compact(spark: SparkSession, path: str) -> None:
    """Compact the small files of the Delta table at path, if it exists."""
    if DeltaTable.isDeltaTable(spark, path):
        DeltaTable.forPath(spark, path).optimize().executeCompaction()
