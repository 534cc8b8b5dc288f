"""The lake's gold Delta tables: built from all of silver.cases, or refreshed from the slices
that silver's change data feed says changed since the version gold reflects, each slice
recomputed from silver and replaced, so that running a refresh again changes nothing."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sf311.errors import InputError
from sf311.lakehouse.gold import (
    change_keys,
    daily_volume,
    resolution_stats,
    sf_date,
    sf_day,
    touched,
    utc_instant,
    within,
)
from sf311.lakehouse.gold_backlog import backlog_daily
from sf311.lakehouse.gold_sla import pending_slices, sla_daily, sla_slices, sla_targets
from sf311.lakehouse.silver import live
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
# The Arrow types of the columns of slices and targets held in the driver.
LOCAL_TYPES = {
    "day": pa.date32(), "month": pa.date32(), "category": pa.string(),
    "service_name": pa.string(), "target_hours": pa.float64(),
}  # fmt: skip


@dataclass(frozen=True)
class Update:
    """New rows of a gold table inside slices, held in the driver (None: the whole table)."""

    table: GoldTable
    rows: DataFrame
    slices: pa.Table | None


def local_rows(cols: tuple[str, ...], rows: Iterable[tuple]) -> pa.Table:
    """Return rows (tuples of cols, named in LOCAL_TYPES) as an Arrow table."""
    rows = list(rows)
    return pa.table({c: pa.array([r[i] for r in rows], LOCAL_TYPES[c]) for i, c in enumerate(cols)})


def local_frame(spark: SparkSession, rows: pa.Table) -> DataFrame:
    """Return Arrow rows as a DataFrame held in its plan: collecting or joining it runs no
    Spark job, unlike a frame of a Python list (an RDD)."""
    return spark.createDataFrame(rows)


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
    return local_frame(spark, local_rows(("category", "target_hours"), rows))


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
    return utc_instant(micros[0])


def _categories(spark: SparkSession, names: list[str | None]) -> DataFrame:
    """Return the slices of silver (column service_name) of the named categories."""
    return local_frame(spark, local_rows(("service_name",), [(n,) for n in names]))


def _silver(spark: SparkSession, path: str, version: int) -> DataFrame:
    # Cases deleted at the source count nowhere, as in the analyst views.
    return live(spark.read.format("delta").option("versionAsOf", version).load(path))


def build(
    spark: SparkSession, silver_path: str, conf: DataFrame
) -> tuple[list[Update], Progress] | None:
    """Return every gold table computed from all of silver.cases and the progress it reflects,
    or None while silver holds no case."""
    version = latest_version(spark, silver_path)
    # Not cached: each table scans the Parquet columns it needs. On 7.3M cases a scan of all
    # of them took 1.2-1.5 CPU-s, their cache 17 CPU-s to build and 1.9 per scan.
    cases = _silver(spark, silver_path, version).select(*SILVER_COLUMNS)
    as_of = _newest_instant(cases)
    if as_of is None:
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
    return updates, Progress(table_id(spark, silver_path), version, as_of)


def _touching(cases: DataFrame, categories: set[str | None], first: date | None) -> DataFrame:
    """Return the cases of categories that a slice from SF day first on can hold: opened or
    closed on or after it, or still open."""
    named = F.col("service_name").isin([c for c in categories if c is not None])
    inside = named | F.col("service_name").isNull() if None in categories else named
    if first is None:
        return cases.where(inside)
    # A day early: any SF day starts within a day of the UTC midnight of its date.
    since = F.lit(datetime.combine(first - timedelta(days=1), time(), UTC))
    req, closed = F.col("requested_datetime"), F.col("closed_date")
    recent = req.isNull() | closed.isNull() | (req >= since) | (closed >= since)
    return cases.where(inside & recent)


def refresh(
    spark: SparkSession, silver_path: str, targets_path: str, progress: Progress, conf: DataFrame
) -> tuple[list[Update], Progress, DataFrame | None] | None:
    """Return the gold slices silver's changes since progress touch, recomputed from silver,
    the new progress and the (cached) silver rows to release; None when silver has not moved.
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
    )
    # The changes' slices are few: collected in one job, every slice is derived in the driver.
    found = touched(change_keys(changes).collect())
    if found.newest is None:
        return [], Progress(progress.silver_table, version, progress.as_of), None
    as_of = max(progress.as_of, found.newest)
    last, before = sf_date(as_of), sf_date(progress.as_of)
    silver = _silver(spark, silver_path, version).select(*SILVER_COLUMNS)
    # The targets table holds a row per category: read and changed here, in the driver.
    stored = {r.category: r.target_hours for r in spark.read.format("delta").load(targets_path)
              .collect()}  # fmt: skip
    # A category without a target (new, or none of its cases resolved in the trailing year when
    # it was set) gets one when its cases change; a target once set stays.
    pending = [c for c in found.starts if stored.get(c) is None]
    computed = []
    if pending:
        computed = sla_targets(within(silver, _categories(spark, pending), ("service_name",)),
                               conf, as_of).collect()  # fmt: skip
    new = {c: t for c, t in computed if c not in stored or t is not None}
    targets = {**stored, **new}
    sla = set(found.sla)
    # Every day a category opened cases is recomputed when it gains its target.
    targeted = [c for c, t in new.items() if t is not None]
    if targeted:
        opened = sla_slices(within(silver, _categories(spark, targeted), ("service_name",)))
        sla |= {(r.day, r.category) for r in opened.collect()}
    starts = dict(found.starts)
    if last > before:
        # Every category's backlog gains the new days, and open cases may pass their target.
        day = before + timedelta(days=1)
        starts |= {c: day if starts.get(c) is None else min(starts[c], day) for c in targets}
    if as_of > progress.as_of:
        sla |= pending_slices(targets, progress.as_of, last)
    slices = {
        DAILY_VOLUME: local_rows(DAILY_VOLUME.slice_cols, found.volume),
        BACKLOG_DAILY: local_rows(BACKLOG_DAILY.slice_cols, starts.items()),
        RESOLUTION_STATS: local_rows(RESOLUTION_STATS.slice_cols, found.months),
        SLA_DAILY: local_rows(SLA_DAILY.slice_cols, sla),
    }
    days = [d for s in (found.volume, found.months, sla) for d, _ in s if d is not None]
    days += [d for d in starts.values() if d is not None]
    categories = {c for s in (found.volume, found.months, sla) for _, c in s} | starts.keys()
    # Read once for the four tables, and only the cases their slices can hold.
    cases = _touching(silver, categories, min(days, default=None)).persist()
    frames = {t: local_frame(spark, s) for t, s in slices.items()}
    targets_frame = local_frame(spark, local_rows(("category", "target_hours"), targets.items()))
    updates = [
        Update(DAILY_VOLUME, daily_volume(cases, frames[DAILY_VOLUME]), slices[DAILY_VOLUME]),
        Update(BACKLOG_DAILY, backlog_daily(cases, frames[BACKLOG_DAILY], last),
               slices[BACKLOG_DAILY]),
        Update(RESOLUTION_STATS, resolution_stats(cases, frames[RESOLUTION_STATS]),
               slices[RESOLUTION_STATS]),
        Update(SLA_DAILY, sla_daily(cases, targets_frame, as_of, frames[SLA_DAILY]),
               slices[SLA_DAILY]),
    ]  # fmt: skip
    if new:
        updates.append(Update(SLA_TARGETS, targets_frame, None))
    return updates, Progress(progress.silver_table, version, as_of), cases


