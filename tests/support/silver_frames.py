"""Silver-shaped case frames from the API-named sample CSVs and synthetic cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from sf311.contract.city import LOCAL_TZ, SF_LAT, SF_LONG
from sf311.contract.schema import CASE_LAYOUT

_SPARK_TYPES = {
    "long": T.LongType(),
    "int": T.IntegerType(),
    "double": T.DoubleType(),
    "string": T.StringType(),
    "timestamp": T.TimestampType(),
}
# silver.cases' case columns with their Spark types, from the case schema.
SILVER_COLUMNS = T.StructType(
    [
        T.StructField(name, _SPARK_TYPES[kind.lstrip("?")], kind.startswith("?"))
        for name, kind in CASE_LAYOUT
    ]
)
_TIMESTAMPS = ("requested_datetime", "updated_datetime", "closed_date")


def local_to_utc(values: pd.Series) -> pd.Series:
    """Return floating San Francisco local timestamps as UTC instants."""
    parsed = pd.to_datetime(values, errors="coerce")
    # In the repeated autumn hour the earlier (daylight) reading is taken.
    aware = parsed.dt.tz_localize(LOCAL_TZ, ambiguous=True, nonexistent="shift_forward")
    return aware.dt.tz_convert("UTC")


def silver_cases_from_api_csv(path: Path) -> pd.DataFrame:
    """Return a CSV with Socrata API field names as a pandas frame shaped like silver.cases."""
    return silver_cases_from_api_frame(pd.read_csv(path, dtype={"supervisor_district": "Int32"}))


def silver_cases_from_api_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Return cases with Socrata API field names (strings) as a frame shaped like silver.cases."""
    raw = raw.rename(columns={"neighborhoods_sffind_boundaries": "neighborhood"})
    for col in ("service_request_id", "lat", "long"):
        raw[col] = pd.to_numeric(raw[col], errors="coerce")
    raw["supervisor_district"] = pd.to_numeric(raw["supervisor_district"]).astype("Int32")
    for col in _TIMESTAMPS:
        if col in raw:
            raw[col] = local_to_utc(raw[col])
    out = pd.DataFrame({f.name: raw[f.name] if f.name in raw else None for f in SILVER_COLUMNS})
    # As silver holds them: no coordinates outside San Francisco.
    valid = out["lat"].between(*SF_LAT) & out["long"].between(*SF_LONG)
    out.loc[~valid, ["lat", "long"]] = None
    return out


def to_spark(spark: SparkSession, cases: pd.DataFrame) -> DataFrame:
    """Return a silver-shaped pandas frame as a Spark DataFrame with the silver types; columns
    it lacks are null."""
    cases = cases.reindex(columns=SILVER_COLUMNS.names)
    rows = cases.astype(object).where(cases.notna(), None)
    records = [
        tuple(v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in row)
        for row in rows.itertuples(index=False, name=None)
    ]
    return spark.createDataFrame(records, SILVER_COLUMNS)


def synthetic_silver_cases(rows: int, seed: int = 0, start: str = "2017-01-01") -> pd.DataFrame:
    """Return seeded synthetic silver-shaped cases whose durations depend on the features."""
    rng = np.random.default_rng(seed)
    categories = np.array([f"Category {i}" for i in range(12)])
    base = np.linspace(0.5, 7.5, categories.size)
    cat = rng.integers(0, categories.size, rows)
    sub = rng.integers(0, 5, rows)
    source = rng.choice(np.array(["Phone", "Web", "Mobile/Open311"]), rows)
    requested = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(
        np.sort(rng.integers(0, 730 * 86_400_000, rows)), unit="ms"
    )
    hour = requested.hour.to_numpy()
    log_hours = (
        base[cat]
        + 0.3 * sub
        - 0.6 * (source == "Web")
        + 0.8 * (hour < 6)
        + rng.normal(0, 0.7, rows)
    )
    hours = np.expm1(np.clip(log_hours, 0, 9.5))
    closed = requested + pd.to_timedelta(np.round(hours * 3_600_000), unit="ms")
    lat = rng.uniform(37.70, 37.81, rows)
    return pd.DataFrame(
        {
            "service_request_id": np.arange(1, rows + 1, dtype=np.int64),
            "requested_datetime": requested,
            "updated_datetime": closed,
            "closed_date": closed,
            "status_description": "Closed",
            "status_notes": "done",
            "agency_responsible": np.char.add("Queue ", (cat % 6).astype(str)),
            "service_name": categories[cat],
            "service_subtype": np.char.add(np.char.add(categories[cat], " / "), sub.astype(str)),
            "supervisor_district": (rng.integers(1, 12, rows)).astype("int32"),
            "neighborhood": np.char.add("Hood ", rng.integers(0, 20, rows).astype(str)),
            "police_district": rng.choice(np.array(["MISSION", "BAYVIEW", "CENTRAL"]), rows),
            "lat": lat,
            "long": rng.uniform(-122.51, -122.37, rows),
            "source": source,
        }
    )
