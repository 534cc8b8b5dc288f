"""Gold aggregates of silver.cases by San Francisco day or month: daily_volume and
resolution_stats here, backlog_daily in gold_backlog, sla_daily in gold_sla; pure transforms,
each restricted to the slices a batch changed when given them."""

from __future__ import annotations

from functools import reduce
from operator import and_

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sf311.contract import quality
from sf311.contract.city import LOCAL_TZ

VOLUME_KEYS = (
    "day",
    "category",
    "neighborhood",
    "supervisor_district",
    "police_district",
    "source",
)
RESOLUTION_KEYS = ("month", "category", "neighborhood")


def sf_day(ts: Column | str) -> Column:
    """Return the San Francisco calendar day of a UTC instant."""
    return F.to_date(F.from_utc_timestamp(ts, LOCAL_TZ))


def sf_month(ts: Column | str) -> Column:
    """Return the first day of the San Francisco month of a UTC instant."""
    return F.trunc(sf_day(ts), "month")


def flagged(*flags: str) -> Column:
    """Return True where a case's quality_flags hold any of flags."""
    found = F.coalesce(F.col("quality_flags"), F.array().cast("array<string>"))
    return F.arrays_overlap(found, F.array(*[F.lit(f) for f in flags]))


def within(rows: DataFrame, slices: DataFrame | None, cols: tuple[str, ...],
           ranged: bool = False) -> DataFrame:  # fmt: skip
    """Return the rows inside slices (None: all rows): equal on cols, nulls equal, or with
    ranged the last of cols (a day) on or after the slice's."""
    if slices is None:
        return rows
    s = slices.select(*[F.col(c).alias(f"_s_{c}") for c in cols])
    exact = cols[:-1] if ranged else cols
    conds = [rows[c].eqNullSafe(s[f"_s_{c}"]) for c in exact]
    if ranged:
        conds.append(rows[cols[-1]] >= s[f"_s_{cols[-1]}"])
    return rows.join(s, reduce(and_, conds), "left_semi")


def resolved(cases: DataFrame) -> DataFrame:
    """Return the cases a resolution time is measured on, by view resolution_times' rule."""
    return cases.where(
        (F.col("closure_kind") == F.lit(quality.RESOLVED))
        & (F.col("resolution_hours") >= 0)
        & ~flagged(*quality.RESOLUTION_FLAGS)
    )


def volume_slices(changes: DataFrame) -> DataFrame:
    """Return the (day, category) slices of daily_volume that changed rows touch (opened or
    closed day, before and after the change)."""
    cat = F.col("service_name").alias("category")
    opened = changes.select(sf_day("requested_datetime").alias("day"), cat)
    closed = changes.where(F.col("closed_date").isNotNull()).select(
        sf_day("closed_date").alias("day"), cat
    )
    return opened.unionByName(closed).distinct()


def month_slices(changes: DataFrame) -> DataFrame:
    """Return the (month, category) slices of resolution_stats that changed rows touch."""
    return (
        changes.where(F.col("closed_date").isNotNull())
        .select(sf_month("closed_date").alias("month"), F.col("service_name").alias("category"))
        .distinct()
    )


def daily_volume(cases: DataFrame, slices: DataFrame | None = None) -> DataFrame:
    """Return daily_volume: cases opened and closed per SF day x category x neighborhood x
    supervisor district x police district x source, inside (day, category) slices."""
    dims = [
        F.col("service_name").alias("category"),
        "neighborhood", "supervisor_district", "police_district", "source",
    ]  # fmt: skip
    opened = cases.select(
        sf_day("requested_datetime").alias("day"), *dims, F.lit(1).alias("o"), F.lit(0).alias("c")
    )
    closed = cases.where(F.col("closed_date").isNotNull()).select(
        sf_day("closed_date").alias("day"), *dims, F.lit(0).alias("o"), F.lit(1).alias("c")
    )
    events = within(opened.unionByName(closed), slices, ("day", "category"))
    return events.groupBy(*VOLUME_KEYS).agg(
        F.sum("o").cast("int").alias("opened"), F.sum("c").cast("int").alias("closed")
    )


def resolution_stats(cases: DataFrame, slices: DataFrame | None = None) -> DataFrame:
    """Return resolution_stats: resolved cases per SF month closed x category x neighborhood,
    with exact (continuous) p50 and p90 hours, inside (month, category) slices."""
    rows = resolved(cases).select(
        sf_month("closed_date").alias("month"),
        F.col("service_name").alias("category"),
        "neighborhood",
        "resolution_hours",
    )
    return (
        within(rows, slices, ("month", "category"))
        .groupBy(*RESOLUTION_KEYS)
        .agg(
            F.count(F.lit(1)).cast("int").alias("closed_cases"),
            F.percentile("resolution_hours", 0.5).alias("p50_hours"),
            F.percentile("resolution_hours", 0.9).alias("p90_hours"),
        )
    )
