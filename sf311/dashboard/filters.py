"""The dashboard's filters and the parameterized SQL WHERE clause they turn into."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sf311.contract.city import LOCAL_ZONE

# Filter field -> column of `cases`. Only these fixed names ever reach the SQL text; the
# chosen values travel as parameters.
COLUMNS: dict[str, str] = {
    "categories": "service_name",
    "subtypes": "service_subtype",
    "neighborhoods": "neighborhood",
    "districts": "supervisor_district",
    "statuses": "status_description",
    "sources": "source",
}


@dataclass(frozen=True)
class Filters:
    """A date range in San Francisco days (both ends included) and optional value lists.

    An empty tuple means "any value". Frozen and made of tuples so that it hashes, which is what
    Streamlit's cache keys on.
    """

    start: date
    end: date
    categories: tuple[str, ...] = ()
    subtypes: tuple[str, ...] = ()
    neighborhoods: tuple[str, ...] = ()
    districts: tuple[int, ...] = ()
    statuses: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"filter range ends ({self.end}) before it starts ({self.start})")

    @property
    def days(self) -> int:
        """Return the number of days in the range, both ends included."""
        return (self.end - self.start).days + 1

    def previous(self) -> Filters:
        """Return the same filters over the period of the same length just before this one."""
        return replace(
            self,
            start=self.start - timedelta(days=self.days),
            end=self.start - timedelta(days=1),
        )

    def bounds(self) -> tuple[datetime, datetime]:
        """Return the range as UTC instants [first local midnight, midnight after the end)."""
        return local_midnight(self.start), local_midnight(self.end + timedelta(days=1))


def local_midnight(day: date) -> datetime:
    """Return the UTC instant of midnight at the start of `day` in San Francisco."""
    return datetime.combine(day, time(0), tzinfo=LOCAL_ZONE).astimezone(UTC)


def where(
    filters: Filters, time_column: str | None = "requested_datetime", prefix: str = ""
) -> tuple[str, dict[str, Any]]:
    """Return a SQL condition for `filters` and its named parameters.

    `time_column` is the timestamp the date range applies to (None: no date condition);
    `prefix` keeps parameter names apart when two conditions meet in one statement.
    """
    parts: list[str] = []
    params: dict[str, Any] = {}
    if time_column is not None:
        if time_column not in ("requested_datetime", "closed_date"):
            raise ValueError(f"unknown time column {time_column!r}")
        t0, t1 = filters.bounds()
        params[f"{prefix}t0"], params[f"{prefix}t1"] = t0, t1
        parts.append(f"{time_column} >= %({prefix}t0)s AND {time_column} < %({prefix}t1)s")
    for field, column in COLUMNS.items():
        values = getattr(filters, field)
        if values:
            params[f"{prefix}{field}"] = list(values)
            parts.append(f"{column} = ANY(%({prefix}{field})s)")
    return (" AND ".join(parts) or "TRUE"), params
