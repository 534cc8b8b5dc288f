"""The streaming job's two queries, where each keeps its checkpoint and how far it committed;
no pyspark import here, so `sf311 status` reads them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sf311.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Kafka -> Postgres `cases`: small, fast batches, so the warehouse is fresh within seconds.
WAREHOUSE_QUERY = "sf311_warehouse"
# Kafka -> bronze.cases_raw, silver.cases_quarantine and silver.cases.
LAKE_QUERY = "sf311_lake"
QUERIES = (WAREHOUSE_QUERY, LAKE_QUERY)


def checkpoint_location(settings: Settings, query_name: str) -> str:
    """Return the checkpoint folder of one streaming query."""
    return f"{settings.checkpoint_root.rstrip('/')}/{query_name}"


def parse_offsets(text: str, topic: str) -> dict[int, int]:
    """Return {partition: offset} of one topic from a checkpoint's offsets/N file, which ends
    with the source's offsets as JSON: where batch N read up to."""
    offsets = json.loads(text.splitlines()[-1]).get(topic, {})
    return {int(p): int(o) for p, o in offsets.items()}


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
