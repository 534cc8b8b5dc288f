"""The streaming job's two queries and where each keeps its checkpoint; no pyspark here, so
`sf311 status` reads them."""

from __future__ import annotations

import json

from sf311.settings import Settings

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
