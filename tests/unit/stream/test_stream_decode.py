"""Confluent framing and Avro decoding of Kafka messages into the reader-shaped struct."""

from __future__ import annotations

import pytest
import requests

from sf311.contract.registry import RegistryError, SchemaRegistry
from sf311.contract.schema import reader_schema
from sf311.lakehouse import decode


def _decoded(messages, values, writers, reader):
    return (
        decode.decode(decode.frame(messages(values)), writers, reader).orderBy("offset").collect()
    )


def test_frame_reads_big_endian_schema_id_and_rejects_unframed(messages, wire):
    values = [
        b"\x00\x00\x00\x00\x07body",
        b"\x00\x00\x00\x01\x02",
        b"\x00\x80\x00\x00\x05x",
        b"\x01\x00\x00\x00\x07body",
        b"\x00\x00\x07",
        None,
    ]
    rows = decode.frame(messages(values)).orderBy("offset").collect()
    assert [r.schema_id for r in rows] == [7, 258, 2**31 + 5, None, None, None]
    assert bytes(rows[0].payload) == b"body"
    assert rows[3].payload is None


def test_decode_resolves_old_and_new_writers_to_the_reader_shape(messages, wire):
    old = wire.frame(1, wire.v1, wire.case(11))
    new = wire.frame(2, wire.v2, {**wire.case(12), "priority": "high"})
    rows = _decoded(messages, [old, new], {1: wire.v1_text, 2: wire.v2_text}, wire.v2_text)
    assert [r.decode_error for r in rows] == [None, None]
    assert [r.case.service_request_id for r in rows] == [11, 12]
    assert [r.case.priority for r in rows] == [None, "high"]
    assert rows[0].case.neighborhood == "North Beach"


def test_decode_reads_a_newer_writer_with_an_older_reader(messages, wire):
    new = wire.frame(2, wire.v2, {**wire.case(12), "priority": "high"})
    rows = _decoded(messages, [new], {2: wire.v2_text}, wire.v1_text)
    assert rows[0].decode_error is None
    assert rows[0].case.service_request_id == 12
    assert "priority" not in rows[0].case.asDict()


def test_decode_flags_unframed_unknown_id_and_garbage_bodies(messages, wire):
    good = wire.frame(1, wire.v1, wire.case(11))
    values = [
        b"not avro at all",
        wire.frame(99, wire.v1, wire.case(13)),
        b"\x00\x00\x00\x00\x01\xff\xff\xff",
        good[:8],
        good,
    ]
    rows = _decoded(messages, values, {1: wire.v1_text}, wire.v1_text)
    assert [r.decode_error for r in rows] == [
        decode.NOT_FRAMED,
        decode.UNKNOWN_SCHEMA_ID,
        decode.UNDECODABLE,
        decode.UNDECODABLE,
        None,
    ]
    assert [r.case is None for r in rows] == [True, True, True, True, False]


def test_decode_without_any_known_schema_flags_every_row(messages, wire):
    rows = _decoded(messages, [wire.frame(5, wire.v1, wire.case(1))], {}, wire.v1_text)
    assert rows[0].decode_error == decode.UNKNOWN_SCHEMA_ID
    assert rows[0].case is None


class _Response:
    def __init__(self, status: int, body: dict | None = None) -> None:
        self.status_code = status
        self.ok = status < 400
        self._body = body or {}
        self.text = str(body)

    def json(self) -> dict:
        return self._body


def test_registry_caches_known_and_unknown_ids(monkeypatch):
    calls = []

    def fake_get(url, timeout):
        calls.append(url)
        return _Response(200, {"schema": '"long"'}) if url.endswith("/1") else _Response(404)

    monkeypatch.setattr(requests, "get", fake_get)
    registry = SchemaRegistry("http://registry/apis/ccompat/v7/")
    assert registry.known() == {}
    assert registry.writer_schemas([1, 2]) == {1: '"long"'}
    assert registry.known() == {1: '"long"'}
    assert registry.writer_schemas([1, 2]) == {1: '"long"'}
    assert calls == [
        "http://registry/apis/ccompat/v7/schemas/ids/1",
        "http://registry/apis/ccompat/v7/schemas/ids/2",
    ]


def test_registry_errors_fail_the_batch_instead_of_quarantining(monkeypatch):
    monkeypatch.setattr(requests, "get", lambda url, timeout: _Response(503))
    with pytest.raises(RegistryError):
        SchemaRegistry("http://registry").writer_schema(1)

    def refused(url, timeout):
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(requests, "get", refused)
    with pytest.raises(RegistryError):
        SchemaRegistry("http://registry").writer_schema(1)


def test_reader_schema_is_the_newest_contract_version(tmp_path):
    (tmp_path / "case.v1.avsc").write_text('{"type": "record", "name": "A", "fields": []}')
    (tmp_path / "case.v10.avsc").write_text('{"type": "record", "name": "B", "fields": []}')
    (tmp_path / "case.v2.avsc").write_text('{"type": "record", "name": "C", "fields": []}')
    assert '"B"' in reader_schema(tmp_path)