def overwrite(path: str, rows: DataFrame) -> None:
    """Replace the Delta table at path (created if absent) by rows."""
    rows.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)


def differing(old: pa.Table, new: pa.Table, table: GoldTable) -> tuple[pa.Table, pa.Table]:
    """Return the rows of new whose key is not in old or whose values differ (nulls equal),
    and the keys of old that new lacks."""
    keys, values = list(table.keys), list(table.values)
    # A join of positions: at the city's scale a batch's slices span millions of rows.
    a = new.select(keys + values).to_pandas().assign(_n=range(new.num_rows))
    b = old.select(keys + values).to_pandas().assign(_o=range(old.num_rows))
    m = a.merge(b, on=keys, how="outer", suffixes=("", "_old"))  # null keys match, as in <=>
    same = m["_o"].notna()
    for v in values:
        same &= (m[v] == m[f"{v}_old"]) | (m[v].isna() & m[f"{v}_old"].isna())
    changed = m.loc[m["_n"].notna() & ~same, "_n"].astype("int64")
    gone = m.loc[m["_n"].isna(), "_o"].astype("int64")
    return new.take(pa.array(changed.sort_values())), old.select(keys).take(pa.array(gone))


def replace_slices(
    spark: SparkSession, path: str, table: GoldTable, rows: pa.Table, slices: pa.Table
) -> None:
    """Make the Delta table at path hold exactly rows inside slices: the rows that differ
    are merged, and nothing is committed when none does."""
    current = spark.read.format("delta").load(path)
    inside = within(current, local_frame(spark, slices), table.slice_cols, table.ranged)
    new = rows.select(list(table.columns))
    changed, gone = differing(inside.select(*table.columns).toArrow(), new, table)
    if changed.num_rows == 0 and gone.num_rows == 0:
        return
    schema = pa.schema([f.with_nullable(True) for f in new.schema])
    gone_rows = pa.table(
        {
            f.name: gone[f.name] if f.name in table.keys else pa.nulls(gone.num_rows, f.type)
            for f in schema
        }  # fmt: skip
    )
    source = pa.concat_tables(
        [
            changed.cast(schema).append_column("_gone", pa.repeat(False, changed.num_rows)),
            gone_rows.cast(schema).append_column("_gone", pa.repeat(True, gone.num_rows)),
        ]
    )
    (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(local_frame(spark, source).alias("s"),
               " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in table.keys))
        .whenMatchedDelete(condition="s._gone")
        .whenMatchedUpdate(condition="NOT s._gone", set={v: f"s.`{v}`" for v in table.values})
        .whenNotMatchedInsert(condition="NOT s._gone",
                              values={c: f"s.`{c}`" for c in table.columns})
        .execute()
    )  # fmt: skip


def all_present(spark: SparkSession, paths: Iterable[str]) -> bool:
    """Return True when every gold table exists in the lake."""
    return all(DeltaTable.isDeltaTable(spark, p) for p in paths)
