"""Rows of SF 311 files (DataSF Export CSV, API-named CSV, JSON array or JSON lines), streamed."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any, cast, overload

import numpy as np
import orjson
import pyarrow as pa
from tqdm import tqdm

from sf311.errors import InputError

# DataSF's "Export CSV" headers -> API field names; other headers pass through unchanged.
DISPLAY_NAMES = {
    "CaseID": "service_request_id",
    "Opened": "requested_datetime",
    "Closed": "closed_date",
    "Updated": "updated_datetime",
    "Status": "status_description",
    "Status Notes": "status_notes",
    "Responsible Agency": "agency_responsible",
    "Category": "service_name",
    "Request Type": "service_subtype",
    "Request Details": "service_details",
    "Address": "address",
    "Street": "street",
    "Supervisor District": "supervisor_district",
    "Neighborhood": "neighborhoods_sffind_boundaries",
    "Analysis Neighborhood": "analysis_neighborhood",
    "Police District": "police_district",
    "Latitude": "lat",
    "Longitude": "long",
    "Point": "point",
    "Point Geom": "point_geom",
    "Source": "source",
    "Media URL": "media_url",
    "BOS_2012": "bos_2012",
    "data_as_of": "data_as_of",
    "data_loaded_at": "data_loaded_at",
}

# The key under which a JSON line that is no JSON object is passed on, to be dead-lettered.
UNPARSEABLE = "_unparseable_line"
_CHUNK = 1 << 20
_NEWLINE, _RETURN, _BRACE = b"\n\r{"
_SEPARATORS = re.compile(r"[\s,]*")


class _Counted(io.RawIOBase):
    """A binary reader that moves a progress bar by the bytes it hands out."""

    def __init__(self, raw: IO[bytes], bar: tqdm) -> None:
        self._raw = raw
        self._bar = bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._bar.update(n)
        return n or 0


def _open_binary(path: Path, bar: tqdm) -> IO[bytes]:
    raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed through the wrapper
    counted = io.BufferedReader(_Counted(raw, bar), buffer_size=_CHUNK)
    return cast(IO[bytes], gzip.GzipFile(fileobj=counted) if path.suffix == ".gz" else counted)


def _open_text(path: Path, bar: tqdm) -> IO[str]:
    return io.TextIOWrapper(_open_binary(path, bar), encoding="utf-8-sig", newline="")


def csv_row(header: list[str], values: list[str]) -> dict[str, str]:
    """Return one CSV record as a dict; a ragged line keeps its cells (surplus ones numbered)."""
    if len(values) == len(header):
        return dict(zip(header, values, strict=True))
    row = dict(zip(header, values, strict=False))
    row.update({f"_column_{i}": v for i, v in enumerate(values[len(header) :], len(header))})
    return row


def _csv_cells(text: IO[str]) -> tuple[list[str], Iterator[list[str]]]:
    reader = csv.reader(text)
    header = [DISPLAY_NAMES.get(h.strip(), h.strip()) for h in next(reader, [])]
    return header, (values for values in reader if values)


def _json_array(text: IO[str]) -> Iterator[dict[str, Any]]:
    decoder = json.JSONDecoder()
    buffer, pos, eof = "", 0, False
    while True:
        pos = _SEPARATORS.match(buffer, pos).end()  # type: ignore[union-attr]
        if pos < len(buffer) and buffer[pos] == "]":
            return
        item, end = None, 0
        if pos < len(buffer):
            try:
                item, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                if eof:
                    raise
        # An item that fails or ends at the buffer's edge may be cut short: read on.
        if end == 0 or (end == len(buffer) and not eof):
            if eof:
                raise json.JSONDecodeError("JSON array is not closed", buffer, pos)
            more = text.read(_CHUNK)
            eof = not more
            buffer, pos = buffer[pos:] + more, 0
            continue
        yield item  # type: ignore[misc]
        pos = end


def _json_items(text: IO[str]) -> tuple[str, Iterator[Any]]:
    """Return ('lines', raw JSON lines) or ('rows', parsed items of a JSON array)."""
    first = text.read(1)
    while first.isspace():
        first = text.read(1)
    if first == "[":
        return "rows", _json_array(text)
    lines = chain([first + text.readline()], text)
    return "lines", (line for line in lines if line.strip())


@dataclass(frozen=True, slots=True)
class RawBatch:
    """Rows not yet turned into dicts: JSON lines (bytes), CSV cells (with header) or dicts."""

    kind: str
    items: Sequence[Any]
    header: list[str] | None = None

    def row(self, index: int) -> dict[str, Any]:
        """Return row `index` of the batch as the dict the reference normalizer takes."""
        item = self.items[index]
        if self.kind == "lines":
            return json_line(item.decode())
        if self.kind == "cells":
            return csv_row(self.header or [], item)
        return cast(dict[str, Any], item)


def json_line(line: str) -> dict[str, Any]:
    """Return the object on one JSON line, or {UNPARSEABLE: line} so it is dead-lettered."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        # orjson is strict JSON; the json module also takes NaN, huge ints and lone surrogates.
        try:
            value = json.loads(line)
        except ValueError:
            return {UNPARSEABLE: line[:10_000]}
    return value if isinstance(value, dict) else {UNPARSEABLE: line[:10_000]}


