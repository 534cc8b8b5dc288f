"""The Confluent wire frame: magic byte 0, a 4-byte big-endian schema id, then the Avro body."""

from __future__ import annotations

import struct

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_BYTES = HEADER.size


def header(schema_id: int) -> bytes:
    """Return the 5 bytes that open every message written with a schema id."""
    return HEADER.pack(MAGIC_BYTE, schema_id)


def split(payload: bytes) -> tuple[int, bytes]:
    """Return (schema id, Avro body) of a framed message; ValueError when it is not framed."""
    if len(payload) < HEADER_BYTES:
        raise ValueError(f"not Confluent wire format ({len(payload)} bytes)")
    magic, schema_id = HEADER.unpack_from(payload)
    if magic != MAGIC_BYTE:
        raise ValueError(f"not Confluent wire format (magic byte {magic})")
    return schema_id, payload[HEADER_BYTES:]
