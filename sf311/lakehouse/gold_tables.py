"""The lake's gold Delta tables: built from all of silver.cases, or refreshed from the slices
that silver's change data feed says changed since the version gold reflects, each slice
recomputed from silver and replaced, so that running a refresh again changes nothing."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sf311.contract.city import LOCAL_ZONE
from sf311.errors import InputError
from sf311.lakehouse.gold import (
    daily_volume,
    month_slices,
    resolution_stats,
    sf_day,
    volume_slices,
    within,
)
from sf311.lakehouse.gold_backlog import backlog_daily, backlog_starts
from sf311.lakehouse.gold_sla import pending_slices, sla_daily, sla_slices, sla_targets
from sf311.settings import Settings
from sf311.warehouse.gold import (
    BACKLOG_DAILY,
    DAILY_VOLUME,
    RESOLUTION_STATS,
    SLA_DAILY,
    SLA_TARGETS,
    TABLES,
    GoldTable,
    Progress,
)

log = logging.getLogger(__name__)

# What gold reads of silver.cases.
SILVER_COLUMNS = (
    "requested_datetime", "closed_date", "service_name", "neighborhood", "supervisor_district",
    "police_district", "source", "agency_responsible", "resolution_hours", "closure_kind",
    "quality_flags",
)  # fmt: skip
CHANGE_FEED = "delta.enableChangeDataFeed"
TARGET_SCHEMA = "category string, target_hours double"


@dataclass(frozen=True)
class Update:
    """New rows of a gold table inside slices (None: the whole table)."""

    table: GoldTable
    rows: DataFrame
    slices: DataFrame | None


def gold_paths(settings: Settings) -> dict[str, str]:
    """Return the storage path of each gold table by name."""
    return {t.name: settings.table_path(f"gold.{t.name}") for t in TABLES}


def conf_targets(spark: SparkSession, path: Path) -> DataFrame:
    """Return (category, target_hours) of conf/sla_targets.csv; none when the file is absent."""
    rows: list[tuple[str, float]] = []
    if path.exists():
        with path.open(newline="") as f:
            for n, rec in enumerate(csv.DictReader(f), start=2):
                try:
                    rows.append((rec["category"], float(rec["target_hours"])))
                except (KeyError, TypeError, ValueError):
                    raise InputError(
                        f"{path}:{n}: expected columns category,target_hours with a number of "
                        "hours; correct the line"
                    ) from None
    return spark.createDataFrame(rows, TARGET_SCHEMA)


def enable_change_feed(spark: SparkSession, path: str) -> None:
    """Turn on Delta's change data feed of the table at path, if it is off."""
    properties = DeltaTable.forPath(spark, path).detail().first()["properties"]
    if properties.get(CHANGE_FEED) != "true":
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({CHANGE_FEED} = true)")


def table_id(spark: SparkSession, path: str) -> str:
    """Return the id Delta gave the table at path when it was created."""
    return DeltaTable.forPath(spark, path).detail().first()["id"]


def latest_version(spark: SparkSession, path: str) -> int:
    """Return the newest version of the Delta table at path."""
    return DeltaTable.forPath(spark, path).history(1).first()["version"]


def _newest_instant(rows: DataFrame) -> datetime | None:
    micros = rows.agg(F.max(F.unix_micros(F.greatest("requested_datetime", "closed_date")))).first()
    return None if micros[0] is None else datetime.fromtimestamp(micros[0] / 1e6, UTC)


def sf_date(instant: datetime) -> date:
    """Return the San Francisco calendar day of an instant."""
    return instant.astimezone(LOCAL_ZONE).date()


def _categories(spark: SparkSession, names: list[str | None]) -> DataFrame:
    """Return the slices of silver (column service_name) of the named categories."""
    return spark.createDataFrame([(n,) for n in names], "service_name string")


def _silver(spark: SparkSession, path: str, version: int) -> DataFrame:
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def build(
    spark: SparkSession, silver_path: str, conf: DataFrame
) -> tuple[list[Update], Progress, DataFrame] | None:
    """Return every gold table computed from all of silver.cases, the progress it reflects and
    the (cached) silver rows to release, or None while silver holds no case."""
    version = latest_version(spark, silver_path)
    # Read once: the tables scan silver about ten times, each scan a Delta file listing and
    # a Spark job of its own, whatever the size of silver.
    cases = _silver(spark, silver_path, version).select(*SILVER_COLUMNS).persist()
    as_of = _newest_instant(cases)
    if as_of is None:
        cases.unpersist()
        return None
    # Computed once, a row per category: sla_daily and the targets table both read it.
    targets = sla_targets(cases, conf, as_of)
    targets = spark.createDataFrame(targets.toArrow(), targets.schema)
    starts = cases.groupBy(F.col("service_name").alias("category")).agg(
        F.min(sf_day("requested_datetime")).alias("day")
    )
    updates = [
        Update(DAILY_VOLUME, daily_volume(cases), None),
        Update(BACKLOG_DAILY, backlog_daily(cases, starts, sf_date(as_of)), None),
        Update(RESOLUTION_STATS, resolution_stats(cases), None),
        Update(SLA_DAILY, sla_daily(cases, targets, as_of), None),
        Update(SLA_TARGETS, targets, None),
    ]
    return updates, Progress(table_id(spark, silver_path), version, as_of), cases


