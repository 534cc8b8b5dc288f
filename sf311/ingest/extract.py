"""Socrata (SODA) pages of SF 311 cases, keyset-paged on (updated_datetime, service_request_id),
with the rows whose system field :updated_at moved since a given instant."""

from __future__ import annotations

import io
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import requests
from sodapy import Socrata

from sf311.contract.city import LOCAL_ZONE
from sf311.ingest import IngestError
from sf311.ingest.normalize import parse_int
from sf311.ingest.watermark import Watermark
from sf311.settings import Settings

log = logging.getLogger(__name__)

ORDER = "updated_datetime ASC, service_request_id ASC"
# Every field and the system field :updated_at (SODA 2.1), the watermark and the case's
# source_updated_at.
SELECT = ":updated_at, *"
SYSTEM_UPDATED = ":updated_at"
# Socrata's own fields; the `:@computed_region_*` columns are the dataset's and are kept.
SYSTEM_FIELDS = frozenset((":id", ":created_at", ":updated_at", ":version"))
# The system fields no case field holds: rows leave the extractor without them.
DROPPED_FIELDS = SYSTEM_FIELDS - {SYSTEM_UPDATED}
# Bytes read at a time from a response (requests reads 10 KB at a time, a slower loop).
_BODY_CHUNK = 1 << 22
# Arrow reads a page of a few pieces of this size faster than the page as one document.
_PIECE_BYTES = 4 << 20
# Between two rows of a JSON array: "}", the comma, "{" (whitespace allowed).
_ROW_BREAK = re.compile(rb"\}\s*,\s*\{")
_TRANSIENT = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.JSONDecodeError,
)


class ExtractError(IngestError):
    """The Socrata source failed for good (bounded retries exhausted or a non-retryable answer)."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of raw rows (DROPPED_FIELDS dropped), the keyset position of its last row and
    the newest :updated_at among its rows (UTC)."""

    rows: Sequence[dict[str, Any]]
    last: Watermark | None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PageBlock:
    """Rows [start, stop) of a SODA page, encoded from the page's Arrow columns."""

    rows: Sequence[dict[str, Any]]
    start: int
    stop: int


class PageRows(Sequence[dict[str, Any]]):
    """The rows of one SODA page: Arrow columns read from its body, dicts parsed on demand."""

    def __init__(self, table: pa.Table, decode: Callable[[], Any]) -> None:
        self.table = table
        self._decode = decode
        self._dicts: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: Any) -> Any:
        if self._dicts is None:
            self._dicts = self._decode()
        return self._dicts[index]

    def columns(self) -> dict[str, pa.ChunkedArray]:
        """Return the page's columns by field name (the union of its rows' keys)."""
        return dict(zip(self.table.column_names, self.table.columns, strict=True))

    def without(self, names: Sequence[str]) -> PageRows:
        """Return these rows without the columns `names`."""
        return PageRows(
            self.table.drop_columns(list(names)),
            lambda: [{k: v for k, v in row.items() if k not in names} for row in self],
        )

    def last_key(self) -> Watermark | None:
        """Return the keyset position of the last row that has one."""
        if self:
            # The key's two fields read alike from Arrow and from the row's dict.
            key = _key(self.table.slice(len(self) - 1).to_pylist()[0])
            if key is not None:
                return key
        return next((k for k in map(_key, reversed(self)) if k is not None), None)


def _rows_of(document: bytes) -> pa.Table | None:
    """Return the rows of a JSON array of objects as a table, None if Arrow cannot read them."""
    # Arrow reads only whole JSON documents of objects: the array is wrapped in one.
    data = b'{"rows":' + document + b"}"
    options = pj.ReadOptions(use_threads=False, block_size=len(data) + 1)
    try:
        table = pj.read_json(io.BytesIO(data), read_options=options)
    except pa.ArrowInvalid:
        return None
    column = table.column(0).combine_chunks()
    if table.num_rows != 1 or not pa.types.is_list(column.type):
        return None
    structs = column.flatten()
    if not pa.types.is_struct(structs.type) or structs.null_count:
        return None
    return pa.Table.from_struct_array(structs)


def _pieces(body: bytes) -> list[bytes]:
    """Return a JSON array cut between rows into arrays of about _PIECE_BYTES each."""
    # A cut inside a string or nested array leaves invalid JSON, so it cannot go unnoticed.
    start, end = body.index(b"["), body.rindex(b"]")
    pieces, at = [], start + 1
    while (found := _ROW_BREAK.search(body, at + _PIECE_BYTES, end)) is not None:
        pieces.append(b"[" + body[at : found.start() + 1] + b"]")
        at = found.end() - 1
    pieces.append(b"[" + body[at:end] + b"]")
    return pieces


