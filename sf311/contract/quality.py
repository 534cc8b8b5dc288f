"""What a case's values may be: the quality flags of an accepted case and the closure-kind rule,
in plain Python so that Spark (silver), SQL (views, dashboard) and pandas read one definition."""

from __future__ import annotations

import re

from sf311.contract.city import SF_LAT, SF_LONG

# Each flag names an impossible or missing value; the value itself is null in silver and `cases`.
CLOSED_BEFORE_OPENED = "closed_before_opened"
CLOSED_DATE_INVALID = "closed_date_invalid"
UPDATED_DATETIME_INVALID = "updated_datetime_invalid"
LOCATION_OUTSIDE_SF = "location_outside_sf"
LOCATION_MISSING = "location_missing"
CATEGORY_UNKNOWN = "category_unknown"

FLAGS: dict[str, str] = {
    CLOSED_BEFORE_OPENED: "closed_date is before requested_datetime; resolution_hours is null.",
    CLOSED_DATE_INVALID: "closed_date before Rules.earliest or in the future; it is null.",
    UPDATED_DATETIME_INVALID: "updated_datetime before Rules.earliest or in the future; it is "
    "replaced by closed_date, else requested_datetime.",
    LOCATION_OUTSIDE_SF: "lat/long outside San Francisco's bounding box; both are null.",
    LOCATION_MISSING: "no lat/long, or 0; both are null.",
    CATEGORY_UNKNOWN: "no service_name.",
}
# Flags that void a value a figure reads: coordinates, and a resolution time.
LOCATION_FLAGS = (LOCATION_OUTSIDE_SF, LOCATION_MISSING)
RESOLUTION_FLAGS = (CLOSED_BEFORE_OPENED, CLOSED_DATE_INVALID)

# The ingest's location_issue of coordinates it nulled for lying outside the city.
OUT_OF_BOUNDS_ISSUE = "out_of_bounds"

RESOLVED = "resolved"
DUPLICATE = "duplicate"
TRANSFERRED = "transferred"
CANCELLED_OR_INVALID = "cancelled_or_invalid"
UNKNOWN = "unknown"
CLOSURE_KINDS = (RESOLVED, DUPLICATE, TRANSFERRED, CANCELLED_OR_INVALID, UNKNOWN)

# The closure kind of a closed case: the first pattern found in status_notes wins, else unknown.
# Patterns use only syntax Java and Python read alike (Spark's rlike and re.search). Order
# matters: "Case Resolved - duplicate" is a duplicate, "Case Transferred - Area was cleaned" a
# transfer; administrative closures and "Unable to Locate" close a case without acting on it.
CLOSURE_RULE: tuple[tuple[str, str], ...] = (
    (DUPLICATE, r"(?i)\bduplicate\b"),
    (TRANSFERRED, r"(?i)\btransferred\b"),
    (
        CANCELLED_OR_INVALID,
        r"(?i)\binvalid\b|\bcancel+(ed|ation)?\b|\badmin(istrative)? clos|\bunable to locate\b"
        r"|\binsufficient information\b",
    ),
    (
        RESOLVED,
        r"(?i)\bresolved\b|\bcompleted?\b|\bdone\b|\bserviced\b|\brepaired\b|\bfixed\b"
        r"|\breplaced\b|\bremoved\b|\babated\b",
    ),
)
# Lower-case words every match of a kind's pattern contains: Spark looks for them before it runs
# the pattern, a far dearer scan of free text.
CLOSURE_KEYWORDS: dict[str, tuple[str, ...]] = {
    DUPLICATE: ("duplicate",),
    TRANSFERRED: ("transferred",),
    CANCELLED_OR_INVALID: ("invalid", "cancel", "admin", "unable to locate", "insufficient"),
    RESOLVED: (
        "resolved", "complete", "done", "serviced", "repaired", "fixed", "replaced", "removed",
        "abated",
    ),
}  # fmt: skip
_COMPILED = tuple((kind, re.compile(pattern)) for kind, pattern in CLOSURE_RULE)


def closure_kind(status_notes: str | None, closed: bool) -> str:
    """Return the closure kind of a case: unknown while open or when the notes say nothing."""
    if not closed or not status_notes:
        return UNKNOWN
    for kind, pattern in _COMPILED:
        if pattern.search(status_notes):
            return kind
    return UNKNOWN


def in_sf(lat: float, long: float) -> bool:
    """Return True when a coordinate pair lies in San Francisco's bounding box."""
    return SF_LAT[0] <= lat <= SF_LAT[1] and SF_LONG[0] <= long <= SF_LONG[1]
