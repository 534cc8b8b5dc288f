"""Blocks of raw rows -> Kafka messages (key, Confluent wire value), column by column.

Same bytes as normalize() + CaseEncoder, the reference path taken by rows the columns miss."""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from sf311.contract.city import SF_LAT, SF_LONG
from sf311.contract.schema import SCHEMAS_DIR, SOURCE_NAMES, layout, load_schema
from sf311.ingest.extract import PageBlock, PageRows
from sf311.ingest.files import LineBlock, RawBatch
from sf311.ingest.normalize import KNOWN_COLUMNS, DeadLetter, _hour_ms, normalize
from sf311.ingest.produce import dead_letter_message
from sf311.ingest.records import CaseEncoder, avro_long

Message = tuple[bytes | None, bytes]
Messages = tuple[list[Message], list[Message]]

# The fields _encode writes, in order; an encoder of another layout takes the reference path.
COLUMNAR_LAYOUT = layout(load_schema(SCHEMAS_DIR / "case.v2.avsc"))

_HOUR = 3_600_000
_EPOCH = datetime(1970, 1, 1)
# A float literal Arrow's cast reads as float() does; other forms ('1e3', 'nan') take normalize().
_DECIMAL = r"^-?[0-9]{1,4}(\.[0-9]{1,24})?$"
_JSON_PLAIN = r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$"
_ISO_SHAPE = "0000-00-00T00:00:00.000"
_EXPORT_SHAPE = "00/00/0000 00:00:00 _M"
# A timestamp column of at least 1000 rows, under 1 distinct value in 8, is parsed per value.
_FEW_DISTINCT_FROM, _FEW_DISTINCT_SHARE = 1000, 8
# A block of JSON lines Arrow cannot read is halved down to this many lines.
_SMALLEST_SPLIT = 64
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def _shape_mask(shape: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chars = np.frombuffer(shape.encode(), np.uint8)
    digits = chars == ord("0")
    return digits, ~digits & (chars != ord("_")), chars


_ISO = _shape_mask(_ISO_SHAPE)
_EXPORT = _shape_mask(_EXPORT_SHAPE)


class _Text:
    """A string column as numpy views: starts, byte lengths (0 = null or empty), data."""

    __slots__ = ("array", "starts", "lengths", "data")

    def __init__(self, array: pa.Array) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if array.type == pa.large_string():
            array = array.cast(pa.string())
        self.array = array
        n = len(array)
        _, offsets_buf, data_buf = array.buffers()
        offsets = np.frombuffer(offsets_buf, np.int32, n + 1, array.offset * 4).astype(np.int64)
        self.starts = offsets[:-1]
        self.lengths = np.diff(offsets)
        if array.null_count:
            self.lengths[~_valid(array)] = 0
        # One zero byte stands in for an empty buffer, so that clipped indexes stay valid.
        self.data = np.frombuffer(data_buf, np.uint8) if data_buf else np.zeros(1, np.uint8)

    def present(self) -> np.ndarray:
        """Return the mask of rows holding a non-empty string."""
        return self.lengths > 0

    def fixed(self, rows: np.ndarray, width: int) -> np.ndarray:
        """Return the first `width` bytes of each of `rows` as a (rows, width) matrix."""
        first = self.starts[rows[0]] if len(rows) else 0
        end = first + width * len(rows)
        if end <= len(self.data) and np.array_equal(
            self.starts[rows], np.arange(first, end, width)
        ):
            # Back to back in the data buffer (nulls take no bytes): a view, no copy.
            return self.data[first : first + width * len(rows)].reshape(-1, width)
        index = self.starts[rows, None] + np.arange(width)
        return self.data[np.minimum(index, len(self.data) - 1)]

    def clean_edges(self) -> np.ndarray:
        """Return the mask of rows whose first and last bytes are printable ASCII, no space."""
        # Every character str.strip() removes starts with a byte outside that range.
        present = self.present()
        ends = self.starts + np.maximum(self.lengths - 1, 0)
        first = self.data[np.minimum(self.starts, len(self.data) - 1)]
        last = self.data[np.minimum(ends, len(self.data) - 1)]
        clean = (first > 0x20) & (first < 0x7F) & (last > 0x20) & (last < 0x7F)
        return clean | ~present


def _valid(array: pa.Array) -> np.ndarray:
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), bool)