def read_page(body: bytes, decode: Callable[[], Any]) -> PageRows | None:
    """Return a JSON array of objects as PageRows (dicts by `decode()`), None if Arrow cannot."""
    # In pieces first; whole if a piece fails or their columns disagree.
    if not body.lstrip().startswith(b"["):
        return None
    table = None
    tables = [_rows_of(piece) for piece in _pieces(body)] if len(body) > 2 * _PIECE_BYTES else []
    if tables and all(t is not None for t in tables):
        with suppress(pa.ArrowInvalid, pa.ArrowTypeError):
            # Columns missing from a piece, or null all through it, take the others' type.
            table = pa.concat_tables(tables, promote_options="default")
    table = table if table is not None else _rows_of(body)
    return None if table is None else PageRows(table, decode)


class _FastJsonResponse(requests.Response):
    @property
    def content(self) -> bytes:  # type: ignore[override]
        """Return the body, read 4 MB at a time rather than 10 KB (a far shorter loop)."""
        if self._content is False and not self._content_consumed and self.raw is not None:
            # iter_content maps urllib3's errors to requests' own, as for .content.
            self._content = b"".join(self.iter_content(_BODY_CHUNK)) or b""
            self._content_consumed = True
        return super().content

    def json(self, **kwargs: Any) -> Any:
        rows = read_page(self.content, lambda: self._decode(**kwargs))
        return self._decode(**kwargs) if rows is None else rows

    def _decode(self, **kwargs: Any) -> Any:
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError:
            # Not UTF-8 or not strict JSON: requests' own decoding decides (and raises).
            return super().json(**kwargs)


class FastJsonAdapter(requests.adapters.HTTPAdapter):
    """An HTTPAdapter whose JSON pages come as PageRows (Arrow columns), other JSON by orjson."""

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        """Return requests' response, typed so that .json() uses orjson."""
        response = super().build_response(req, resp)
        response.__class__ = _FastJsonResponse
        return response


def socrata_client(settings: Settings) -> Socrata:
    """Return a sodapy client for the configured domain, scheme, app token and timeout."""
    token = settings.socrata_app_token.get_secret_value() if settings.socrata_app_token else None
    # sodapy builds its URLs with the prefix of the adapter mounted here (https:// by default).
    prefix = "http://" if settings.socrata_scheme == "http" else "https://"
    return Socrata(
        settings.socrata_domain,
        token,
        session_adapter={"prefix": prefix, "adapter": FastJsonAdapter()},
        timeout=settings.socrata_timeout_seconds,
    )


def to_floating(moment: datetime) -> datetime:
    """Return a naive Los Angeles local datetime; naive input is taken as already local."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(LOCAL_ZONE).replace(tzinfo=None)


def soql_time(moment: datetime) -> str:
    """Return a SoQL floating timestamp literal body, e.g. 2023-11-28T05:46:59.000."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def soql_fixed(moment: datetime) -> str:
    """Return a SoQL fixed timestamp literal body in UTC, e.g. 2023-11-28T13:05:12.345."""
    return soql_time(moment.astimezone(UTC).replace(tzinfo=None))


def _after(position: Watermark) -> str:
    ts = soql_time(position.updated_datetime)
    return (
        f"(updated_datetime > '{ts}' OR (updated_datetime = '{ts}'"
        f" AND service_request_id > {position.service_request_id}))"
    )


def keyset_where(
    position: Watermark | None,
    until: datetime | None,
    start: Watermark | None = None,
    changed_since: datetime | None = None,
) -> str | None:
    """Return the $where selecting rows after `position` (exclusive) and before `until`; with
    `changed_since`, of those only rows after `start` or whose :updated_at is later."""
    clauses = []
    if position is not None:
        clauses.append(_after(position))
    # Past `start` the keyset alone selects: every row after it is wanted.
    if changed_since is not None and start is not None and (position is None or position < start):
        clauses.append(f"({_after(start)} OR {SYSTEM_UPDATED} > '{soql_fixed(changed_since)}')")
    if until is not None:
        clauses.append(f"updated_datetime < '{soql_time(until)}'")
    return " AND ".join(clauses) or None


