"""The Confluent frame: magic byte 0, a big-endian 4-byte schema id, then the body."""

from __future__ import annotations

import pytest

from sf311.contract.frame import HEADER_BYTES, header, split


def test_header_is_magic_byte_and_big_endian_id() -> None:
    assert header(258) == b"\x00\x00\x00\x01\x02"
    assert header(2**31 + 5) == b"\x00\x80\x00\x00\x05"
    assert HEADER_BYTES == 5


def test_split_returns_id_and_body() -> None:
    assert split(header(7) + b"body") == (7, b"body")
    assert split(header(1)) == (1, b"")


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"\x01\x00\x00\x00\x07body", "magic byte 1"), (b"\x00\x00\x07", "3 bytes"), (b"", "0 bytes")],
)
def test_unframed_payloads_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split(payload)