def _text_of(array: pa.Array | None, n: int) -> tuple[_Text, np.ndarray]:
    """Return a column as _Text and the mask of rows whose value is there but is no string."""
    if array is None or array.type == pa.null():
        return _Text(pa.nulls(n, pa.string())), np.zeros(n, bool)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return _Text(array), np.zeros(n, bool)
    return _Text(pa.nulls(n, pa.string())), _valid(array)


def _digits(text: _Text, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (value, ok) of ASCII digit strings of 1..width characters."""
    n = len(text.lengths)
    value = np.zeros(n, np.int64)
    ok = (text.lengths >= 1) & (text.lengths <= width)
    rows = np.flatnonzero(ok)
    if len(rows):
        digits = text.fixed(rows, width).astype(np.int64) - ord("0")
        inside = np.arange(width) < text.lengths[rows, None]
        ok[rows] = ((digits >= 0) & (digits <= 9) | ~inside).all(axis=1)
        acc = np.zeros(len(rows), np.int64)
        for i in range(width):
            acc = np.where(inside[:, i], acc * 10 + digits[:, i], acc)
        value[rows] = acc
    return value, ok


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _number(matrix: np.ndarray, first: int, last: int) -> np.ndarray:
    value = matrix[:, first].astype(np.int64)
    for i in range(first + 1, last):
        value = value * 10 + matrix[:, i]
    return value


class _Clock:
    """LA-local wall times -> epoch ms, through the reference's per-hour function."""

    def __init__(self) -> None:
        self._hours: dict[int, int] = {}

    def instant(self, local_ms: np.ndarray) -> np.ndarray:
        """Return epoch ms of local (America/Los_Angeles) epoch-ms wall times."""
        hours = local_ms // _HOUR
        unique, inverse = np.unique(hours, return_inverse=True)
        known = self._hours
        for hour in unique.tolist():
            if hour not in known:
                at = _EPOCH + timedelta(hours=hour)
                known[hour] = _hour_ms(at.year, at.month, at.day, at.hour)
        base = np.array([known[h] for h in unique.tolist()], np.int64)
        return base[inverse.reshape(-1)] + (local_ms - hours * _HOUR)

    def parse(self, text: _Text, utc: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Return (epoch ms, ok) of the API's and the export's local timestamp shapes, or with
        `utc` of Socrata's fixed timestamps (2023-11-28T13:05:12.345Z)."""
        n = len(text.lengths)
        if n >= _FEW_DISTINCT_FROM and text.array.null_count < n:
            # Snapshot times (data_as_of, data_loaded_at, :updated_at) repeat: each one once.
            encoded = pc.dictionary_encode(text.array)
            if len(encoded.dictionary) * _FEW_DISTINCT_SHARE < n:
                values, ok = self.parse(_Text(encoded.dictionary), utc)
                index = np.asarray(pc.fill_null(encoded.indices, 0), np.int64)
                return values[index], ok[index] & (text.lengths > 0)
        if utc:
            ends = text.data[np.minimum(text.starts + text.lengths - 1, len(text.data) - 1)]
            zoned = (text.lengths == len(_ISO_SHAPE) + 1) & (ends == ord("Z"))
            wall, ok = self._wall(_Text(pc.utf8_slice_codeunits(text.array, 0, len(_ISO_SHAPE))))
            ok &= zoned
            return np.where(ok, wall, 0), ok
        local, ok = self._wall(text)
        result = np.zeros(n, np.int64)
        if ok.any():
            result[ok] = self.instant(local[ok])
        return result, ok

    def _wall(self, text: _Text) -> tuple[np.ndarray, np.ndarray]:
        """Return (wall-clock epoch ms, ok) of the API's and the export's timestamp shapes."""
        n = len(text.lengths)
        local = np.zeros(n, np.int64)
        ok = np.zeros(n, bool)
        for width, (digit, fixed, chars) in ((23, _ISO), (22, _EXPORT)):
            rows = np.flatnonzero(text.lengths == width)
            if not len(rows):
                continue
            raw = text.fixed(rows, width)
            # Bytes below '0' wrap around to large values: one comparison checks digits.
            values = raw - np.uint8(ord("0"))
            good = (values[:, digit] <= 9).all(axis=1)
            good &= (raw[:, fixed] == chars[fixed]).all(axis=1)
            if width == 23:
                year, month, day = (
                    _number(values, 0, 4),
                    _number(values, 5, 7),
                    _number(values, 8, 10),
                )
                hour, millis = _number(values, 11, 13), _number(values, 20, 23)
                good &= hour <= 23
            else:
                year, month, day = (
                    _number(values, 6, 10),
                    _number(values, 0, 2),
                    _number(values, 3, 5),
                )
                hour12, millis = _number(values, 11, 13), 0
                noon = raw[:, 20] == ord("P")
                good &= (hour12 >= 1) & (hour12 <= 12) & (noon | (raw[:, 20] == ord("A")))
                hour = hour12 % 12 + np.where(noon, 12, 0)
            minute, second = _number(values, 14, 16), _number(values, 17, 19)
            leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
            month_ok = (month >= 1) & (month <= 12)
            last_day = _DAYS_IN_MONTH[np.where(month_ok, month, 1)] + (leap & (month == 2))
            good &= (year >= 1) & month_ok & (day >= 1) & (day <= last_day)
            good &= (minute <= 59) & (second <= 59)
            days = _days_from_civil(year, month, day)
            ms = (days * 24 + hour) * _HOUR + minute * 60_000 + second * 1000 + millis
            local[rows] = ms
            ok[rows] = good
        return local, ok


class _Short(NamedTuple):
    """A column of short Avro values: row i's bytes are matrix[i, :sizes[i]]."""

    matrix: np.ndarray
    sizes: np.ndarray


def _constant(value: bytes, n: int) -> _Short:
    """Return the same bytes on each of n rows."""
    matrix = np.broadcast_to(np.frombuffer(value, np.uint8), (n, len(value)))
    return _Short(matrix, np.full(n, len(value), np.int64))


def _binary(run: list[_Short]) -> pa.Array:
    """Return a binary array whose row i joins row i of each of a run of short columns."""
    matrices = [short.matrix for short in run]
    keeps = [np.arange(short.matrix.shape[1]) < short.sizes[:, None] for short in run]
    matrix = matrices[0] if len(run) == 1 else np.concatenate(matrices, axis=1)
    keep = keeps[0] if len(run) == 1 else np.concatenate(keeps, axis=1)
    # Row-major boolean indexing keeps each row's bytes in order, rows one after another.
    data = matrix[keep]
    n = len(keep)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(sum(short.sizes for short in run), out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _join(parts: list[_Short | pa.Array]) -> pa.Array:
    """Return each row's parts joined; each run of short columns is packed by numpy first."""
    columns: list[pa.Array] = []
    run: list[_Short] = []
    for part in parts:
        if isinstance(part, _Short):
            run.append(part)
            continue
        if run:
            columns.append(_binary(run))
            run = []
        columns.append(part)
    if run:
        columns.append(_binary(run))
    # Arrow's cost grows with the number of columns, not their width: runs keep it small.
    return pc.binary_join_element_wise(*columns, b"", null_handling="replace", null_replacement=b"")


def _varints(values: np.ndarray, present: np.ndarray | None) -> _Short:
    """Return Avro longs (zigzag varints), union-tagged if `present` (absent rows: tag only)."""
    zigzag = ((values << 1) ^ (values >> 63)).view(np.uint64)
    size = np.ones(len(values), np.int64)
    rest = zigzag >> np.uint64(7)
    while rest.any():
        size += rest != 0
        rest >>= np.uint64(7)
    width = int(size.max()) if len(size) else 1
    tag = 0 if present is None else 1
    matrix = np.empty((len(values), width + tag), np.uint8)
    for i in range(width):
        group = ((zigzag >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8)
        matrix[:, tag + i] = group | np.where(i < size - 1, 0x80, 0).astype(np.uint8)
    if present is None:
        return _Short(matrix, size)
    matrix[:, 0] = np.where(present, 2, 0)
    return _Short(matrix, np.where(present, size + 1, 1))


def _doubles(values: np.ndarray, present: np.ndarray) -> _Short:
    matrix = np.empty((len(values), 9), np.uint8)
    matrix[:, 0] = np.where(present, 2, 0)
    matrix[:, 1:] = values.astype("<f8").view(np.uint8).reshape(-1, 8)
    return _Short(matrix, np.where(present, 9, 1))


def _string_parts(text: _Text, present: np.ndarray) -> list[_Short | pa.Array]:
    """Return [union tag + length, body] of a nullable string field (body null when absent)."""
    body = text.array
    if not present.all():
        body = pc.if_else(pa.array(present), body, pa.scalar(None, pa.string()))
    return [_varints(text.lengths, present), body.view(pa.binary())]


def _union_string(value: str) -> bytes:
    """Return the Avro bytes of a non-null value of a nullable string field."""
    body = value.encode()
    return b"\x02" + avro_long(len(body)) + body


def _choice(values: list[bytes], index: np.ndarray) -> _Short:
    """Return values[index[i]] on row i."""
    width = max(len(value) for value in values)
    table = np.zeros((len(values), width), np.uint8)
    for i, value in enumerate(values):
        table[i, : len(value)] = np.frombuffer(value, np.uint8)
    sizes = np.array([len(value) for value in values], np.int64)
    return _Short(table[index], sizes[index])


class BlockEncoder:
    """Turns blocks of raw rows of one origin into case messages and dead-letter messages."""

    def __init__(self, encoder: CaseEncoder, origin: str) -> None:
        self._encoder = encoder
        self._origin = origin
        self._columnar = layout(encoder.schema) == COLUMNAR_LAYOUT
        self._clock = _Clock()
        # Rows sent through normalize() instead of the columns; a share for tests and logs.
        self.reference_rows = 0
        # Rows holding a value per source column no case field names (kept in `extra`).
        self.unknown_columns: Counter[str] = Counter()
        self._lock = threading.Lock()

    def reference(self, raw: dict[str, Any]) -> tuple[bool, Message]:
        """Return (is a case, message) of one row by normalize() and CaseEncoder."""
        self.reference_rows += 1
        case = normalize(raw, self._origin)
        if isinstance(case, DeadLetter):
            return False, dead_letter_message(case, self._origin)
        return True, (str(case["service_request_id"]).encode(), self._encoder.encode(case))

    def _count_unknown(self, found: Counter[str]) -> None:
        # Blocks are encoded in several threads at once.
        with self._lock:
            self.unknown_columns.update(+found)

    def _all_reference(self, rows: Sequence[dict[str, Any]]) -> Messages:
        self._count_unknown(
            Counter(
                key
                for raw in rows
                for key in raw.keys() - KNOWN_COLUMNS
                if raw[key] is not None and raw[key] != ""
            )
        )
        cases: list[Message] = []
        dead: list[Message] = []
        for raw in rows:
            is_case, message = self.reference(raw)
            (cases if is_case else dead).append(message)
        return cases, dead

    def rows(self, rows: list[dict[str, Any]]) -> Messages:
        """Return the (key, value) messages of the cases and of the dead letters among rows."""
        if not self._columnar or not rows:
            return self._all_reference(rows)
        odd = np.zeros(len(rows), bool)
        try:
            # One struct array infers every column at once (the union of the rows' keys).
            structs = pa.array(rows)
            columns = _url_of_media(
                {field.name: structs.field(i) for i, field in enumerate(structs.type)}
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns = _columns_by_name(rows, odd)
        return self.table(columns, len(rows), rows.__getitem__, odd)

    def page(
        self, rows: Sequence[dict[str, Any]], start: int = 0, stop: int | None = None
    ) -> Messages:
        """Return the messages of rows [start, stop) of a SODA page, from its Arrow columns."""
        stop = len(rows) if stop is None else stop
        if not isinstance(rows, PageRows) or not self._columnar:
            return self.rows(list(rows[start:stop]))
        n = stop - start
        columns = {name: c.slice(start, n) for name, c in _url_of_media(rows.columns()).items()}
        return self.table(columns, n, lambda i: rows[start + i], np.zeros(n, bool))

    def block(self, rows: RawBatch | PageBlock) -> Messages:
        """Return the messages of a source's block: a RawBatch or rows of a SODA page."""
        if isinstance(rows, PageBlock):
            return self.page(rows.rows, rows.start, rows.stop)
        return self.batch(rows)

    def batch(self, batch: RawBatch) -> Messages:
        """Return the messages of a RawBatch of a file (JSON lines, CSV cells or dicts)."""
        if batch.kind == "lines":
            return self.json_lines(batch.items, batch.row)
        if batch.kind == "cells":
            return self.cells(batch.header or [], cast(list[list[str]], batch.items), batch.row)
        return self.rows(cast(list[dict[str, Any]], batch.items))

    def cells(
        self, header: list[str], cells: list[list[str]], row: Callable[[int], dict[str, Any]]
    ) -> Messages:
        """Return the messages of CSV records; a ragged one takes the reference path."""
        n, width = len(cells), len(header)
        if not self._columnar or not n or len(set(header)) != width:
            return self._all_reference([row(i) for i in range(n)])
        odd = np.fromiter((len(values) != width for values in cells), bool, n)
        if odd.any():
            blank = [""] * width
            cells = [blank if bad else values for values, bad in zip(cells, odd, strict=True)]
        columns = {
            name: pa.array(column, pa.string())
            for name, column in zip(header, zip(*cells, strict=True), strict=True)
        }
        return self.table(columns, n, row, odd)

    def json_lines(self, lines: Sequence[bytes], row: Callable[[int], dict[str, Any]]) -> Messages:
        """Return the messages of a block of JSON lines (blank ones left out)."""
        if not self._columnar:
            return self._all_reference([row(i) for i in range(len(lines))])
        try:
            data = lines.data if isinstance(lines, LineBlock) else b"".join(lines)
            options = pj.ReadOptions(use_threads=False)
            parsed = pj.read_json(io.BytesIO(data), read_options=options)
        except pa.ArrowInvalid:
            parsed = None
        # Lines Arrow reads otherwise than orjson (two objects, none, a leading BOM) fall back.
        if parsed is None or parsed.num_rows != len(lines) or data.startswith(b"\xef\xbb\xbf"):
            if len(lines) <= _SMALLEST_SPLIT:
                return self._all_reference([row(i) for i in range(len(lines))])
            # Halves until the lines Arrow cannot read are in small blocks of their own.
            half = len(lines) // 2
            first = self.json_lines(lines[:half], row)
            second = self.json_lines(lines[half:], lambda i: row(half + i))
            return first[0] + second[0], first[1] + second[1]
        columns = _url_of_media(dict(zip(parsed.column_names, parsed.columns, strict=True)))
        return self.table(columns, len(lines), row, np.zeros(len(lines), bool))

    def table(
        self,
        columns: dict[str, pa.Array],
        n: int,
        row: Callable[[int], dict[str, Any]],
        odd: np.ndarray,
    ) -> Messages:
        """Return the messages of a block given as columns; row(i) is raw row i, `odd` known odd."""
        if not self._columnar:
            return self._all_reference([row(i) for i in range(n)])
        unknown: Counter[str] = Counter()
        for name in columns.keys() - KNOWN_COLUMNS:
            column = columns[name]
            valid = n - column.null_count
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                valid -= pc.sum(pc.equal(column, "")).as_py() or 0
            unknown[name] = valid
        self._count_unknown(unknown)
        fast, keys, values = self._encode(columns, n, odd.copy())
        if fast.all():
            return list(zip(keys, values, strict=True)), []
        cases: list[Message] = []
        dead: list[Message] = []
        messages = zip(keys, values, strict=True)
        done = 0
        for i in np.flatnonzero(~fast).tolist():
            cases.extend(islice(messages, i - done))
            done = i + 1
            is_case, message = self.reference(row(i))
            (cases if is_case else dead).append(message)
        cases.extend(messages)
        return cases, dead

    def _encode(
        self, columns: dict[str, pa.Array], n: int, odd: np.ndarray
    ) -> tuple[np.ndarray, list[bytes], list[bytes]]:
        # Each field becomes a column of its Avro bytes, joined per row; odd rows go to normalize().
        def text(name: str) -> _Text:
            column, wrong = _text_of(columns.get(name), n)
            odd[wrong] = True
            return column

        rid_text = text("service_request_id")
        rid, rid_ok = _digits(rid_text, 18)
        odd |= ~rid_ok | (rid == 0)
        requested, ok = self._clock.parse(text("requested_datetime"))
        odd |= ~ok
        parts: list[_Short | pa.Array] = [_constant(self._encoder.header, n), _varints(rid, None)]
        parts.append(_varints(requested, None))
        times = {}
        for name in ("updated_datetime", "closed_date", "data_as_of", "data_loaded_at"):
            column = text(name)
            value, ok = self._clock.parse(column)
            present = column.present()
            odd |= present & ~ok
            times[name] = _varints(value, present)
        parts += [times["updated_datetime"], times["closed_date"]]

        def string(name: str, column: _Text | None = None) -> list[_Short | pa.Array]:
            column = column or text(SOURCE_NAMES.get(name, name))
            odd[~column.clean_edges()] = True
            return _string_parts(column, column.present())

        def small_int(name: str) -> _Short:
            column = text(name)
            value, ok = _digits(column, 9)
            present = column.present()
            odd[present & ~ok] = True
            return _varints(value, present)

        for name in ("status_description", "status_notes", "agency_responsible"):
            parts += string(name)
        for name in ("service_name", "service_subtype", "service_details", "address", "street"):
            parts += string(name)
        parts.append(small_int("supervisor_district"))
        for name in ("neighborhood", "analysis_neighborhood", "police_district"):
            parts += string(name)
        lat, lon, issue = self._location(text("lat"), text("long"), odd)
        parts += [lat, lon, issue]
        parts += string("source")
        media = text("media_url")
        first = media.data[np.minimum(media.starts, len(media.data) - 1)]
        odd |= media.present() & (first == ord("{"))
        parts += string("media_url", media)
        parts.append(small_int("bos_2012"))
        parts += [times["data_as_of"], times["data_loaded_at"]]
        parts += self._extra(columns, n, odd)
        parts.append(_constant(_union_string(self._origin), n))
        updated = text(SOURCE_NAMES["source_updated_at"])
        value, ok = self._clock.parse(updated, utc=True)
        present = updated.present()
        odd |= present & ~ok
        parts.append(_varints(value, present))
        fast = ~odd
        joined = _join(parts)
        values = joined.filter(pa.array(fast)).to_pylist()
        keys = pc.cast(pa.array(rid[fast]), pa.string()).view(pa.binary()).to_pylist()
        return fast, keys, values

    def _location(self, lat_text: _Text, lon_text: _Text, odd: np.ndarray) -> list[_Short]:
        """Return the lat, long and location_issue parts; a row with no lat/long pair is odd."""
        coords = []
        for column in (lat_text, lon_text):
            ok = np.asarray(
                pc.fill_null(pc.match_substring_regex(column.array, _DECIMAL), False), bool
            )
            odd |= ~ok
            chosen = pc.if_else(pa.array(ok), column.array, pa.scalar("0"))
            coords.append(np.asarray(pc.cast(chosen, pa.float64())))
        lat, lon = coords
        zero = (lat == 0) | (lon == 0)
        inside = (SF_LAT[0] <= lat) & (lat <= SF_LAT[1]) & (SF_LONG[0] <= lon) & (lon <= SF_LONG[1])
        outside = ~zero & ~inside
        # normalize() keeps such raw coordinates in extra, so bronze still holds them.
        odd |= outside
        flags = [b"\x00", _union_string("zero"), _union_string("out_of_bounds")]
        issue = _choice(flags, np.where(zero, 1, np.where(outside, 2, 0)))
        return [_doubles(lat, inside), _doubles(lon, inside), issue]

    def _extra(
        self, columns: dict[str, pa.Array], n: int, odd: np.ndarray
    ) -> list[_Short | pa.Array]:
        """Return the parts of `extra`: unknown columns as sorted, compact JSON."""
        pieces = []
        for name in sorted(columns.keys() - KNOWN_COLUMNS):
            column, wrong = _text_of(columns[name], n)
            odd |= wrong
            present = column.present()
            if not present.any():
                continue
            if not _is_plain(name):
                odd |= present
                continue
            plain = pc.fill_null(pc.match_substring_regex(column.array, _JSON_PLAIN), True)
            odd |= ~np.asarray(plain, bool)
            body = pc.if_else(pa.array(present), column.array, pa.scalar(None, pa.string()))
            pieces.append(pc.binary_join_element_wise(f',"{name}":"', body, '"', ""))
        if not pieces:
            return [_constant(b"\x00", n)]
        # Each piece starts with a comma, cut off below; 'skip' would drop rows of null pieces.
        inner = pc.binary_join_element_wise(*pieces, "", null_handling="replace")
        present = np.asarray(pc.binary_length(inner)) > 0
        inner = pc.utf8_slice_codeunits(inner, 1)
        text = _Text(pc.binary_join_element_wise("{", inner, "}", ""))
        return _string_parts(text, present)


def _is_plain(name: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F and c not in '"\\' for c in name)


def _url_of_media(columns: dict[str, Any]) -> dict[str, Any]:
    """Return the columns with a media_url of {url: ...} objects replaced by its url."""
    media = columns.get("media_url")
    if media is not None and pa.types.is_struct(media.type):
        if isinstance(media, pa.ChunkedArray):
            media = media.combine_chunks()
        if media.type.get_field_index("url") < 0:
            columns["media_url"] = pa.nulls(len(media), pa.string())
        else:
            # struct_field, unlike .field(), keeps a missing object's null.
            columns["media_url"] = pc.struct_field(media, "url")
    return columns


def _columns_by_name(rows: list[dict[str, Any]], odd: np.ndarray) -> dict[str, pa.Array]:
    """Return string columns of rows whose values mix types; marks rows with non-strings odd."""
    names: set[str] = set()
    for raw in rows:
        names.update(raw)
    columns: dict[str, pa.Array] = {}
    for name in names - {"point", "point_geom"}:
        values = [raw.get(name) for raw in rows]
        if name == "media_url":
            values = [v.get("url") if v.__class__ is dict else v for v in values]
        wrong = np.fromiter((v is not None and v.__class__ is not str for v in values), bool)
        odd |= wrong
        kept = [None if bad else v for v, bad in zip(values, wrong, strict=True)]
        columns[name] = pa.array(kept, pa.string())
    return columns
