"""Raw SF 311 rows (API JSON, API-named CSV, DataSF export) -> Case records or dead letters."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sf311.contract.city import LOCAL_ZONE
from sf311.contract.quality import OUT_OF_BOUNDS_ISSUE, in_sf
from sf311.contract.schema import CASE_FIELDS, SOURCE_NAMES
from sf311.ingest.files import UNPARSEABLE

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# One encoder object: json.dumps with options builds a new one on every call.
_EXTRA_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
_MS = timedelta(milliseconds=1)

_STRINGS = (
    ("status_description", "status_description"),
    ("status_notes", "status_notes"),
    ("agency_responsible", "agency_responsible"),
    ("service_name", "service_name"),
    ("service_subtype", "service_subtype"),
    ("service_details", "service_details"),
    ("address", "address"),
    ("street", "street"),
    ("neighborhoods_sffind_boundaries", "neighborhood"),
    ("analysis_neighborhood", "analysis_neighborhood"),
    ("police_district", "police_district"),
    ("source", "source"),
)
_INTS = (("supervisor_district", "supervisor_district"), ("bos_2012", "bos_2012"))
# (source column, field) of the optional instants.
_OPTIONAL_TIMES = tuple(
    (SOURCE_NAMES.get(name, name), name)
    for name in (
        "updated_datetime", "closed_date", "data_as_of", "data_loaded_at", "source_updated_at"
    )
)  # fmt: skip
# Fields normalize() derives rather than reads from a column of the same name.
_DERIVED = ("location_issue", "extra", "origin")
# Columns consumed into typed fields; everything else lands in `extra`.
KNOWN_COLUMNS = frozenset(
    [SOURCE_NAMES.get(name, name) for name in CASE_FIELDS if name not in _DERIVED]
    + ["point", "point_geom"]
)

# One case record: the fields of the newest case schema (CASE_FIELDS), times in epoch ms.
Case = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A raw row that cannot become a Case, with the reason why."""

    reason: str
    raw: dict[str, Any]


@lru_cache(maxsize=1 << 17)
def _hour_ms(year: int, month: int, day: int, hour: int) -> int:
    """Return epoch ms of a local America/Los_Angeles hour (fold=0 on the repeated hour)."""
    local = datetime(year, month, day, hour, tzinfo=LOCAL_ZONE)
    return (local - _EPOCH) // _MS


def _local_ms(dt: datetime) -> int:
    return (
        _hour_ms(dt.year, dt.month, dt.day, dt.hour)
        + dt.minute * 60_000
        + dt.second * 1000
        + dt.microsecond // 1000
    )


@lru_cache(maxsize=1 << 17)
def _prefix_ms(prefix: str, year: int, month: int, day: int, hour: int) -> int:
    return _hour_ms(year, month, day, hour)


def parse_timestamp(value: Any) -> int | None:
    """Return epoch ms of a source timestamp (floating = Los Angeles time), None if unparseable."""
    if value.__class__ is not str:
        return None
    if len(value) == 23 and value[10] == "T":
        # The API's own shape, 2023-11-28T05:46:59.000: the hour's offset is cached by prefix.
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is not None:
            return (dt - _EPOCH) // _MS
        base = _prefix_ms(value[:13], dt.year, dt.month, dt.day, dt.hour)
        return base + dt.minute * 60_000 + dt.second * 1000 + dt.microsecond // 1000
    text = value.strip()
    if len(text) == 22 and text[2] == "/" and text[19] == " ":
        # DataSF export: 06/29/2019 09:48:00 PM
        try:
            hour = int(text[11:13])
            if not 1 <= hour <= 12 or text[20:] not in ("AM", "PM"):
                return None
            hour = hour % 12 + (12 if text[20] == "P" else 0)
            dt = datetime(
                int(text[6:10]), int(text[0:2]), int(text[3:5]), hour,
                int(text[14:16]), int(text[17:19]),
            )  # fmt: skip
        except ValueError:
            return None
        return _local_ms(dt)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is not None:
        return (dt - _EPOCH) // _MS
    return _local_ms(dt)


def parse_int(value: Any) -> int | None:
    """Return an int from an int, a float or a numeric string ('3', '3.0'), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        value = text
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def parse_float(value: Any) -> float | None:
    """Return a finite float from a number or numeric string, else None."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number - number == 0 else None


