"""Columns the resolution-time model reads; no pyspark here, so API clients can import them."""

from __future__ import annotations

CATEGORICAL: tuple[str, ...] = (
    "service_name",
    "service_subtype",
    "agency_responsible",
    "neighborhood",
    "supervisor_district",
    "police_district",
    "source",
)
NUMERIC: tuple[str, ...] = ("hour", "day_of_week", "month", "lat", "long")
FEATURES: tuple[str, ...] = CATEGORICAL + NUMERIC
# Columns a request must carry; everything else on the case is ignored.
INPUT_COLUMNS: tuple[str, ...] = ("requested_datetime", *CATEGORICAL, "lat", "long")
