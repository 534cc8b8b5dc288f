"""Versioned SQL migrations of the warehouse, tracked in the schema_migrations table."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# One advisory lock key for the warehouse, so two `sf311 db migrate` runs never interleave.
LOCK_KEY = 311_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed or an applied one was edited afterwards."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version number, name, text and checksum."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """Return the SHA-256 of the SQL text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the migrations of a folder in version order, rejecting bad names and gaps."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must run 1..N without gaps, got {versions}")
    return found


def migrate(dsn: str, folder: Path = MIGRATIONS_DIR, connect_timeout: int = 15) -> list[str]:
    """Apply the pending migrations, each in its own transaction; return the names applied."""
    migrations = load_migrations(folder)
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        for m in migrations:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationError(
                        f"{m.version:04d}_{m.name}.sql changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            with conn.transaction():
                conn.execute(m.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    [m.version, m.name, m.checksum],
                )
            applied_now.append(f"{m.version:04d}_{m.name}")
        conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    return applied_now
