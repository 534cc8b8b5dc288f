"""The secondary indexes of `cases`, deferred while a backfill loads an empty table: dropped
before its first batch, their definitions kept in deferred_indexes, built once after its last."""

from __future__ import annotations

import psycopg
from psycopg import sql

# A build sorts its index's keys in memory up to this much, beyond it in temporary files
# (Postgres' default: 64 MB).
BUILD_MEMORY = "256MB"


def defer_indexes(conn: psycopg.Connection) -> list[str]:
    """Drop the indexes of `cases` that no constraint needs, keeping their definitions in
    deferred_indexes, when the table is empty; return their names (none if it was not)."""
    with conn.transaction():
        # No row may come in between the check and the drop.
        conn.execute("LOCK TABLE cases IN ACCESS EXCLUSIVE MODE")
        if conn.execute("SELECT EXISTS (SELECT 1 FROM cases)").fetchone()[0]:
            return []
        found = conn.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid"
            " WHERE x.indrelid = 'cases'::regclass AND NOT x.indisunique ORDER BY i.relname"
        ).fetchall()
        for name, definition in found:
            conn.execute(
                "INSERT INTO deferred_indexes (name, definition) VALUES (%s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                [name, definition],
            )
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    return [name for name, _ in found]


def restore_indexes(conn: psycopg.Connection) -> list[str]:
    """Build the indexes deferred_indexes holds, in one transaction with their removal from it;
    return their names."""
    with conn.transaction():
        conn.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
        deferred = conn.execute(
            "SELECT name, definition, to_regclass(quote_ident(name)) IS NOT NULL"
            " FROM deferred_indexes ORDER BY name FOR UPDATE"
        ).fetchall()
        for _, definition, present in deferred:
            if not present:
                conn.execute(definition)
        conn.execute("DELETE FROM deferred_indexes")
    return [name for name, _, _ in deferred]
