"""Features and target of the resolution-time model, shared by training (Spark) and serving.

Only what is known when a case is opened is a feature: never status, notes, closed_date or
updated_datetime. The Spark and the pure-Python versions below must agree value for value;
tests/unit/model/test_model_features.py holds them to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sf311.contract import quality
from sf311.contract.city import LOCAL_TZ, LOCAL_ZONE
from sf311.lakehouse import silver
from sf311.model.columns import CATEGORICAL

MISSING = "(missing)"
# Trees need a number; 0.0 lies far outside San Francisco, so a split isolates it.
NO_COORDINATE = 0.0
LABEL = "label"
MAX_HOURS_DEFAULT = 2 * 365 * 24.0
# Closures that end a case without resolving it: their duration is no resolution time.
NOT_RESOLUTIONS = (quality.DUPLICATE, quality.TRANSFERRED, quality.CANCELLED_OR_INVALID)


def _category(col: Column) -> Column:
    text = F.trim(col.cast("string"))
    return F.when(text.isNull() | (text == ""), F.lit(MISSING)).otherwise(text)


def _coordinate(col: Column) -> Column:
    value = col.cast("double")
    return F.when(value.isNull() | F.isnan(value), F.lit(NO_COORDINATE)).otherwise(value)


def with_features(cases: DataFrame) -> DataFrame:
    """Return `cases` with the model's feature columns added (categoricals as clean strings)."""
    local = F.from_utc_timestamp(F.col("requested_datetime"), LOCAL_TZ)
    return cases.withColumns(
        {
            **{c: _category(F.col(c)) for c in CATEGORICAL},
            # Spark counts Sunday as 1; Monday = 0 matches Python's weekday().
            "hour": F.hour(local).cast("double"),
            "day_of_week": ((F.dayofweek(local) + 5) % 7).cast("double"),
            "month": F.month(local).cast("double"),
            "lat": _coordinate(F.col("lat")),
            "long": _coordinate(F.col("long")),
        }
    )


def _closure_kind(cases: DataFrame) -> Column:
    # A silver table written before closure_kind existed gets it by the same rule.
    if "closure_kind" in cases.columns:
        return F.col("closure_kind")
    return silver.closure_kind(F.col("status_notes"), F.col("closed_date").isNotNull())


def with_label(cases: DataFrame, max_hours: float = MAX_HOURS_DEFAULT) -> DataFrame:
    """Return `cases` with `hours`, `label` = log1p(hours) and `label_status`: ok, or why not
    (open, negative, too_long, or the closure kind of a closure that resolved nothing)."""
    hours = (
        F.unix_micros(F.col("closed_date")) - F.unix_micros(F.col("requested_datetime"))
    ) / F.lit(3.6e9)
    kind = _closure_kind(cases)
    # Unknown closures stay: their notes say nothing either way, and most old cases have none.
    status = (
        F.when(F.col("closed_date").isNull(), "open")
        .when(hours < 0, "negative")
        .when(kind.isin(*NOT_RESOLUTIONS), kind)
        .when(hours >= max_hours, "too_long")
        .otherwise("ok")
    )
    return cases.withColumns({"hours": hours, "label_status": status}).withColumn(
        LABEL, F.when(F.col("label_status") == "ok", F.log1p("hours"))
    )


def labelled(cases: DataFrame, max_hours: float = MAX_HOURS_DEFAULT) -> DataFrame:
    """Return the closed cases with a usable duration that were not closed as a duplicate,
    transfer or cancellation, with features and label."""
    return with_features(with_label(cases, max_hours)).where(F.col("label_status") == "ok")


def label_counts(cases: DataFrame, max_hours: float = MAX_HOURS_DEFAULT) -> dict[str, int]:
    """Return how many cases are ok, open, negative, too_long, duplicate, transferred or
    cancelled_or_invalid."""
    rows = with_label(cases, max_hours).groupBy("label_status").count().collect()
    return {r["label_status"]: int(r["count"]) for r in rows}


def _clean_category(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or MISSING


def _clean_coordinate(value: Any) -> float:
    if value is None:
        return NO_COORDINATE
    number = float(value)
    return NO_COORDINATE if math.isnan(number) else number


def local_time_parts(requested: datetime) -> tuple[float, float, float]:
    """Return (hour, day_of_week Monday=0, month) of an instant in San Francisco local time."""
    if requested.tzinfo is None:
        # A naive value is an instant in UTC, as in silver.cases.
        requested = requested.replace(tzinfo=UTC)
    local = requested.astimezone(LOCAL_ZONE)
    return float(local.hour), float(local.weekday()), float(local.month)


def record_features(case: Mapping[str, Any]) -> dict[str, Any]:
    """Return the FEATURES of one case record: categoricals as strings, the rest as floats."""
    out: dict[str, Any] = {c: _clean_category(case.get(c)) for c in CATEGORICAL}
    out["hour"], out["day_of_week"], out["month"] = local_time_parts(case["requested_datetime"])
    out["lat"] = _clean_coordinate(case.get("lat"))
    out["long"] = _clean_coordinate(case.get("long"))
    return out
