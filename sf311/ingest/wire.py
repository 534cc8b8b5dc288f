"""Raw rows -> Kafka messages (key, Confluent wire value), fused normalize and Avro encode.

The reference path builds a Case dict with normalize() and encodes it with CaseEncoder.
Here one pass turns each raw field straight into its Avro bytes through per-column tables:
repeated values (categories, districts, snapshot times) are encoded once and looked up
after, and LA-local timestamps are summed from a cached per-hour UTC offset, the minute
and second, and the milliseconds. A row off the common path (no valid id or time, an
unparseable number, a location that is missing, zero or outside San Francisco) goes
through the reference path, so both give the same bytes; the unit tests check that on the
real files.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from typing import Any

from sf311.ingest.normalize import (
    _EXTRA_JSON,
    KNOWN_COLUMNS,
    SF_LAT,
    SF_LONG,
    DeadLetter,
    _media_url,
    _text,
    normalize,
    parse_int,
    parse_timestamp,
)
from sf311.ingest.produce import dead_letter_message
from sf311.ingest.records import CaseEncoder, avro_long

Message = tuple[bytes | None, bytes]

_NULL = b"\x00"
_SOME = b"\x02"
_DOUBLE = struct.Struct("<d").pack
_SMALL = [avro_long(n) for n in range(4096)]
# Entries per table; a full table starts over (see _remember).
_CACHE_LIMIT = 1 << 16
_HOUR = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}")
_CLOCK = {f":{m:02d}:{s:02d}.": m * 60_000 + s * 1000 for m in range(60) for s in range(60)}
_MILLIS = {f"{ms:03d}": ms for ms in range(1000)}

# The case schema's fields as this module writes them, in order ('?' = union with null).
LAYOUT = (
    ("service_request_id", "long"),
    ("requested_datetime", "timestamp"),
    ("updated_datetime", "?timestamp"),
    ("closed_date", "?timestamp"),
    ("status_description", "?string"),
    ("status_notes", "?string"),
    ("agency_responsible", "?string"),
    ("service_name", "?string"),
    ("service_subtype", "?string"),
    ("service_details", "?string"),
    ("address", "?string"),
    ("street", "?string"),
    ("supervisor_district", "?int"),
    ("neighborhood", "?string"),
    ("analysis_neighborhood", "?string"),
    ("police_district", "?string"),
    ("lat", "?double"),
    ("long", "?double"),
    ("location_issue", "?string"),
    ("source", "?string"),
    ("media_url", "?string"),
    ("bos_2012", "?int"),
    ("data_as_of", "?timestamp"),
    ("data_loaded_at", "?timestamp"),
    ("extra", "?string"),
    ("origin", "?string"),
)


class _OffPath(Exception):
    """The row needs the reference path (dead letter, flagged value or unusual shape)."""


def field_kind(avro_type: Any) -> str:
    """Return a field's Avro type as 'long', 'timestamp', '?string' ('?' = union with null)."""
    prefix = ""
    if isinstance(avro_type, list):
        if len(avro_type) != 2 or avro_type[0] != "null":
            return repr(avro_type)
        prefix, avro_type = "?", avro_type[1]
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis" and avro_type["type"] == "long":
            return prefix + "timestamp"
        avro_type = avro_type.get("type")
    return prefix + str(avro_type)


def fits_layout(schema: dict[str, Any]) -> bool:
    """Return whether a record schema is the field layout this module writes."""
    fields = tuple((f["name"], field_kind(f["type"])) for f in schema.get("fields", []))
    return fields == LAYOUT


def _string(text: str) -> bytes:
    body = text.encode()
    return _SOME + avro_long(len(body)) + body


def _remember(cache: dict[Any, bytes], value: Any, fragment: bytes) -> bytes:
    # A full table starts over: memory stays bounded and the frequent values come back.
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[value] = fragment
    return fragment


def _epoch_ms(hours: dict[str, int], value: Any) -> int:
    """Return epoch ms of a source timestamp, raising _OffPath if it has none."""
    if value.__class__ is str and len(value) == 23:
        hour = value[:13]
        base = hours.get(hour)
        if base is None and _HOUR.fullmatch(hour):
            base = parse_timestamp(hour + ":00:00.000")
            if base is not None:
                hours[hour] = base
        clock, millis = _CLOCK.get(value[13:20]), _MILLIS.get(value[20:])
        if base is not None and clock is not None and millis is not None:
            return base + clock + millis
    ms = parse_timestamp(value)
    if ms is None:
        raise _OffPath
    return ms


