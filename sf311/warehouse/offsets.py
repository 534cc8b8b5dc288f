"""Table `warehouse_offsets`: per Kafka partition, the offset below which `cases` is loaded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class OffsetRange:
    """The first and last offset of a batch's messages in one Kafka partition."""

    partition: int
    first: int
    last: int


def loaded_offsets(conn: psycopg.Connection, topic: str) -> dict[int, int]:
    """Return {partition: next_offset}: every message of the topic below it is loaded."""
    return dict(
        conn.execute(
            "SELECT kafka_partition, next_offset FROM warehouse_offsets WHERE topic = %s", [topic]
        ).fetchall()
    )


def advance_offsets(
    conn: psycopg.Connection, topic: str, ranges: Sequence[OffsetRange], own_checkpoint: bool
) -> None:
    """Move each partition's next_offset past a loaded batch's last offset, inside the
    caller's transaction; it never moves back.

    The warehouse query's checkpoint has seen every earlier message, so its batches always move
    it on; any other writer (a bounded run's lake query) moves it only where its batch starts at
    or below next_offset, or at offset 0 of a new partition, so it never passes an unloaded one."""
    if not ranges:
        return
    conn.execute(
        "INSERT INTO warehouse_offsets AS w (topic, kafka_partition, next_offset)"
        " SELECT %(topic)s, r.p, r.last + 1"
        " FROM unnest(%(p)s::integer[], %(first)s::bigint[], %(last)s::bigint[])"
        " AS r(p, first, last)"
        " WHERE %(own)s OR r.first = 0 OR EXISTS (SELECT 1 FROM warehouse_offsets o"
        "  WHERE o.topic = %(topic)s AND o.kafka_partition = r.p AND o.next_offset >= r.first)"
        " ON CONFLICT (topic, kafka_partition) DO UPDATE"
        " SET next_offset = EXCLUDED.next_offset, updated_at = now()"
        " WHERE w.next_offset < EXCLUDED.next_offset",
        {
            "topic": topic,
            "p": [r.partition for r in ranges],
            "first": [r.first for r in ranges],
            "last": [r.last for r in ranges],
            "own": own_checkpoint,
        },
    )


def reset_offsets(cur: psycopg.Cursor, offsets: Iterable[tuple[str, int, int]]) -> None:
    """Make warehouse_offsets hold exactly the given (topic, partition, next_offset), inside the
    caller's transaction."""
    cur.execute("DELETE FROM warehouse_offsets")
    cur.executemany(
        "INSERT INTO warehouse_offsets (topic, kafka_partition, next_offset) VALUES (%s, %s, %s)",
        list(offsets),
    )
