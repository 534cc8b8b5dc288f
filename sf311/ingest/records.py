"""Case records <-> Avro bodies behind the Confluent frame of sf311.contract.frame."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, cast

import fastavro

from sf311.contract import frame


def _uvarint(n: int) -> bytes:
    """Return the base-128 encoding of a non-negative int, low group first."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_FINAL = [_uvarint(i) for i in range(1 << 14)]
# Two 7-bit groups, both flagged "more follows": the low 14 bits of a larger number.
_MORE = [bytes([(i & 0x7F) | 0x80, (i >> 7) | 0x80]) for i in range(1 << 14)]
_high = lru_cache(maxsize=1 << 12)(_uvarint)


def avro_long(v: int) -> bytes:
    """Return the Avro (zigzag, base-128) encoding of a long."""
    n = (v << 1) ^ (v >> 63)
    if n < 1 << 14:
        return _FINAL[n]
    if n < 1 << 28:
        return _MORE[n & 0x3FFF] + _FINAL[n >> 14]
    # Epoch-millisecond timestamps share their high groups: those come from a cache.
    return _MORE[n & 0x3FFF] + _MORE[(n >> 14) & 0x3FFF] + _high(n >> 28)


_SMALL = [avro_long(i) for i in range(4096)]
_FLAT = {"boolean", "int", "long", "float", "double", "string", "bytes"}
_VALUE_CODE = {
    "string": ["b = v.encode()", "n = len(b)", "a(SMALL[n] if n < 4096 else varint(n))", "a(b)"],
    "bytes": ["n = len(v)", "a(SMALL[n] if n < 4096 else varint(n))", "a(v)"],
    "long": ["a(SMALL[v] if 0 <= v < 4096 else varint(v))"],
    "int": ["if not -2147483648 <= v <= 2147483647: raise ValueError(f'int out of range: {v}')",
            "a(SMALL[v] if 0 <= v < 4096 else varint(v))"],
    "double": ["a(pack_double(v))"],
    "float": ["a(pack_float(v))"],
    "boolean": ["a(b'\\x01' if v else b'\\x00')"],
}  # fmt: skip


def compile_encoder(schema: dict[str, Any]) -> Callable[[Mapping[str, Any]], bytes] | None:
    """Return an Avro body encoder for a record of primitives and null unions, else None."""
    # Straight-line code skips fastavro's per-field union resolution; tests compare the bytes.
    if schema.get("type") != "record":
        return None
    lines = ["def encode(r):", "    p = []", "    a = p.append"]
    for field in schema["fields"]:
        kind, null_index = field["type"], None
        if isinstance(kind, list):
            if len(kind) != 2 or "null" not in kind:
                return None
            null_index = kind.index("null")
            kind = kind[1 - null_index]
        if isinstance(kind, dict):
            kind = kind.get("type")
        if kind not in _FLAT:
            return None
        lines.append(f"    v = r[{field['name']!r}]")
        indent = "    "
        if null_index is not None:
            null_tag, value_tag = (b"\x00", b"\x02") if null_index == 0 else (b"\x02", b"\x00")
            lines += [
                f"    if v is None: a({null_tag!r})",
                "    else:",
                f"        a({value_tag!r})",
            ]
            indent = "        "
        lines += [indent + line for line in _VALUE_CODE[kind]]
    lines.append("    return b''.join(p)")
    scope = {
        "SMALL": _SMALL,
        "varint": avro_long,
        "pack_double": struct.Struct("<d").pack,
        "pack_float": struct.Struct("<f").pack,
    }
    exec(compile("\n".join(lines), f"<avro encoder {schema.get('name')}>", "exec"), scope)  # noqa: S102
    return cast(Callable[[Mapping[str, Any]], bytes], scope["encode"])


class CaseEncoder:
    """Encodes records into Confluent wire format; the schema is parsed and compiled once."""

    def __init__(self, schema: dict[str, Any], schema_id: int) -> None:
        self.schema = schema
        self._parsed = fastavro.parse_schema(schema)
        self.header = frame.header(schema_id)
        self._body = compile_encoder(schema) or self._fastavro_body
        self.schema_id = schema_id

    def _fastavro_body(self, record: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, self._parsed, record)
        return buffer.getvalue()

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Return the wire-format bytes of one record."""
        return self.header + self._body(record)


def decode(payload: bytes, schemas: dict[int, Any]) -> dict[str, Any]:
    """Return the record in a wire-format payload, given parsed writer schemas by id."""
    schema_id, body = frame.split(payload)
    record = fastavro.schemaless_reader(io.BytesIO(body), schemas[schema_id], None)
    return cast(dict[str, Any], record)
