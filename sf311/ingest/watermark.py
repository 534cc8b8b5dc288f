"""Ingest watermarks in Postgres (ingest.watermarks): how far each source reached Kafka."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from sf311.contract.city import LOCAL_TZ

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS ingest;
CREATE TABLE IF NOT EXISTS ingest.watermarks (
    source text PRIMARY KEY,
    updated_datetime timestamp NOT NULL,
    service_request_id bigint NOT NULL,
    advanced_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ingest.watermarks IS
    'Last (updated_datetime, service_request_id) of each source acknowledged by Kafka; '
    'updated_datetime is the source''s floating {LOCAL_TZ} time.';
"""

# Only ever forward: a rerun of an old interval must not pull the watermark back.
_ADVANCE = """
INSERT INTO ingest.watermarks AS w (source, updated_datetime, service_request_id)
VALUES (%s, %s, %s)
ON CONFLICT (source) DO UPDATE
SET updated_datetime = EXCLUDED.updated_datetime,
    service_request_id = EXCLUDED.service_request_id,
    advanced_at = now()
WHERE (w.updated_datetime, w.service_request_id)
    < (EXCLUDED.updated_datetime, EXCLUDED.service_request_id)
"""


@dataclass(frozen=True, order=True, slots=True)
class Watermark:
    """A keyset position: floating Los Angeles updated_datetime, then service_request_id."""

    updated_datetime: datetime
    service_request_id: int


class WatermarkStore:
    """Reads and advances watermarks in Postgres over one autocommit connection."""

    def __init__(self, dsn: str) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._conn.execute(_DDL)

    def get(self, source: str) -> Watermark | None:
        """Return the stored watermark of a source, or None before its first run."""
        row = self._conn.execute(
            "SELECT updated_datetime, service_request_id FROM ingest.watermarks WHERE source = %s",
            (source,),
        ).fetchone()
        return Watermark(row[0], row[1]) if row else None

    def advance(self, source: str, mark: Watermark) -> None:
        """Store `mark` for a source unless the stored watermark is already at or past it."""
        self._conn.execute(_ADVANCE, (source, mark.updated_datetime, mark.service_request_id))

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
