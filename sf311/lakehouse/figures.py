"""What a micro-batch held (BatchFigures), the one set of figures every ledger records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from sf311.lakehouse.silver import DELETION


def utc(micros: int) -> datetime:
    """Return the UTC instant of a count of microseconds since the epoch."""
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


@dataclass(frozen=True)
class BatchFigures:
    """A batch's messages, the valid ones, the span and quantiles of their Kafka times, the
    id range of its valid cases and its tombstones (deletions)."""

    rows_in: int
    rows_valid: int
    ts_min: datetime | None = None
    ts_max: datetime | None = None
    # Kafka times at the 5th and 50th percentile: lag p95 and p50 once committed.
    ts_p05: datetime | None = None
    ts_p50: datetime | None = None
    id_min: int | None = None
    id_max: int | None = None
    rows_deleted: int = 0

    @property
    def rows_quarantined(self) -> int:
        """Return the messages rejected by decoding or validation."""
        return self.rows_in - self.rows_valid - self.rows_deleted


def arrow_figures(table: pa.Table) -> BatchFigures:
    """Return the figures of a batch collected to Arrow (columns reason, kafka_timestamp and
    service_request_id)."""
    if table.num_rows == 0:
        return BatchFigures(0, 0)
    valid = pc.is_null(table["reason"])
    ts = pc.cast(table["kafka_timestamp"], pa.int64())
    bounds = pc.min_max(ts)
    p05, p50 = pc.quantile(ts, q=[0.05, 0.5], interpolation="lower").to_pylist()
    ids = pc.min_max(table["service_request_id"].filter(valid))
    deleted = pc.sum(pc.equal(table["reason"], DELETION)).as_py() or 0
    return BatchFigures(
        rows_in=table.num_rows,
        rows_valid=pc.sum(valid).as_py() or 0,
        ts_min=utc(bounds["min"].as_py()),
        ts_max=utc(bounds["max"].as_py()),
        ts_p05=utc(p05),
        ts_p50=utc(p50),
        id_min=ids["min"].as_py(),
        id_max=ids["max"].as_py(),
        rows_deleted=deleted,
    )
