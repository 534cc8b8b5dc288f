"""gold.monthly_volume (migration 0018) stays the monthly sums of gold.daily_volume through the
mirror's writes: new rows, changed rows, rows gone, and a truncate."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pyarrow as pa
import pytest

from sf311.warehouse.gold import DAILY_VOLUME, Change, Progress, gold_schema, mirror

pytestmark = pytest.mark.integration
PROGRESS = Progress("silver", 1, datetime(2024, 3, 1, tzinfo=UTC))


def _rows(*rows: tuple) -> pa.Table:
    return pa.table({c: [r[i] for r in rows] for i, c in enumerate(DAILY_VOLUME.columns)})


def _monthly(conn: psycopg.Connection, schema: str) -> set[tuple]:
    return set(conn.execute(f"SELECT * FROM {schema}.monthly_volume").fetchall())


def test_monthly_volume_follows_every_write_of_daily_volume(schema_dsn):
    with psycopg.connect(schema_dsn) as conn:
        schema = gold_schema(conn)
        first = _rows(
            (date(2024, 1, 3), "Graffiti", None, 3, "MISSION", "Web", 3, 1),
            (date(2024, 1, 20), "Graffiti", None, 3, "MISSION", "Web", 2, 0),
            (date(2024, 2, 5), "Tree", "Sunset", None, None, None, 1, 1),
        )
        mirror(conn, [Change(DAILY_VOLUME, first, None)], PROGRESS)
        assert _monthly(conn, schema) == {
            (date(2024, 1, 1), "Graffiti", None, 3, "MISSION", "Web", 5, 1),
            (date(2024, 2, 1), "Tree", "Sunset", None, None, None, 1, 1),
        }
        # A batch's slices: January 3rd's row changes, the 20th's and February's go, March's
        # row is new.
        slices = pa.table(
            {"day": [date(2024, 1, 3), date(2024, 1, 20), date(2024, 2, 5), date(2024, 3, 1)],
             "category": ["Graffiti", "Graffiti", "Tree", "Tree"]}
        )  # fmt: skip
        later = _rows(
            (date(2024, 1, 3), "Graffiti", None, 3, "MISSION", "Web", 4, 2),
            (date(2024, 3, 1), "Tree", "Sunset", None, None, None, 0, 1),
        )
        mirror(conn, [Change(DAILY_VOLUME, later, slices)], PROGRESS)
        assert _monthly(conn, schema) == {
            (date(2024, 1, 1), "Graffiti", None, 3, "MISSION", "Web", 4, 2),
            (date(2024, 3, 1), "Tree", "Sunset", None, None, None, 0, 1),
        }
        conn.execute(f"TRUNCATE {schema}.daily_volume")
        assert _monthly(conn, schema) == set()
