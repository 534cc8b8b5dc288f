"""Gold aggregates of silver.cases by San Francisco day or month: daily_volume and
resolution_stats here, backlog_daily in gold_backlog, sla_daily in gold_sla; pure transforms,
each restricted to the slices a batch changed when given them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from operator import and_

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from sf311.contract import quality
from sf311.contract.city import LOCAL_TZ, LOCAL_ZONE

VOLUME_KEYS = (
    "day",
    "category",
    "neighborhood",
    "supervisor_district",
    "police_district",
    "source",
)
RESOLUTION_KEYS = ("month", "category", "neighborhood")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def sf_day(ts: Column | str) -> Column:
    """Return the San Francisco calendar day of a UTC instant."""
    return F.to_date(F.from_utc_timestamp(ts, LOCAL_TZ))


def sf_date(instant: datetime) -> date:
    """Return the San Francisco calendar day of an instant."""
    return instant.astimezone(LOCAL_ZONE).date()


def utc_instant(micros: int | None) -> datetime | None:
    """Return the UTC instant of microseconds since the epoch (as collected from unix_micros:
    collected timestamps would come back in the driver's time zone)."""
    return None if micros is None else EPOCH + timedelta(microseconds=micros)


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


def change_keys(changes: DataFrame) -> DataFrame:
    """Return the distinct (category, day opened, day closed, month closed) of changed rows,
    SF days and month, each with the newest instant of its rows (microseconds since the
    epoch: collected timestamps would come back in the driver's time zone)."""
    return changes.groupBy(
        F.col("service_name").alias("category"),
        sf_day("requested_datetime").alias("day"),
        sf_day("closed_date").alias("closed_day"),
        sf_month("closed_date").alias("month"),
    ).agg(F.max(F.unix_micros(F.greatest("requested_datetime", "closed_date"))).alias("newest"))


@dataclass(frozen=True)
class Touched:
    """The slices of each gold table that changed rows touch, held in the driver."""

    volume: set[tuple[date | None, str | None]]  # (day, category) opened or closed
    months: set[tuple[date, str | None]]  # (month, category) closed
    sla: set[tuple[date | None, str | None]]  # (day, category) opened
    starts: dict[str | None, date | None]  # category: first day opened
    newest: datetime | None


def touched(keys: Iterable[Row]) -> Touched:
    """Return the slices that rows of change_keys touch."""
    keys = list(keys)
    newest = max((k.newest for k in keys if k.newest is not None), default=None)
    starts: dict[str | None, date | None] = {}
    for k in keys:
        first = starts.get(k.category)
        starts[k.category] = k.day if first is None else min(first, k.day or first)
    return Touched(
        volume={(k.day, k.category) for k in keys}
        | {(k.closed_day, k.category) for k in keys if k.closed_day is not None},
        months={(k.month, k.category) for k in keys if k.month is not None},
        sla={(k.day, k.category) for k in keys},
        starts=starts,
        newest=utc_instant(newest),
    )


def daily_volume(cases: DataFrame, slices: DataFrame | None = None) -> DataFrame:
    """Return daily_volume: cases opened and closed per SF day x category x neighborhood x
    supervisor district x police district x source, inside (day, category) slices."""
    dims = [
        F.col("service_name").alias("category"),
        "neighborhood", "supervisor_district", "police_district", "source",
    ]  # fmt: skip
    # Both events of a case from one pass over the cases, not a union that reads them twice.
    opened = F.struct(sf_day("requested_datetime").alias("day"), F.lit(1).alias("o"),
                      F.lit(0).alias("c"))  # fmt: skip
    closed = F.struct(sf_day("closed_date").alias("day"), F.lit(0).alias("o"), F.lit(1).alias("c"))
    edges = F.array(opened, F.when(F.col("closed_date").isNotNull(), closed))
    events = cases.select(*dims, F.explode(edges).alias("v")).where(F.col("v").isNotNull())
    events = within(events.select("v.day", *VOLUME_KEYS[1:], "v.o", "v.c"), slices,
                    ("day", "category"))  # fmt: skip
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
