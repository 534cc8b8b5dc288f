"""One micro-batch on its way to the sinks: decoded and validated once (BatchDecoder), measured
(BatchFigures) and, for Postgres, collected to the driver (WarehouseRows)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sf311.contract.registry import RegistryError, SchemaRegistry
from sf311.lakehouse import bronze, decode, silver
from sf311.lakehouse.figures import BatchFigures, arrow_figures, utc
from sf311.settings import Settings
from sf311.warehouse.cases import CASE_COLUMNS
from sf311.warehouse.offsets import OffsetRange, loaded_offsets
from sf311.warehouse.retry import retrying, with_retries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarehouseRows:
    """One batch collected for Postgres: its figures, the newest version of each valid case,
    the offsets of its messages and the (id, instant) of the cases its tombstones delete."""

    figures: BatchFigures
    newest: pa.Table
    offsets: list[OffsetRange]
    deleted: list[tuple[int, datetime]] = field(default_factory=list)


@dataclass(frozen=True)
class Batch:
    """One validated micro-batch of a query, as every sink reads it."""

    query_name: str
    query_id: str
    batch_id: int
    started: datetime
    # Bronze-shaped rows with `reason` (null when valid); cached by the lake query.
    validated: DataFrame
    figures: BatchFigures
    decode_seconds: float
    # The rows Postgres still lacks, collected to the driver; None when no sink needs them.
    rows: WarehouseRows | None = None
    # When the batch was collected: (kafka_partition, kafka_offset) of its valid versions that
    # a newer one of the same case in it replaces (superseded), which silver drops.
    superseded: pa.Table | None = None

    @property
    def app_id(self) -> str:
        """Return the Delta txnAppId of the query's writes; a new checkpoint gets a new one."""
        return f"sf311.{self.query_name}.{self.query_id}"


@dataclass(frozen=True)
class Rebuild:
    """All of bronze decoded and validated again, as `sf311 replay` hands it to each sink."""

    # Bronze-shaped rows with `reason`, one per Kafka message, and the curated cases; cached.
    validated: DataFrame
    curated: DataFrame
    cases: int
    # (topic, partition, next offset) where bronze ends.
    ends: list[tuple[str, int, int]]


@dataclass
class BatchDecoder:
    """Kafka rows of one batch -> validated bronze-shaped rows, with writer schemas fetched
    from the registry as new ids appear, waiting up to retry_seconds while it is unreachable."""

    registry: SchemaRegistry
    reader_schema: str
    rules: silver.Rules = silver.Rules()
    retry_seconds: float = 0.0

    def validated(
        self, messages: DataFrame, batch_id: int, started: datetime, writers: dict[int, str]
    ) -> DataFrame:
        """Return the batch decoded with the given writer schemas, and validated."""
        decoded = decode.decode(decode.frame(messages), writers, self.reader_schema)
        raw = bronze.bronze_rows(decoded, batch_id, started)
        return silver.validate(raw, as_of=started, rules=self.rules)

    def learn(self, subject: str) -> None:
        """Fetch the writer schemas of the subject's versions, so that a batch of those decodes
        once, where collect() would decode it again to learn its ids; while the registry is
        unreachable that is left to collect(), which waits it out."""
        try:
            self.registry.subject_schemas(subject)
        except RegistryError as err:
            log.warning("writer schemas of %s not fetched up front (%s)", subject, err)

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
            new = [i for i in unknown if i not in writers]
            found = with_retries(
                lambda new=new: self.registry.writer_schemas(new),
                RegistryError,
                "schema registry",
                self.retry_seconds,
            )
            if not found:
                return result


def unknown_schema_id() -> Column:
    """Return the schema id of a message whose id the decode did not know, else null (a
    decode error is also the row's validation reason)."""
    return F.when(F.col("reason") == F.lit(decode.UNKNOWN_SCHEMA_ID), F.col("schema_id"))


def spark_figures(validated: DataFrame) -> tuple[BatchFigures, list[int]]:
    """Return a batch's figures, computed in Spark, and the schema ids the decode did not
    know."""
    valid_id = F.when(F.col("reason").isNull(), F.col("case.service_request_id"))
    row = validated.agg(
        F.count(F.lit(1)).alias("rows_in"),
        F.count(F.when(F.col("reason").isNull(), 1)).alias("rows_valid"),
        F.count(F.when(F.col("reason") == F.lit(silver.DELETION), 1)).alias("rows_deleted"),
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
        ts_min=utc(row.ts_min),
        ts_max=utc(row.ts_max),
        ts_p05=utc(p05),
        ts_p50=utc(p50),
        id_min=row.id_min,
        id_max=row.id_max,
        rows_deleted=row.rows_deleted,
    )
    return figures, row.unknown_ids


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
    ranked, newest = _ranked(table)
    # One copy of the wide rows, by index: filtering and sorting them copied them three times.
    return WarehouseRows(
        arrow_figures(table), table.take(ranked.filter(newest)), offset_ranges(table),
        deletions(table),
    )  # fmt: skip


def _ranked(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Return the indices of a collected batch's valid rows, each case's versions newest first
    (curated_rows' rule), and the mask of each case's newest version over them."""
    # One array: pyarrow 25 crashes on indices_nonzero of an empty chunked array.
    valid = pc.indices_nonzero(pc.is_null(table["reason"]).combine_chunks())
    keys = table.select(["service_request_id", "updated_datetime", "kafka_offset"]).take(valid)
    # An id's versions share a Kafka partition, so the offset breaks ties in arrival order.
    order = pc.sort_indices(
        keys, [("service_request_id", "ascending"), ("updated_datetime", "descending"),
               ("kafka_offset", "descending")]
    )  # fmt: skip
    ids = keys["service_request_id"].take(order).to_numpy()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return valid.take(order), pa.array(first)


def superseded(table: pa.Table) -> pa.Table:
    """Return (kafka_partition, kafka_offset) of the valid versions of a collected batch that a
    newer version of the same case in it replaces."""
    ranked, newest = _ranked(table)
    return table.select(["kafka_partition", "kafka_offset"]).take(ranked.filter(pc.invert(newest)))


def deletions(table: pa.Table) -> list[tuple[int, datetime]]:
    """Return (service_request_id, deleted_at) of the cases a collected batch's tombstones
    delete, by silver.deletions' rule: per id its newest tombstone's Kafka time, unless a
    version of the case arrived after it."""
    tombstones = table.filter(pc.equal(table["reason"], silver.DELETION))
    if tombstones.num_rows == 0:
        return []
    cols = ["service_request_id", "kafka_timestamp"]
    marks = tombstones.select(cols).to_pandas().groupby("service_request_id").max()
    valid = table.filter(pc.is_null(table["reason"])).select(cols).to_pandas()
    seen = valid.groupby("service_request_id")["kafka_timestamp"].max()
    after = seen.reindex(marks.index)
    kept = marks[after.isna() | (after < marks["kafka_timestamp"])]["kafka_timestamp"]
    return [(int(i), t.to_pydatetime()) for i, t in kept.items()]


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


def read_loaded_offsets(settings: Settings) -> dict[int, int]:
    """Return the cases topic's warehouse_offsets, waiting out a Postgres outage as a load does."""
    return retrying(
        settings.postgres_dsn.get_secret_value(),
        lambda conn: loaded_offsets(conn, settings.kafka_topic),
        settings.stream_pg_retry_seconds,
    )