def parse_point(value: Any) -> tuple[float, float] | None:
    """Return (lat, long) from a Socrata point in any of its forms, else None."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.upper().startswith("POINT"):
            inner = text[text.find("(") + 1 : text.rfind(")")].split()
            if len(inner) != 2:
                return None
            lon, lat = parse_float(inner[0]), parse_float(inner[1])
            return (lat, lon) if lat is not None and lon is not None else None
        try:
            value = json.loads(text)
        except ValueError:
            try:
                # CSV exports of the API write the location dict with Python quoting.
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
    if not isinstance(value, dict):
        return None
    if "coordinates" in value:
        coords = value["coordinates"]
        if isinstance(coords, list | tuple) and len(coords) == 2:
            lon, lat = parse_float(coords[0]), parse_float(coords[1])
            return (lat, lon) if lat is not None and lon is not None else None
        return None
    lat, lon = parse_float(value.get("latitude")), parse_float(value.get("longitude"))
    return (lat, lon) if lat is not None and lon is not None else None


def _media_url(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("{"):
        try:
            inner = json.loads(text)
        except ValueError:
            return text
        return _media_url(inner) if isinstance(inner, dict) else text
    return text or None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return value.strip() or None


def _locate(
    raw: dict[str, Any], bad: dict[str, Any]
) -> tuple[float | None, float | None, str | None]:
    lat_raw, lon_raw = raw.get("lat"), raw.get("long")
    lat, lon = parse_float(lat_raw), parse_float(lon_raw)
    for key, raw_value, parsed in (("lat", lat_raw, lat), ("long", lon_raw, lon)):
        if parsed is None and raw_value not in (None, ""):
            bad[key] = raw_value
    sources: tuple[str, ...] = ("lat", "long")
    if lat is None or lon is None:
        for sources in (("point",), ("point_geom",)):
            point = parse_point(raw.get(sources[0]))
            if point is not None:
                break
        if point is None:
            return None, None, "missing"
        lat, lon = point
    if lat == 0 or lon == 0:
        return None, None, "zero"
    if not in_sf(lat, lon):
        # The contract's lat/long are null outside the city; bronze keeps the raw values in extra.
        for key in sources:
            bad[key] = raw[key]
        return None, None, OUT_OF_BOUNDS_ISSUE
    return lat, lon, None


def normalize(raw: dict[str, Any], origin: str) -> Case | DeadLetter:
    """Return the typed Case of one raw row, or a DeadLetter saying why it has none."""
    rid_raw = raw.get("service_request_id")
    rid = parse_int(rid_raw)
    if rid is None or rid <= 0:
        if UNPARSEABLE in raw:
            return DeadLetter("unparseable line: not a JSON object", raw)
        if rid_raw is None or rid_raw == "":
            return DeadLetter("missing service_request_id", raw)
        return DeadLetter(f"unparseable service_request_id: {rid_raw!r:.80}", raw)
    req_raw = raw.get("requested_datetime")
    requested = parse_timestamp(req_raw)
    if requested is None:
        if req_raw is None or req_raw == "":
            return DeadLetter("missing requested_datetime", raw)
        return DeadLetter(f"unparseable requested_datetime: {req_raw!r:.80}", raw)

    bad: dict[str, Any] = {}
    get = raw.get
    case: dict[str, Any] = {"service_request_id": rid, "requested_datetime": requested}
    for src, dst in _OPTIONAL_TIMES:
        value = get(src)
        if value:
            parsed = parse_timestamp(value)
            if parsed is None:
                bad[src] = value
            case[dst] = parsed
        else:
            case[dst] = None
    for src, dst in _STRINGS:
        value = get(src)
        if value.__class__ is str:
            case[dst] = value.strip() or None
        else:
            case[dst] = _text(value)
    for src, dst in _INTS:
        value = get(src)
        if value is None or value == "":
            case[dst] = None
        else:
            parsed = case[dst] = parse_int(value)
            if parsed is None:
                bad[src] = value
    case["lat"], case["long"], case["location_issue"] = _locate(raw, bad)
    case["media_url"] = _media_url(raw.get("media_url"))
    for key in raw.keys() - KNOWN_COLUMNS:
        value = raw[key]
        if value is not None and value != "":
            bad[key] = value
    case["extra"] = _EXTRA_JSON(bad) if bad else None
    case["origin"] = origin
    return case
