"""gold.sla_daily: per San Francisco day requested x category x agency, the cases closed within
their category's target, closed or still open past it, and open within it, as of an instant."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sf311.contract import quality
from sf311.lakehouse.gold import flagged, resolved, sf_date, sf_day, within

SLA_KEYS = ("day", "category", "agency")
# The default target of a category: this quantile of its resolved hours over the trailing year.
DEFAULT_QUANTILE = 0.9
TRAILING = timedelta(days=365)


def sla_targets(cases: DataFrame, conf: DataFrame, as_of: datetime) -> DataFrame:
    """Return (category, target_hours) for every category of cases: conf's target (category,
    target_hours), else the p90 of resolved hours of cases closed in the year up to as_of."""
    year = resolved(cases).where(
        (F.col("closed_date") > F.lit(as_of - TRAILING)) & (F.col("closed_date") <= F.lit(as_of))
    )
    p90 = year.groupBy(F.col("service_name").alias("category")).agg(
        F.percentile("resolution_hours", DEFAULT_QUANTILE).alias("p90")
    )
    cats = cases.select(F.col("service_name").alias("category")).distinct()
    c, p, k = cats.alias("c"), p90.alias("p"), conf.alias("k")
    return (
        c.join(p, F.col("c.category").eqNullSafe(F.col("p.category")), "left")
        .join(k, F.col("c.category") == F.col("k.category"), "left")
        .select(
            F.col("c.category").alias("category"),
            F.coalesce(F.col("k.target_hours").cast("double"), F.col("p.p90")).alias(
                "target_hours"
            ),
        )
    )


def sla_slices(changes: DataFrame) -> DataFrame:
    """Return the (day, category) slices of sla_daily that changed rows touch."""
    return changes.select(
        sf_day("requested_datetime").alias("day"), F.col("service_name").alias("category")
    ).distinct()


def pending_slices(targets: dict[str | None, float | None], since: datetime,
                   last_day: date) -> set[tuple[date, str | None]]:  # fmt: skip
    """Return the (day, category) slices where a case open within its target (targets:
    category: hours) at `since` may have passed it since: days from since - target to
    last_day."""
    out = set()
    for category, hours in targets.items():
        if hours is None:
            continue
        first = min(sf_date(since - timedelta(microseconds=int(hours * 3_600_000_000))), last_day)
        out |= {(first + timedelta(days=n), category) for n in range((last_day - first).days + 1)}
    return out


def sla_daily(cases: DataFrame, targets: DataFrame, as_of: datetime,
              slices: DataFrame | None = None) -> DataFrame:  # fmt: skip
    """Return sla_daily as of as_of, inside (day, category) slices.

    Cancelled or invalid closures and cases with an impossible closure count as opened but
    neither met, missed nor pending; any other closure is met within target_hours. A category
    without a target has null met, missed and pending."""
    t = targets.select(F.col("category").alias("_c"), "target_hours")
    rows = cases.select(
        sf_day("requested_datetime").alias("day"),
        F.col("service_name").alias("category"),
        F.col("agency_responsible").alias("agency"),
        "requested_datetime", "closed_date", "resolution_hours", "closure_kind", "quality_flags",
    )  # fmt: skip
    rows = within(rows, slices, ("day", "category"))
    rows = rows.join(t, rows.category.eqNullSafe(t["_c"]), "left").drop("_c")
    target = F.col("target_hours")
    counted = (F.col("closure_kind") != F.lit(quality.CANCELLED_OR_INVALID)) & ~flagged(
        *quality.RESOLUTION_FLAGS
    )
    closed = F.col("closed_date").isNotNull()
    age = (F.lit(as_of).cast("double") - F.col("requested_datetime").cast("double")) / 3600.0
    hours = F.col("resolution_hours")

    def tally(cond: Column) -> Column:
        return F.sum(F.when(target.isNull(), F.lit(None)).when(counted & cond, 1).otherwise(0))

    out = rows.groupBy(*SLA_KEYS).agg(
        F.max(target).alias("target_hours"),
        F.count(F.lit(1)).cast("int").alias("opened"),
        tally(closed & (hours <= target)).cast("int").alias("met"),
        tally((closed & (hours > target)) | (~closed & (age > target))).cast("int").alias("missed"),
        tally(~closed & (age <= target)).cast("int").alias("pending"),
    )
    return out.withColumn(
        "share_met",
        F.col("met") / F.when(F.col("met") + F.col("missed") != 0, F.col("met") + F.col("missed")),
    )
