"""A SODA-compatible HTTP server on loopback that serves one file, with faults on demand.

It answers $select (columns, the system fields :id, :created_at, :updated_at and `:*`,
count(*), date_trunc_ymd), $where, $group, $order, $limit and $offset as Socrata's JSON API does
(strings only). Rows can be deleted, added and changed while it serves, each change stamping
the row's :updated_at as Socrata does."""

from __future__ import annotations

import bisect
import json
import logging
import operator
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sf311.ingest.files import read_rows

log = logging.getLogger(__name__)

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
    |(?P<num>-?\d+(?:\.\d+)?)
    |(?P<op><>|!=|<=|>=|=|<|>)
    |(?P<punct>[(),])
    |(?P<word>`[^`]+`|[A-Za-z_:@][\w:@]*)
    )""",
    re.X,
)
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?$")
# A fixed timestamp as Socrata writes it (UTC, "Z"), or a literal of one (zone optional: UTC).
_FIXED = re.compile(r"^(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}:\d{2}(\.\d{1,3})?)?(Z|[+-]00:?00)?$")
# One item of $select: an expression, optionally `AS alias`.
_SELECT_ITEM = re.compile(
    r"^\s*(?:(?P<count>count\(\s*\*\s*\))|date_trunc_ymd\(\s*(?P<trunc>[\w:@`]+)\s*\)"
    r"|sum\(\s*(?P<sum>[\w:@`]+)\s*\)|(?P<column>[\w:@`*]+))(?:\s+as\s+(?P<alias>\w+))?\s*$",
    re.I,
)
_EXPORT_TIME = re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2} [AP]M$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<>": operator.ne,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
_TIME_COLUMNS = ("requested_datetime", "updated_datetime", "closed_date")
SYSTEM_FIELDS = (":id", ":created_at", ":updated_at")
MAX_LIMIT = 50_000


class SoqlError(ValueError):
    """A query this server cannot answer (HTTP 400, like Socrata's query.compiler errors)."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SoqlError(f"cannot read SoQL at {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "word" and value.upper() in ("AND", "OR", "NOT", "IS", "NULL", "IN", "BETWEEN"):
            kind = value.upper()
        out.append((kind, value.strip("`")))
        pos = m.end()
    return out


class _Parser:
    """Recursive-descent parser of a SoQL $where into nested tuples."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else "END"

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            raise SoqlError(f"expected {kind}, found {self.peek()} in $where")
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def parse(self) -> tuple:
        node = self.disjunction()
        if self.peek() != "END":
            raise SoqlError(f"unexpected {self.tokens[self.pos][1]!r} in $where")
        return node

    def disjunction(self) -> tuple:
        node = self.conjunction()
        while self.peek() == "OR":
            self.pos += 1
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> tuple:
        node = self.negation()
        while self.peek() == "AND":
            self.pos += 1
            node = ("and", node, self.negation())
        return node

    def negation(self) -> tuple:
        if self.peek() == "NOT":
            self.pos += 1
            return ("not", self.negation())
        if self.peek() == "punct" and self.tokens[self.pos][1] == "(":
            self.pos += 1
            node = self.disjunction()
            if self.take("punct") != ")":
                raise SoqlError("unbalanced parentheses in $where")
            return node
        return self.predicate()

    def literal(self) -> Any:
        kind = self.peek()
        if kind == "str":
            return self.take("str")[1:-1].replace("''", "'")
        if kind == "num":
            return float(self.take("num"))
        raise SoqlError(f"expected a literal, found {kind}")

    def predicate(self) -> tuple:
        column = self.take("word")
        kind = self.peek()
        if kind == "op":
            return ("cmp", column, self.take("op"), self.literal())
        if kind == "IS":
            self.pos += 1
            negate = self.peek() == "NOT"
            self.pos += negate
            self.take("NULL")
            return ("null", column, negate)
        if kind == "BETWEEN":
            self.pos += 1
            low = self.literal()
            self.take("AND")
            return ("between", column, low, self.literal())
        if kind == "IN":
            self.pos += 1
            self.take("punct")
            values = [self.literal()]
            while self.take("punct") == ",":
                values.append(self.literal())
            return ("in", column, values)
        raise SoqlError(f"unsupported condition on {column}")


