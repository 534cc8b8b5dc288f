"""Throwaway warehouse databases for tests and the dashboard benchmark, never the real one:
each migrated, owned by the warehouse owner and readable by the analyst role."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sf311.platform.services import Postgres, dsn_parts
from sf311.settings import Settings
from sf311.warehouse.migrate import migrate


@dataclass(frozen=True)
class ScratchDb:
    """A throwaway warehouse: its name and the owner and analyst DSNs that reach it."""

    name: str
    owner_dsn: str
    analyst_dsn: str


def _with_db(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def dsns(settings: Settings, name: str) -> ScratchDb:
    """Return the owner and analyst DSNs of database `name` on the settings' server."""
    return ScratchDb(
        name=name,
        owner_dsn=_with_db(settings.postgres_dsn.get_secret_value(), name),
        analyst_dsn=_with_db(settings.analyst_dsn.get_secret_value(), name),
    )


def kept(settings: Settings, name: str) -> ScratchDb:
    """Return the DSNs of database `name`, kept from an earlier run, migrated to this code's
    schema first (as `sf311 stream` migrates the warehouse at start)."""
    db = dsns(settings, name)
    migrate(db.owner_dsn)
    return db


def create(settings: Settings, name: str) -> ScratchDb:
    """Return a fresh database `name` (dropped first if it exists) holding the warehouse schema."""
    owner = dsn_parts(settings.postgres_dsn.get_secret_value())[2]
    drop(settings, name)
    with Postgres(settings).superuser() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
    db = dsns(settings, name)
    migrate(db.owner_dsn)
    return db


def drop(settings: Settings, name: str) -> None:
    """Drop database `name` if it exists, closing its open sessions."""
    if name == dsn_parts(settings.postgres_dsn.get_secret_value())[4]:
        raise ValueError(f"refusing to drop the warehouse database {name!r}")
    with Postgres(settings).superuser() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# Synthetic cases shaped like the real ones: skewed categories and neighborhoods, ~6% open,
# heavy-tailed resolution hours, opened uniformly over `days` days up to now.
SYNTHETIC_CASES = """
INSERT INTO cases (
    service_request_id, requested_datetime, updated_datetime, closed_date, status_description,
    agency_responsible, service_name, service_subtype, supervisor_district, neighborhood,
    police_district, lat, long, source, resolution_hours, kafka_timestamp, batch_id)
SELECT
    id, requested, coalesce(closed, requested), closed,
    CASE WHEN closed IS NULL THEN 'Open' ELSE 'Closed' END,
    'Agency ' || mod(cat, 12), 'Category ' || cat, 'Subtype ' || cat || '.' || sub,
    1 + mod(nb, 11), 'Neighborhood ' || nb, 'Police ' || mod(nb, 10),
    37.71 + mod(nb, 8) * 0.02 + random() * 0.02, -122.51 + (nb / 8) * 0.02 + random() * 0.02,
    (ARRAY['Phone', 'Mobile/Open311', 'Web', 'Integrated Agency', 'Twitter', 'Email'])
        [1 + floor(power(random(), 2) * 6)::int],
    extract(epoch FROM closed - requested) / 3600, now(), 0
FROM (
    SELECT id, cat, sub, nb, requested,
        CASE WHEN open_draw < 0.06 OR requested + hours * interval '1 hour' > now() THEN NULL
             ELSE requested + hours * interval '1 hour' END AS closed
    FROM (
        SELECT g AS id,
            floor(power(random(), 3) * 40)::int AS cat,
            floor(random() * 3)::int AS sub,
            floor(power(random(), 1.5) * 40)::int AS nb,
            now() - random() * %(days)s * interval '1 day' AS requested,
            exp(random() * 9 - 1.5) AS hours,
            random() AS open_draw
        FROM generate_series(1, %(rows)s) AS g
    ) draws
) cases_drawn
"""


def fill_synthetic(db: ScratchDb, rows: int, days: int = 730, seed: float = 0.311) -> int:
    """Insert `rows` synthetic cases into the scratch database; return the row count after."""
    with psycopg.connect(db.owner_dsn, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", [seed])
        conn.execute(SYNTHETIC_CASES, {"rows": rows, "days": days})
        conn.execute("VACUUM ANALYZE cases")
        row = conn.execute("SELECT count(*) FROM cases").fetchone()
    assert row is not None
    return int(row[0])