def _blank(line: bytes) -> bool:
    stripped = line.strip()
    # A line of other whitespace (U+00A0, U+3000, ...) is blank for str.strip() too.
    return not stripped or (stripped[:1] != b"{" and not line.decode().strip())


class LineBlock(Sequence[bytes]):
    """Whole JSON lines kept as one bytes block; split into lines only when one is asked for."""

    __slots__ = ("data", "_count", "_lines")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data
        self._count = count
        self._lines: list[bytes] | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if self._lines is None:
            self._lines = self.data.splitlines(keepends=True)
        return self._lines[index]


def _non_blank_lines(data: bytes, ends: np.ndarray) -> Sequence[bytes]:
    """Return the non-blank lines of `data` (whole lines; `ends` = offsets after each end)."""
    view = np.frombuffer(data, np.uint8)
    # The common file needs no splitting: every line starts with "{" and ends with a lone \n.
    if (
        len(ends)
        and ends[-1] == len(data)
        and view[0] == _BRACE
        and b"\r" not in data
        and (view[ends[:-1]] == _BRACE).all()
    ):
        return LineBlock(data, len(ends))
    return [line for line in data.splitlines(keepends=True) if not _blank(line)]


def _line_blocks(binary: IO[bytes], first: bytes, size: int) -> Iterator[Sequence[bytes]]:
    """Yield the non-blank lines of a JSON-lines byte stream, in blocks cut every `size` lines."""
    pieces: list[bytes] = []
    ends: list[np.ndarray] = []
    held = lines = 0
    chunk = first
    while chunk:
        view = np.frombuffer(chunk, np.uint8)
        # Lines end at \n, \r or \r\n as in text mode; the empty line inside \r\n is blank.
        at = np.flatnonzero((view == _NEWLINE) | (view == _RETURN)) + 1
        while lines + len(at) >= size:
            take = size - lines
            cut = int(at[take - 1])
            ends.append(at[:take] + held)
            yield _non_blank_lines(b"".join([*pieces, chunk[:cut]]), np.concatenate(ends))
            chunk, at = chunk[cut:], at[take:] - cut
            pieces, ends, held, lines = [], [], 0, 0
        if chunk:
            pieces.append(chunk)
            ends.append(at + held)
            held, lines = held + len(chunk), lines + len(at)
        chunk = binary.read(_CHUNK)
    if pieces:
        yield _non_blank_lines(b"".join(pieces), np.concatenate(ends))


def _json_line_batches(path: Path, size: int, bar: tqdm) -> Iterator[RawBatch] | None:
    """Return batches of the byte lines of a JSON-lines file, None if it is no such file."""
    binary = _open_binary(path, bar)
    first = binary.read(_CHUNK).removeprefix(b"\xef\xbb\xbf").lstrip()
    if not first.startswith(b"{"):
        binary.close()
        return None

    def batches() -> Iterator[RawBatch]:
        with binary:
            for lines in _line_blocks(binary, first, size):
                if lines:
                    yield RawBatch("lines", lines)

    return batches()


