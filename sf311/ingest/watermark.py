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
ALTER TABLE ingest.watermarks ADD COLUMN IF NOT EXISTS system_updated_at timestamptz;
COMMENT ON COLUMN ingest.watermarks.system_updated_at IS
    'Newest Socrata :updated_at of a run acknowledged by Kafka in full: rows changed later '
    'are read again even when their updated_datetime did not move.';
"""

# Only ever forward: a rerun of an old interval must not pull the watermark back.
_ADVANCE = """
INSERT INTO ingest.watermarks AS w
    (source, updated_datetime, service_request_id, system_updated_at)
VALUES (%(source)s, %(updated)s, %(id)s, %(system)s)
ON CONFLICT (source) DO UPDATE
SET updated_datetime = CASE WHEN {newer} THEN EXCLUDED.updated_datetime
                            ELSE w.updated_datetime END,
    service_request_id = CASE WHEN {newer} THEN EXCLUDED.service_request_id
                              ELSE w.service_request_id END,
    system_updated_at = GREATEST(w.system_updated_at, EXCLUDED.system_updated_at),
    advanced_at = now()
WHERE {newer} OR EXCLUDED.system_updated_at > coalesce(w.system_updated_at, '-infinity')
""".format(
    newer="(w.updated_datetime, w.service_request_id)"
    " < (EXCLUDED.updated_datetime, EXCLUDED.service_request_id)"
)


@dataclass(frozen=True, order=True, slots=True)
class Watermark:
    """A keyset position: floating Los Angeles updated_datetime, then service_request_id."""

    updated_datetime: datetime
    service_request_id: int


@dataclass(frozen=True, slots=True)
class RunMark:
    """What a run has had acknowledged: a keyset position and, once the whole run is, the
    newest Socrata :updated_at it read (UTC)."""

    position: Watermark
    system_updated_at: datetime | None = None


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

    def system_updated_at(self, source: str) -> datetime | None:
        """Return the newest :updated_at a complete run of the source read, or None."""
        row = self._conn.execute(
            "SELECT system_updated_at FROM ingest.watermarks WHERE source = %s", (source,)
        ).fetchone()
        return row[0] if row else None

    def advance(
        self, source: str, mark: Watermark, system_updated_at: datetime | None = None
    ) -> None:
        """Store `mark` (and `system_updated_at`) for a source where each is past the stored one."""
        self._conn.execute(
            _ADVANCE,
            {
                "source": source,
                "updated": mark.updated_datetime,
                "id": mark.service_request_id,
                "system": system_updated_at,
            },
        )

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