def fused_encoder(header: bytes, origin: str) -> Callable[[dict[str, Any]], Message]:
    """Return a function of a raw row to its (key, wire value), raising _OffPath off the path.

    The tables live in this closure: per-value fragments of text, small ints and times
    (the same bytes whichever column they are in) and per-hour UTC offsets.
    """
    texts: dict[Any, bytes] = {None: _NULL}
    ints: dict[Any, bytes] = {None: _NULL, "": _NULL}
    times: dict[Any, bytes] = {None: _NULL, "": _NULL}
    extras: dict[tuple[str, str], bytes] = {}
    hours: dict[str, int] = {}
    text, number, moment = texts.get, ints.get, times.get
    origin_fragment = _string(origin)

    def text_miss(value: Any) -> bytes:
        if value.__class__ is not str:
            text = _text(value)
            return _NULL if text is None else _string(text)
        body = value.strip().encode()
        size = len(body)
        fragment = _SOME + (_SMALL[size] if size < 4096 else avro_long(size)) + body
        return _remember(texts, value, fragment if size else _NULL)

    def int_miss(value: Any) -> bytes:
        parsed = parse_int(value)
        if parsed is None or not -(1 << 31) <= parsed < 1 << 31:
            raise _OffPath
        return _remember(ints, value, _SOME + avro_long(parsed))

    def time_miss(value: Any) -> bytes:
        if not value:
            return _NULL
        return _remember(times, value, _SOME + avro_long(_epoch_ms(hours, value)))

    def extra(raw: dict[str, Any]) -> bytes:
        unknown = raw.keys() - KNOWN_COLUMNS
        if not unknown:
            return _NULL
        kept = {key: raw[key] for key in unknown if raw[key] is not None and raw[key] != ""}
        if not kept:
            return _NULL
        if len(kept) == 1:
            ((key, value),) = kept.items()
            if value.__class__ is str:
                fragment = extras.get((key, value))
                if fragment is None:
                    fragment = _remember(extras, (key, value), _string(_EXTRA_JSON(kept)))
                return fragment
        return _string(_EXTRA_JSON(kept))

    def message(raw: dict[str, Any]) -> Message:
        get = raw.get
        rid_raw = get("service_request_id")
        if rid_raw.__class__ is not str or not rid_raw.isdigit():
            raise _OffPath
        rid = int(rid_raw)
        if rid == 0:
            raise _OffPath
        try:
            lat, lon = float(get("lat")), float(get("long"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _OffPath from None
        # NaN, zero and faraway points all fail this test: normalize() flags them.
        if not (SF_LAT[0] <= lat <= SF_LAT[1] and SF_LONG[0] <= lon <= SF_LONG[1]):
            raise _OffPath
        media = get("media_url")
        media_text = None if media is None else _media_url(media)
        # A dict key that is unhashable raises TypeError here: RowEncoder takes it off path.
        value = b"".join(
            (
                header,
                avro_long(rid),
                avro_long(_epoch_ms(hours, get("requested_datetime"))),
                moment(v := get("updated_datetime")) or time_miss(v),
                moment(v := get("closed_date")) or time_miss(v),
                text(v := get("status_description")) or text_miss(v),
                text(v := get("status_notes")) or text_miss(v),
                text(v := get("agency_responsible")) or text_miss(v),
                text(v := get("service_name")) or text_miss(v),
                text(v := get("service_subtype")) or text_miss(v),
                text(v := get("service_details")) or text_miss(v),
                text(v := get("address")) or text_miss(v),
                text(v := get("street")) or text_miss(v),
                number(v := get("supervisor_district")) or int_miss(v),
                text(v := get("neighborhoods_sffind_boundaries")) or text_miss(v),
                text(v := get("analysis_neighborhood")) or text_miss(v),
                text(v := get("police_district")) or text_miss(v),
                _SOME + _DOUBLE(lat),
                _SOME + _DOUBLE(lon),
                _NULL,
                text(v := get("source")) or text_miss(v),
                _NULL if media_text is None else _string(media_text),
                number(v := get("bos_2012")) or int_miss(v),
                moment(v := get("data_as_of")) or time_miss(v),
                moment(v := get("data_loaded_at")) or time_miss(v),
                extra(raw),
                origin_fragment,
            )
        )
        return str(rid).encode(), value

    return message


class RowEncoder:
    """Turns raw rows of one origin into case messages and dead-letter messages."""

    def __init__(self, encoder: CaseEncoder, origin: str) -> None:
        self._encoder = encoder
        self._origin = origin
        self._fused = fused_encoder(encoder.header, origin) if fits_layout(encoder.schema) else None

    def messages(self, rows: Iterable[dict[str, Any]]) -> tuple[list[Message], list[Message]]:
        """Return the (key, value) messages of the cases and of the dead letters among rows."""
        cases: list[Message] = []
        dead: list[Message] = []
        fused, origin, encode = self._fused, self._origin, self._encoder.encode
        for raw in rows:
            if fused is not None:
                try:
                    cases.append(fused(raw))
                    continue
                except (_OffPath, TypeError):
                    pass
            case = normalize(raw, origin)
            if isinstance(case, DeadLetter):
                dead.append(dead_letter_message(case, origin))
            else:
                cases.append((str(case["service_request_id"]).encode(), encode(case)))
        return cases, dead
