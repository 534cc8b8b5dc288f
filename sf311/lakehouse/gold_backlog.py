"""gold.backlog_daily: cases open at the end of each San Francisco day by category and age
bucket, from +1/-1 interval events per case and bucket summed cumulatively over days."""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sf311.contract import quality
from sf311.lakehouse.gold import flagged, sf_day

# The buckets of view open_backlog: (name, from days, to days exclusive) of age.
BUCKETS = (
    ("0-1 d", 0, 1), ("1-7 d", 1, 7), ("7-30 d", 7, 30), ("30-90 d", 30, 90), ("90+ d", 90, None),
)  # fmt: skip
DAY_MICROS = 86_400_000_000


def _first_day_aged(requested: Column, days: int) -> Column:
    # The first day whose end (next SF midnight) is at least `days` after requested.
    return sf_day(F.timestamp_micros(F.unix_micros(requested) + days * DAY_MICROS - 1))


def backlog_daily(cases: DataFrame, starts: DataFrame, last_day: date) -> DataFrame:
    """Return backlog_daily for every day from each category's start day (starts: category,
    day) to last_day; rows with no open case are left out.

    A case is open at the end of day d when requested before the next SF midnight and closed
    after it (or not closed); cases whose closed_date was impossible are left out (closed at
    an unknown time, as view open_backlog does)."""
    c = cases.where(~flagged(quality.CLOSED_DATE_INVALID)).select(
        F.col("service_name").alias("category"), "requested_datetime", "closed_date"
    )
    starts = starts.select("category", F.col("day").alias("start"))
    # A row per category: broadcast, where the planner, not knowing its size, shuffled the cases.
    c = c.join(F.broadcast(starts.withColumnRenamed("category", "_c")),
               c.category.eqNullSafe(F.col("_c"))).drop("_c")  # fmt: skip
    req, end = F.col("requested_datetime"), F.lit(last_day)
    first_open = sf_day(req)
    closed_before = F.date_sub(sf_day(F.timestamp_micros(F.unix_micros("closed_date") - 1)), 1)
    last_open = F.when(F.col("closed_date").isNull(), end).otherwise(F.least(closed_before, end))
    c = c.withColumns({"first_open": first_open, "last_open": last_open})
    c = c.where(F.col("last_open") >= F.greatest("first_open", "start"))
    # Each bucket's first day computed once: a bucket ends the day before the next one begins.
    aged = {n: f"_aged_{n}" for _, n, _ in BUCKETS if n > 0}
    c = c.withColumns({name: _first_day_aged(req, n) for n, name in aged.items()})
    spans = []
    for name, lo, hi in BUCKETS:
        begin = F.col("first_open") if lo == 0 else F.col(aged[lo])
        stop = F.col("last_open")
        if hi is not None:
            stop = F.least(stop, F.date_sub(F.col(aged[hi]), 1))
        spans.append(F.struct(
            F.lit(name).alias("age_bucket"),
            F.greatest(begin, F.col("start")).alias("s"),
            stop.alias("e"),
        ))  # fmt: skip
    span = c.select("category", F.explode(F.array(*spans)).alias("b")).select("category", "b.*")
    span = span.where(F.col("s") <= F.col("e"))
    # Both events of a span from one pass over the cases, not a union that computes it twice.
    edges = F.array(
        F.struct(F.col("s").alias("day"), F.lit(1).alias("n")),
        F.struct(F.date_add("e", 1).alias("day"), F.lit(-1).alias("n")),
    )
    events = (
        span.select("category", "age_bucket", F.explode(edges).alias("v"))
        .groupBy("category", "age_bucket", F.col("v.day").alias("day"))
        .agg(F.sum("v.n").alias("n"))
    )
    buckets = F.array(*[F.lit(b[0]) for b in BUCKETS])
    spine = starts.select(
        F.col("category").alias("_c"), F.explode(F.sequence(F.col("start"), end)).alias("_d")
    ).select("_c", "_d", F.explode(buckets).alias("_b"))
    joined = spine.join(
        events,
        spine["_c"].eqNullSafe(events.category)
        & (spine["_b"] == events.age_bucket)
        & (spine["_d"] == events.day),
        "left",
    ).select(
        F.col("_c").alias("category"),
        F.col("_b").alias("age_bucket"),
        F.col("_d").alias("day"),
        F.coalesce(events.n, F.lit(0)).alias("n"),
    )
    running = (
        Window.partitionBy("category", "age_bucket")
        .orderBy("day")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    return (
        joined.withColumn("open_cases", F.sum("n").over(running).cast("int"))
        .where(F.col("open_cases") > 0)
        .select("day", "category", "age_bucket", "open_cases")
    )