def _retry_after(response: requests.Response | None) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def get_page(
    client: Socrata,
    settings: Settings,
    params: dict[str, Any],
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Sequence[dict[str, Any]]:
    """Return one page of rows, retrying 429, 5xx, timeouts and broken connections."""
    # Exponential backoff with full jitter, at least Retry-After, capped by settings.
    rng = rng or random.Random()
    attempts = settings.socrata_max_attempts
    last_error = ""
    for attempt in range(1, attempts + 1):
        retry_after = None
        try:
            rows = client.get(settings.socrata_dataset, **params)
            if not isinstance(rows, list | PageRows):
                raise ExtractError(f"unexpected SODA answer: {str(rows)[:200]}")
            return rows
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            if status != 429 and status < 500:
                raise ExtractError(f"SODA answered {err}; not retrying") from err
            retry_after = _retry_after(err.response)
            last_error = f"HTTP {status}"
        except _TRANSIENT as err:
            last_error = f"{type(err).__name__}: {err}"
        if attempt == attempts:
            break
        cap = settings.socrata_backoff_max_seconds
        delay = rng.uniform(0, min(cap, settings.socrata_backoff_seconds * 2 ** (attempt - 1)))
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        log.warning("SODA attempt %d/%d failed (%s); retrying in %.2fs",
                    attempt, attempts, last_error, delay)  # fmt: skip
        sleep(delay)
    raise ExtractError(
        f"SODA {settings.socrata_domain}/{settings.socrata_dataset} failed after "
        f"{attempts} attempts; last error: {last_error}"
    )


def _key(row: dict[str, Any]) -> Watermark | None:
    rid = parse_int(row.get("service_request_id"))
    updated = row.get("updated_datetime")
    if rid is None or not isinstance(updated, str):
        return None
    try:
        return Watermark(datetime.fromisoformat(updated), rid)
    except ValueError:
        return None


def _params(
    position: Watermark | None,
    until: datetime | None,
    limit: int,
    start: Watermark | None = None,
    changed_since: datetime | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"select": SELECT, "order": ORDER, "limit": limit}
    where = keyset_where(position, until, start, changed_since)
    if where:
        params["where"] = where
    return params


def parse_fixed(value: Any) -> datetime | None:
    """Return a Socrata fixed timestamp (text with a zone, or Arrow's datetime) as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def without_system_fields(
    rows: Sequence[dict[str, Any]],
) -> tuple[Sequence[dict[str, Any]], datetime | None]:
    """Return the rows without the system fields no case field holds (DROPPED_FIELDS), and the
    newest :updated_at among them."""
    if isinstance(rows, PageRows):
        names = [n for n in rows.table.column_names if n in DROPPED_FIELDS]
        kept = rows.without(names) if names else rows
        if SYSTEM_UPDATED not in rows.table.column_names:
            return kept, None
        # Socrata writes every stamp alike (milliseconds, "Z"): the text's max is the newest.
        return kept, parse_fixed(pc.max(rows.table[SYSTEM_UPDATED]).as_py())
    stamps = (parse_fixed(row.get(SYSTEM_UPDATED)) for row in rows)
    newest = max(filter(None, stamps), default=None)
    return [{k: v for k, v in row.items() if k not in DROPPED_FIELDS} for row in rows], newest


def iter_pages(
    client: Socrata,
    settings: Settings,
    start: Watermark | None,
    until: datetime | None = None,
    page_size: int | None = None,
    changed_since: datetime | None = None,
) -> Iterator[Page]:
    """Yield pages of rows after `start` and before `until` (floating local), in keyset order;
    with `changed_since` (UTC), also the rows before `start` whose :updated_at is later."""
    limit = page_size or settings.socrata_page_size
    # Rows changed silently keep an old updated_datetime: they sort before `start`.
    position = start if changed_since is None else None

    def params(position: Watermark | None) -> dict[str, Any]:
        return _params(position, until, limit, start, changed_since)

    # The next page is fetched in the background while the caller handles this one.
    with ThreadPoolExecutor(1, thread_name_prefix="soda-prefetch") as pool:
        future = pool.submit(get_page, client, settings, params(position))
        while True:
            rows = future.result()
            if not isinstance(rows, PageRows):
                last = next((k for k in map(_key, reversed(rows)) if k is not None), None)
            else:
                last = rows.last_key()
            full = len(rows) >= limit
            if full:
                if last is None or (position is not None and last <= position):
                    raise ExtractError(f"cannot page past a full page without a key at {position}")
                future = pool.submit(get_page, client, settings, params(last))
            kept, updated_at = without_system_fields(rows)
            yield Page(kept, last, updated_at)
            if not full:
                return
            position = last


def start_position(
    stored: Watermark | None, since: datetime | None, overlap: timedelta
) -> Watermark | None:
    """Return where a run starts: the earlier of the stored watermark and `since`, minus overlap."""
    candidates = [m for m in (stored, Watermark(since, 0) if since else None) if m is not None]
    if not candidates:
        return None
    first = min(candidates)
    if not overlap:
        return first
    return Watermark(first.updated_datetime - overlap, 0)
