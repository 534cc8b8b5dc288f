"""Creation of the lake's Delta tables, with the properties every writer relies on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql.types import StructType


def stats_columns(*columns: str) -> dict[str, str]:
    """Return the table property that limits Delta's per-file statistics to these columns.

    Delta otherwise gathers min/max/null counts on the first 32 leaf columns, nested fields
    included: a cost on every row written, for columns no reader filters on."""
    return {"delta.dataSkippingStatsColumns": ",".join(columns)}


def create_if_missing(
    spark: SparkSession,
    schema: StructType,
    path: str,
    properties: Mapping[str, str],
    partition_by: Sequence[str] = (),
) -> None:
    """Create the Delta table at path, empty with the schema and properties, if absent."""
    # Only an existence check when present: writers call this every micro-batch, and loading
    # the table's snapshot here would repeat what their own write does.
    if DeltaTable.isDeltaTable(spark, path):
        return
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    for key, value in properties.items():
        builder = builder.property(key, value)
    builder.execute()