def _iso_time(text: str) -> str:
    date, _, fraction = text.partition(".")
    return f"{date}.{(fraction + '000')[:3]}"


def _export_to_iso(text: str) -> str:
    return datetime.strptime(text, "%m/%d/%Y %I:%M:%S %p").strftime("%Y-%m-%dT%H:%M:%S.000")


def fixed_stamp(moment: datetime) -> str:
    """Return a UTC instant as Socrata writes a fixed timestamp, e.g. 2023-11-28T13:05:12.345Z."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _fixed_key(text: str) -> str | None:
    """Return a fixed timestamp as comparable text (UTC, milliseconds, no zone), None if not one."""
    match = _FIXED.match(text)
    if not match:
        return None
    return _iso_time(match[1] + (match[2] or "T00:00:00"))


@dataclass(frozen=True, slots=True)
class _Item:
    """One item of $select: count(*), date_trunc_ymd(column) or a column, and its output name."""

    kind: str
    column: str | None
    name: str
    text: str


def _select_items(select: str) -> list[_Item]:
    items = []
    for text in select.split(","):
        match = _SELECT_ITEM.match(text)
        if not match:
            raise SoqlError(f"cannot read $select item {text.strip()!r}")
        alias = match["alias"]
        if match["count"]:
            items.append(_Item("count", None, alias or "count", "count(*)"))
        elif match["trunc"]:
            column = match["trunc"].strip("`")
            name = alias or f"date_trunc_ymd_{column}"
            items.append(_Item("trunc", column, name, f"date_trunc_ymd({column})"))
        elif match["sum"]:
            column = match["sum"].strip("`")
            items.append(_Item("sum", column, alias or f"sum_{column}", f"sum({column})"))
        else:
            column = match["column"].strip("`")
            items.append(_Item("column", column, alias or column, column))
    return items


class Dataset:
    """Rows held as encoded JSON, with typed columns and sort orders built on first use."""

    def __init__(self, rows: Iterable[dict[str, Any]], loaded_at: datetime | None = None) -> None:
        self._encoded: list[bytes] = []
        self._system: list[dict[str, str]] = []
        self._next_row = 0
        self._columns: dict[str, list[Any]] = {}
        self._kinds: dict[str, str] = {}
        self._orders: dict[str, tuple[list[int], list[Any], int]] = {}
        self._lock = threading.Lock()
        self._append(rows, loaded_at or datetime.now(UTC))

    def _append(self, rows: Iterable[dict[str, Any]], at: datetime) -> None:
        stamp = fixed_stamp(at)
        for row in rows:
            self._encoded.append(json.dumps(row, separators=(",", ":")).encode())
            self._system.append({":id": f"row-{self._next_row:06x}", ":created_at": stamp,
                                 ":updated_at": stamp})  # fmt: skip
            self._next_row += 1

    def _changed(self) -> None:
        """Forget the columns and orders built so far (the caller holds the lock)."""
        self._columns, self._kinds, self._orders = {}, {}, {}

    def _index_of(self) -> dict[int, int]:
        self._ensure(["service_request_id"])
        ids = self._columns["service_request_id"]
        return {int(v): i for i, v in enumerate(ids) if v is not None}

    def add(self, rows: Iterable[dict[str, Any]], at: datetime | None = None) -> None:
        """Add rows (new to the dataset, or back after a deletion), created and updated `at`."""
        with self._lock:
            self._append(rows, at or datetime.now(UTC))
            self._changed()

    def delete(self, ids: Iterable[int]) -> int:
        """Remove the rows of these service_request_ids; return how many were removed."""
        index = self._index_of()
        gone = sorted({index[i] for i in ids if i in index}, reverse=True)
        with self._lock:
            for i in gone:
                del self._encoded[i], self._system[i]
            self._changed()
        return len(gone)

    def change(
        self, service_request_id: int, values: dict[str, Any], at: datetime | None = None
    ) -> None:
        """Set fields of one row and stamp its :updated_at; updated_datetime moves only if
        `values` holds it (a silent change otherwise, as a publisher's rewrite is)."""
        i = self._index_of()[service_request_id]
        row = json.loads(self._encoded[i]) | values
        with self._lock:
            self._encoded[i] = json.dumps(row, separators=(",", ":")).encode()
            self._system[i][":updated_at"] = fixed_stamp(at or datetime.now(UTC))
            self._changed()

    @classmethod
    def from_file(cls, path: Path) -> Dataset:
        """Return a dataset of a CSV/JSON file's rows in the API's form (strings, no empties)."""

        def api_rows() -> Iterable[dict[str, Any]]:
            for row in read_rows(path, progress=False):
                out = {k: v for k, v in row.items() if v is not None and v != ""}
                for key in _TIME_COLUMNS:
                    value = out.get(key)
                    if isinstance(value, str) and _EXPORT_TIME.match(value):
                        out[key] = _export_to_iso(value)
                yield out

        return cls(api_rows())

    def __len__(self) -> int:
        return len(self._encoded)

    def _ensure(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self._columns]
        if not missing:
            return
        with self._lock:
            missing = [n for n in missing if n not in self._columns]
            raw: dict[str, list[Any]] = {n: [] for n in missing}
            appenders = [(n, raw[n].append) for n in missing]
            for encoded, system in zip(self._encoded, self._system, strict=True):
                row = json.loads(encoded) | system
                for name, append in appenders:
                    append(row.get(name))
            for name, values in raw.items():
                self._kinds[name], self._columns[name] = _typed(values)

    def _coerce(self, column: str, value: Any) -> Any:
        kind = self._kinds[column]
        if kind == "number":
            try:
                return float(value)
            except (TypeError, ValueError):
                raise SoqlError(f"{column} is a number; cannot compare with {value!r}") from None
        if kind == "time":
            text = str(value)
            if not _ISO.match(text):
                raise SoqlError(f"{column} is a floating timestamp; bad literal {value!r}")
            return _iso_time(text)
        if kind == "fixed":
            key = _fixed_key(str(value))
            if key is None:
                raise SoqlError(f"{column} is a fixed timestamp; bad literal {value!r}")
            return key
        return value if isinstance(value, str) else f"{value:g}"

    def _compile(self, node: tuple) -> Callable[[int], bool]:
        kind = node[0]
        if kind in ("and", "or"):
            left, right = self._compile(node[1]), self._compile(node[2])
            if kind == "and":
                return lambda i: left(i) and right(i)
            return lambda i: left(i) or right(i)
        if kind == "not":
            inner = self._compile(node[1])
            return lambda i: not inner(i)
        column = node[1]
        values = self._columns[column]
        if kind == "null":
            negate = node[2]
            return lambda i: (values[i] is not None) == negate
        if kind == "between":
            low, high = self._coerce(column, node[2]), self._coerce(column, node[3])
            return lambda i: (x := values[i]) is not None and low <= x <= high
        if kind == "in":
            allowed = {self._coerce(column, v) for v in node[2]}
            return lambda i: values[i] in allowed
        op, literal = _OPS[node[2]], self._coerce(column, node[3])
        return lambda i: (x := values[i]) is not None and op(x, literal)

    def _lower_bound(self, node: tuple | None, column: str) -> Any:
        """Return a value every matching row's `column` is >= to, or None if unknown."""
        if node is None:
            return None
        kind = node[0]
        if kind in ("and", "or"):
            bounds = [self._lower_bound(n, column) for n in node[1:]]
            known = [b for b in bounds if b is not None]
            if kind == "and":
                return max(known) if known else None
            return min(known) if len(known) == 2 else None
        if node[1] != column:
            return None
        if kind == "cmp" and node[2] in (">", ">=", "="):
            return self._coerce(column, node[3])
        if kind == "between":
            return self._coerce(column, node[2])
        return None

    def _order(self, order: str) -> tuple[list[int], list[Any], int]:
        if order in self._orders:
            return self._orders[order]
        keys = []
        for part in order.split(","):
            words = part.split()
            if not words or len(words) > 2 or (len(words) == 2 and words[1].upper() not in
                                               ("ASC", "DESC")):  # fmt: skip
                raise SoqlError(f"cannot read $order {order!r}")
            keys.append((words[0].strip("`"), len(words) == 2 and words[1].upper() == "DESC"))
        self._ensure(name for name, _ in keys)
        perm = list(range(len(self._encoded)))
        # Stable sorts from the last key to the first; nulls last ascending, first descending.
        for name, desc in reversed(keys):
            perm.sort(key=_sort_key(self._columns[name], self._kinds[name]), reverse=desc)
        first_name, first_desc = keys[0]
        firsts = [self._columns[first_name][i] for i in perm]
        non_null = len(firsts) - firsts.count(None) if not first_desc else 0
        entry = (perm, firsts if not first_desc else [], non_null)
        with self._lock:
            self._orders[order] = entry
        return entry

    def query(self, params: dict[str, str]) -> bytes:
        """Return the JSON body answering SoQL parameters ($select/$where/$order/$limit/$offset)."""
        try:
            limit = int(params.get("$limit", "1000"))
            offset = int(params.get("$offset", "0"))
        except ValueError:
            raise SoqlError("$limit and $offset must be integers") from None
        if not 0 <= limit <= MAX_LIMIT or offset < 0:
            raise SoqlError(f"$limit must be between 0 and {MAX_LIMIT}; $offset >= 0")
        select = params.get("$select", "*").strip() or "*"
        items = _select_items(select)
        if params.get("$group") or any(item.kind != "column" for item in items):
            return self._aggregate(params, items, limit, offset)
        where = _Parser(params["$where"]).parse() if params.get("$where") else None
        if where is not None:
            self._ensure(_columns_of(where))
        predicate = self._compile(where) if where is not None else None
        start = 0
        if params.get("$order"):
            perm, firsts, non_null = self._order(params["$order"])
            first_column = params["$order"].split(",")[0].split()[0].strip("`")
            bound = self._lower_bound(where, first_column)
            if bound is not None and firsts:
                start = bisect.bisect_left(firsts, bound, 0, non_null)
            indexes: Iterable[int] = islice(perm, start, None)
        else:
            indexes = range(len(self._encoded))
        if predicate is not None:
            indexes = filter(predicate, indexes)
        chosen = list(islice(indexes, offset, offset + limit))
        names = [item.column for item in items]
        if names == ["*"]:
            return b"[" + b",".join(self._encoded[i] for i in chosen) + b"]"
        if names[-1:] == ["*"] and all(n == ":*" or n in SYSTEM_FIELDS for n in names[:-1]):
            fields = [f for n in names[:-1] for f in (SYSTEM_FIELDS if n == ":*" else (n,))]
            return b"[" + b",".join(self._with_system(i, fields) for i in chosen) + b"]"
        picked = []
        for i in chosen:
            row, out = json.loads(self._encoded[i]), dict[str, Any]()
            for item in items:
                column = item.column or ""
                if column == ":*":
                    out |= self._system[i]
                elif column == "*":
                    out |= row
                elif (value := self._system[i].get(column, row.get(column))) is not None:
                    out[item.name] = value
            picked.append(out)
        return json.dumps(picked, separators=(",", ":")).encode()

    def _with_system(self, i: int, fields: list[str]) -> bytes:
        # System values are plain ASCII ("row-..." and timestamps): no JSON escaping needed.
        system = self._system[i]
        head = ",".join(f'"{f}":"{system[f]}"' for f in fields).encode()
        row = self._encoded[i]
        return b"{" + head + (b"}" if row == b"{}" else b"," + row[1:])

    def _aggregate(
        self, params: dict[str, str], items: list[_Item], limit: int, offset: int
    ) -> bytes:
        """Return the JSON body of a grouped query: count(*) and sums per group of the rest."""
        keys = [item for item in items if item.kind in ("column", "trunc")]
        sums = [item for item in items if item.kind == "sum"]
        group = {g.strip().strip("`") for g in params.get("$group", "").split(",") if g.strip()}
        if group != {k.name for k in keys} and group != {k.text for k in keys}:
            raise SoqlError(f"$group {sorted(group)} must name every non-aggregate $select item")
        where = _Parser(params["$where"]).parse() if params.get("$where") else None
        needed = {k.column or "" for k in keys + sums} | (_columns_of(where) if where else set())
        self._ensure(needed)
        if any(k.kind == "trunc" and self._kinds[k.column or ""] != "time" for k in keys):
            raise SoqlError("date_trunc_ymd needs a floating timestamp column")
        if any(self._kinds[k.column or ""] != "number" for k in sums):
            raise SoqlError("sum() needs a number column")
        indexes: Iterable[int] = range(len(self._encoded))
        if where is not None:
            indexes = filter(self._compile(where), indexes)
        counts: Counter[tuple[Any, ...]] = Counter()
        totals: dict[tuple[Any, ...], list[float]] = {}
        for i in indexes:
            key = tuple(_group_value(self._columns[k.column or ""][i], k.kind) for k in keys)
            counts[key] += 1
            added = [self._columns[k.column or ""][i] or 0.0 for k in sums]
            totals[key] = [
                a + b for a, b in zip(totals.get(key, [0.0] * len(sums)), added, strict=True)
            ]
        # Ordered by the $order items that name a group, then by every group (Socrata: unordered).
        order = [o.split()[0].strip("`") for o in params.get("$order", "").split(",") if o.strip()]
        ranks = [n for o in order for n, k in enumerate(keys) if o in (k.name, k.text)]
        ranks += range(len(keys))
        ranked = sorted(counts.items(), key=lambda kv: [_null_last(kv[0][r]) for r in ranks])
        out = []
        for key, n in ranked[offset : offset + limit]:
            row = {k.name: _json_value(v) for k, v in zip(keys, key, strict=True) if v is not None}
            row |= {item.name: str(n) for item in items if item.kind == "count"}
            row |= {k.name: _json_value(t) for k, t in zip(sums, totals[key], strict=True)}
            out.append(row)
        return json.dumps(out, separators=(",", ":")).encode()


def _group_value(value: Any, kind: str) -> Any:
    if kind == "trunc" and value is not None:
        return value[:10] + "T00:00:00.000"
    return value


def _null_last(value: Any) -> tuple[bool, Any]:
    return (True, "") if value is None else (False, value)


def _json_value(value: Any) -> str:
    # Numbers come back as the API writes them: strings, integral ones without a point.
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else repr(value)
    return str(value)


def _sort_key(values: list[Any], kind: str) -> Callable[[int], tuple[bool, Any]]:
    blank = 0.0 if kind == "number" else ""

    def key(i: int) -> tuple[bool, Any]:
        value = values[i]
        return (True, blank) if value is None else (False, value)

    return key


def _columns_of(node: tuple) -> set[str]:
    if node[0] in ("and", "or"):
        return _columns_of(node[1]) | _columns_of(node[2])
    if node[0] == "not":
        return _columns_of(node[1])
    return {node[1]}


def _typed(values: list[Any]) -> tuple[str, list[Any]]:
    # The JSON API never sends empty strings: an empty cell is a null.
    values = [None if v == "" else v for v in values]
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, str) and _ISO.match(v) for v in present):
        return "time", [None if v is None else _iso_time(v) for v in values]
    if present and all(isinstance(v, str) and v.endswith("Z") and _FIXED.match(v) for v in present):
        return "fixed", [None if v is None else _fixed_key(v) for v in values]
    try:
        numbers = [None if v is None else float(v) for v in values]
    except (TypeError, ValueError):
        return "text", [None if v is None else v if isinstance(v, str) else str(v) for v in values]
    return "number", numbers