def file_kind(path: Path) -> str:
    """Return a file's type from its name: csv, json, jsonl or ndjson (InputError if none)."""
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1].lower()
    if kind not in ("csv", "json", "jsonl", "ndjson"):
        raise InputError(
            f"{path}: unknown file type: name it .csv, .json, .jsonl or .ndjson (optionally .gz)"
        )
    return kind


def check_file(path: Path) -> None:
    """Return None if `path` is a non-empty readable file of a known type, else raise InputError."""
    file_kind(path)
    try:
        with open(path, "rb") as binary:
            first = binary.read(1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file: check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory: give the path of a file in it") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror or err}): check it") from None
    if not first:
        raise InputError(f"{path}: is empty (0 bytes): nothing to ingest")


def csv_header(path: Path) -> list[str]:
    """Return the column names of a CSV file's first line, DataSF display names as API names."""
    with tqdm(disable=True) as bar, _open_text(path, bar) as text:
        return _csv_cells(text)[0]


def undecodable_line(path: Path) -> int | None:
    """Return the number of the first line holding bytes that are not UTF-8, None if none does."""
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as binary:
        for number, line in enumerate(binary, 1):
            try:
                line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                return number
    return None


def reading_error(path: Path, err: BaseException) -> InputError | None:
    """Return the InputError, naming the file and line, that an error of reading `path` means;
    None if `err` is no such error."""
    # Arrow's JSON reader and string kernels fail on bad UTF-8 too, in the encode threads.
    if isinstance(err, UnicodeDecodeError | pa.ArrowInvalid):
        line = undecodable_line(path)
        if line is None:
            return None
        return InputError(
            f"{path}: line {line}: bytes that are not UTF-8: save the file as UTF-8 and run "
            "again (rows before that line may have been sent; sending them twice is harmless)"
        )
    if isinstance(err, gzip.BadGzipFile | EOFError | zlib.error):
        return InputError(f"{path}: not a whole gzip file ({err}): compress it again")
    if isinstance(err, csv.Error):
        return InputError(f"{path}: not a readable CSV file ({err})")
    if isinstance(err, json.JSONDecodeError):
        return InputError(f"{path}: not a readable JSON file ({err.msg}): check how it was saved")
    return None


def _progress(path: Path, progress: bool | None) -> tqdm:
    # disable=None hides the bar when stderr is not a terminal (CI, Airflow logs).
    return tqdm(
        total=path.stat().st_size,
        unit="B",
        unit_scale=True,
        desc=path.name,
        disable=None if progress is None else not progress,
        file=sys.stderr,
        mininterval=0.5,
    )


def read_batches(path: Path, size: int, progress: bool | None = None) -> Iterator[RawBatch]:
    """Yield a file's rows in RawBatches of `size`, read but not yet parsed into dicts."""
    path = Path(path)
    kind = file_kind(path)
    with _progress(path, progress) as bar:
        if kind != "csv" and (line_batches := _json_line_batches(path, size, bar)) is not None:
            yield from line_batches
            return
        with _open_text(path, bar) as text:
            header = None
            if kind == "csv":
                header, items = _csv_cells(text)
                batch_kind = "cells"
            else:
                json_kind, items = _json_items(text)
                if json_kind == "lines":
                    items = map(json_line, items)
                batch_kind = "rows"
            while chunk := list(islice(items, size)):
                yield RawBatch(batch_kind, chunk, header)


def read_rows(path: Path, progress: bool | None = None) -> Iterator[dict[str, Any]]:
    """Yield the raw rows of a CSV/JSON/JSON-lines file (optionally .gz) with API field names."""
    path = Path(path)
    kind = file_kind(path)
    with _progress(path, progress) as bar, _open_text(path, bar) as text:
        if kind == "csv":
            header, cells = _csv_cells(text)
            for values in cells:
                yield csv_row(header, values)
            return
        json_kind, items = _json_items(text)
        if json_kind == "rows":
            yield from items
            return
        for line in items:
            yield json_line(line)
