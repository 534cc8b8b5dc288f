"""Confluent framing and Avro decoding of Kafka messages into the reader-shaped struct."""

from __future__ import annotations

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
