"""The dashboard's filters and the parameterized SQL WHERE clauses they turn into, over `cases`,
the gold tables and the open-case views."""

from __future__ import annotations

from collections.abc import Mapping
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
    "police_districts": "police_district",
    "sources": "source",
}
# The same filters over the views of open cases, which name the category `category`.
OPEN_CASE_COLUMNS: dict[str, str] = {**COLUMNS, "categories": "category"}
# Filter field -> column of each gold table; a filter a table lacks cannot apply to it.
_VOLUME_COLUMNS = {
    "categories": "category",
    "neighborhoods": "neighborhood",
    "districts": "supervisor_district",
    "police_districts": "police_district",
    "sources": "source",
}
GOLD_COLUMNS: dict[str, dict[str, str]] = {
    "gold.daily_volume": _VOLUME_COLUMNS,
    "gold.monthly_volume": _VOLUME_COLUMNS,
    "gold.backlog_daily": {"categories": "category"},
    "gold.resolution_stats": {"categories": "category", "neighborhoods": "neighborhood"},
    "gold.sla_daily": {"categories": "category"},
    # Not gold, but read the same way: a table by day with few of the filters' columns.
    "overdue_history": {"categories": "category"},
}
# Gold tables keyed by `month` (its first day) instead of `day`.
BY_MONTH = ("gold.resolution_stats", "gold.monthly_volume")
LABELS: dict[str, str] = {
    "categories": "category",
    "subtypes": "subtype",
    "neighborhoods": "neighborhood",
    "districts": "supervisor district",
    "police_districts": "police district",
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
    police_districts: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"filter range ends ({self.end}) before it starts ({self.start})")

    @property
    def days(self) -> int:
        """Return the number of days in the range, both ends included."""
        return (self.end - self.start).days + 1

    @property
    def grain(self) -> str:
        """Return the step of the range's time series, a date_trunc unit: day up to 6 months,
        week up to 3 years, month beyond (a point a day over 18 years is 6,500 per line: more
        than a chart shows, and seconds for a browser to draw)."""
        return "day" if self.days <= 184 else "week" if self.days <= 1096 else "month"

    def previous(self) -> Filters:
        """Return the same filters over the period of the same length just before this one."""
        return replace(
            self,
            start=self.start - timedelta(days=self.days),
            end=self.start - timedelta(days=1),
        )

    def month_parts(self) -> tuple[Filters | None, Filters | None, Filters | None]:
        """Return the range split into the days before its first whole calendar month, its
        whole months, and the days after them; None for a part it lacks (a range without a
        whole month is all days before)."""
        first = self.start if self.start.day == 1 else _next_month(self.start)
        after = (self.end + timedelta(days=1)).replace(day=1)
        if first >= after:
            return self, None, None
        day = timedelta(days=1)
        return (
            replace(self, end=first - day) if first > self.start else None,
            replace(self, start=first, end=after - day),
            replace(self, start=after) if after <= self.end else None,
        )

    def bounds(self) -> tuple[datetime, datetime]:
        """Return the range as UTC instants [first local midnight, midnight after the end)."""
        return local_midnight(self.start), local_midnight(self.end + timedelta(days=1))


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def local_midnight(day: date) -> datetime:
    """Return the UTC instant of midnight at the start of `day` in San Francisco."""
    return datetime.combine(day, time(0), tzinfo=LOCAL_ZONE).astimezone(UTC)


def where(
    filters: Filters,
    time_column: str | None = "requested_datetime",
    prefix: str = "",
    columns: dict[str, str] = COLUMNS,
) -> tuple[str, dict[str, Any]]:
    """Return a SQL condition for `filters` and its named parameters.

    `time_column` is the timestamp the date range applies to (None: no date condition);
    `prefix` keeps parameter names apart when two conditions meet in one statement; `columns`
    maps filter fields to the queried relation's columns (fields it lacks are left out).
    """
    parts: list[str] = []
    params: dict[str, Any] = {}
    if time_column is not None:
        if time_column not in ("requested_datetime", "closed_date"):
            raise ValueError(f"unknown time column {time_column!r}")
        t0, t1 = filters.bounds()
        params[f"{prefix}t0"], params[f"{prefix}t1"] = t0, t1
        parts.append(f"{time_column} >= %({prefix}t0)s AND {time_column} < %({prefix}t1)s")
    _values(filters, columns, prefix, parts, params)
    return (" AND ".join(parts) or "TRUE"), params


def _values(
    filters: Filters, columns: dict[str, str], prefix: str, parts: list[str], params: dict
) -> None:
    for field, column in columns.items():
        values = getattr(filters, field)
        name = f"{prefix}{field}"
        # One value as an equality: Postgres then walks an index on (column, time) in time
        # order, which it cannot do for `= ANY` (a category's newest cases: 3.7 s -> 0.04 s).
        if len(values) == 1:
            params[name] = values[0]
            parts.append(f"{column} = %({name})s")
        elif values:
            params[name] = list(values)
            parts.append(f"{column} = ANY(%({name})s)")


def gold_where(filters: Filters, table: str, prefix: str = "") -> tuple[str, dict[str, Any]]:
    """Return a SQL condition on gold `table` for `filters` and its named parameters.

    The date range applies to `day`, or for a table by month to every `month` it touches;
    filters the table does not carry are left out (see unapplied()).
    """
    if table not in GOLD_COLUMNS:
        raise ValueError(f"unknown gold table {table!r}")
    column, first = (
        ("month", filters.start.replace(day=1)) if table in BY_MONTH else ("day", filters.start)
    )
    params: dict[str, Any] = {f"{prefix}d0": first, f"{prefix}d1": filters.end}
    parts = [f"{column} >= %({prefix}d0)s AND {column} <= %({prefix}d1)s"]
    _values(filters, GOLD_COLUMNS[table], prefix, parts, params)
    return " AND ".join(parts), params


def unapplied(filters: Filters, columns: dict[str, str]) -> tuple[str, ...]:
    """Return the labels of the chosen filters that `columns` cannot apply, in filter order."""
    return tuple(
        label for field, label in LABELS.items() if getattr(filters, field) and field not in columns
    )


class BadLinkRange(ValueError):
    """A link's ?from=&to= that is not a range of two ISO days, the first not after the last."""


def link_range(params: Mapping[str, str]) -> tuple[date, date] | None:
    """Return the date range a link asks for with ?from=YYYY-MM-DD&to=YYYY-MM-DD, or None when
    it names neither; raise BadLinkRange for one alone, a malformed day or a reversed range."""
    if "from" not in params and "to" not in params:
        return None
    try:
        start, end = date.fromisoformat(params["from"]), date.fromisoformat(params["to"])
    except (KeyError, ValueError) as err:
        raise BadLinkRange(
            f"the link's date range from={params.get('from')!r} to={params.get('to')!r} is not "
            "two days as YYYY-MM-DD"
        ) from err
    if start > end:
        raise BadLinkRange(f"the link's date range starts after it ends ({start} > {end})")
    return start, end