@dataclass
class Faults:
    """What share of requests fail (with which codes) or answer slowly; seeded."""

    fail_rate: float = 0.0
    fail_codes: tuple[int, ...] = (429, 500)
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    retry_after: int = 1
    seed: int = 0


class SodaServer(ThreadingHTTPServer):
    """A threaded HTTP server over one Dataset; counts the answers it gave and delayed."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        dataset: Dataset,
        dataset_id: str,
        faults: Faults | None = None,
        app_token: str | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.dataset = dataset
        self.dataset_id = dataset_id
        self.faults = faults or Faults()
        self.app_token = app_token
        self.statuses: Counter[int] = Counter()
        self.slow_answers = 0
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()

    @property
    def domain(self) -> str:
        """Return host:port, the value for settings.socrata_domain."""
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def draw(self) -> tuple[int | None, bool]:
        """Return (failure status or None, whether to answer slowly) for the next request."""
        faults = self.faults
        with self._lock:
            fail = self._rng.random() < faults.fail_rate
            code = self._rng.choice(faults.fail_codes) if fail else None
            slow = self._rng.random() < faults.slow_rate
        return code, slow

    def count(self, status: int) -> None:
        """Count one answer given with this status (handler threads call this concurrently)."""
        with self._lock:
            self.statuses[status] += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SodaServer

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        # Counted before answering: a client that reads the answer may look at the count at once.
        self.server.count(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("soda: the client gave up waiting for a %d answer", status)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": True, "code": status, "message": message}).encode()
        self._send(status, body, headers)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server = self.server
        url = urlsplit(self.path)
        if url.path != f"/resource/{server.dataset_id}.json":
            self._error(404, f"no dataset at {url.path}")
            return
        code, slow = server.draw()
        if slow:
            server.slow_answers += 1
            time.sleep(server.faults.slow_seconds)
        if code == 429:
            self._error(429, "Too many requests", {"Retry-After": str(server.faults.retry_after)})
            return
        if code is not None:
            self._error(code, "Internal error (injected)")
            return
        if server.app_token and self.headers.get("X-App-Token") != server.app_token:
            self._error(403, "Invalid app_token specified")
            return
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body = server.dataset.query(params)
        except SoqlError as err:
            self._error(400, f"query.compiler.malformed: {err}")
            return
        self._send(200, body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.debug("soda %s " + format, self.client_address[0], *args)


def start_server(
    dataset: Dataset,
    dataset_id: str,
    port: int = 0,
    faults: Faults | None = None,
    app_token: str | None = None,
) -> SodaServer:
    """Return a SodaServer on 127.0.0.1 (port 0 = any free port) serving in a daemon thread."""
    server = SodaServer(("127.0.0.1", port), dataset, dataset_id, faults, app_token)
    threading.Thread(target=server.serve_forever, name="soda-server", daemon=True).start()
    return server


def serve_file(
    path: Path,
    dataset_id: str,
    port: int,
    faults: Faults | None = None,
    app_token: str | None = None,
) -> None:
    """Serve a file as a SODA dataset on 127.0.0.1 until interrupted."""
    dataset = Dataset.from_file(path)
    server = SodaServer(("127.0.0.1", port), dataset, dataset_id, faults, app_token)
    print(
        f"serving {len(dataset)} rows of {path} at http://{server.domain}"
        f"/resource/{dataset_id}.json",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