def refresh(
    spark: SparkSession, silver_path: str, targets_path: str, progress: Progress, conf: DataFrame
) -> tuple[list[Update], Progress, DataFrame] | None:
    """Return the gold slices silver's changes since progress touch, recomputed from silver,
    the new progress and the (cached) change rows to release; None when silver has not moved.
    Raises pyspark's AnalysisException when the change feed does not cover the versions."""
    version = latest_version(spark, silver_path)
    if version == progress.silver_version:
        return None
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", progress.silver_version + 1)
        .option("endingVersion", version)
        .load(silver_path)
        .select(*SILVER_COLUMNS)
        .persist()
    )
    newest = _newest_instant(changes)
    if newest is None:
        return [], Progress(progress.silver_table, version, progress.as_of), changes
    as_of = max(progress.as_of, newest)
    last, before = sf_date(as_of), sf_date(progress.as_of)
    cases = _silver(spark, silver_path, version).select(*SILVER_COLUMNS)
    updates: list[Update] = []
    # The targets table holds a row per category: read and changed here, in the driver.
    stored = {r.category: r.target_hours for r in spark.read.format("delta").load(targets_path)
              .collect()}  # fmt: skip
    touched = changes.select(F.col("service_name").alias("category")).distinct().collect()
    # A category without a target (new, or none of its cases resolved in the trailing year when
    # it was set) gets one when its cases change; a target once set stays.
    pending = [r.category for r in touched if stored.get(r.category) is None]
    found = []
    if pending:
        found = sla_targets(within(cases, _categories(spark, pending), ("service_name",)), conf,
                            as_of).collect()  # fmt: skip
    new = {c: t for c, t in found if c not in stored or t is not None}
    targets = spark.createDataFrame(list({**stored, **new}.items()), TARGET_SCHEMA)
    sla = sla_slices(changes)
    # Every day a category opened cases is recomputed when it gains its target.
    targeted = [c for c, t in new.items() if t is not None]
    if targeted:
        sla = sla.unionByName(
            sla_slices(within(cases, _categories(spark, targeted), ("service_name",)))
        ).distinct()
    starts = backlog_starts(changes)
    if last > before:
        # Every category's backlog gains the new days, and open cases may pass their target.
        starts = starts.unionByName(
            targets.select("category", F.lit(before + timedelta(days=1)).alias("day"))
        )
        starts = starts.groupBy("category").agg(F.min("day").alias("day"))
    if as_of > progress.as_of:
        sla = sla.unionByName(pending_slices(targets, progress.as_of, last)).distinct()
    volume, months = volume_slices(changes), month_slices(changes)
    updates += [
        Update(DAILY_VOLUME, daily_volume(cases, volume), volume),
        Update(BACKLOG_DAILY, backlog_daily(cases, starts, last), starts),
        Update(RESOLUTION_STATS, resolution_stats(cases, months), months),
        Update(SLA_DAILY, sla_daily(cases, targets, as_of, sla), sla),
    ]
    if new:
        updates.append(Update(SLA_TARGETS, targets, None))
    return updates, Progress(progress.silver_table, version, as_of), changes


def write_update(spark: SparkSession, path: str, update: Update) -> None:
    """Replace update's slices of the Delta table at path by its rows (the whole table when
    slices is None), rewriting only rows that differ."""
    t, rows = update.table, update.rows
    if update.slices is None or not DeltaTable.isDeltaTable(spark, path):
        rows.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
        return
    current = spark.read.format("delta").load(path)
    old = within(current, update.slices, t.slice_cols, t.ranged).select(*t.keys)
    same = " AND ".join(f"o.`{k}` <=> n.`{k}`" for k in t.keys)
    gone = old.alias("o").join(rows.select(*t.keys).alias("n"), F.expr(same), "left_anti")
    source = rows.withColumn("_gone", F.lit(False)).unionByName(
        gone.withColumn("_gone", F.lit(True)), allowMissingColumns=True
    )
    unchanged = " AND ".join(f"t.`{v}` <=> s.`{v}`" for v in t.values)
    (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(source.alias("s"), " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in t.keys))
        .whenMatchedDelete(condition="s._gone")
        .whenMatchedUpdate(condition=f"NOT s._gone AND NOT ({unchanged})",
                           set={v: f"s.`{v}`" for v in t.values})
        .whenNotMatchedInsert(condition="NOT s._gone",
                              values={c: f"s.`{c}`" for c in t.columns})
        .execute()
    )  # fmt: skip


def all_present(spark: SparkSession, paths: Iterable[str]) -> bool:
    """Return True when every gold table exists in the lake."""
    return all(DeltaTable.isDeltaTable(spark, p) for p in paths)
