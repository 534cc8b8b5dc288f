"""The tables the streaming job keeps, one Sink each: those a validated micro-batch is written
to (BatchSink) and gold, which follows silver beside the batches; the streaming job and
`sf311 replay` both iterate over SINKS."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pyarrow as pa
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sf311.errors import first_line
from sf311.lakehouse import bronze, silver
from sf311.lakehouse.batch import Batch, Rebuild
from sf311.lakehouse.checkpoints import LAKE_QUERY, WAREHOUSE_QUERY
from sf311.lakehouse.figures import utc
from sf311.lakehouse.gold_tables import (
    all_present,
    build,
    conf_targets,
    enable_change_feed,
    gold_paths,
    overwrite,
    refresh,
    replace_slices,
    table_id,
)
from sf311.lakehouse.tables import compact
from sf311.settings import Settings
from sf311.warehouse.cases import CASE_COLUMNS, replace_cases, vacuum_cases
from sf311.warehouse.gold import SLA_TARGETS, Change, mirror, read_progress
from sf311.warehouse.indexes import defer_indexes, restore_indexes
from sf311.warehouse.ledgers import BatchLoad, load_batch, record_phases
from sf311.warehouse.retry import retrying

log = logging.getLogger(__name__)

# Cases collected to the driver at a time on their way to Postgres, so memory stays bounded.
SLICE_ROWS = 500_000


def utc_now() -> datetime:
    """Return the current instant in UTC."""
    return datetime.now(UTC)


class Sink(ABC):
    """One table the job keeps: rebuilt by `sf311 replay`, compacted by the lake query."""

    # Its name in the logs; a BatchSink's writes are timed under it in the lake query.
    name: str
    # True when it writes the batch's rows collected to the driver (Postgres), not Spark's.
    collected = False

    def __init__(
        self, spark: SparkSession, settings: Settings, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.spark = spark
        self.settings = settings
        self.clock = clock

    @abstractmethod
    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        """Replace the table with what all of bronze yields; return counts for replay's result."""

    def compact(self) -> None:
        """Compact the small files the stream's frequent commits leave; most tables need not."""
        return None

    def prepare(self, once: bool) -> None:
        """Do what is due before the job's queries start, bounded (once) or not; most tables
        need nothing."""
        return None

    def idle(self) -> None:
        """Do what is due between batches, called by the driver about every second while the
        job streams (never in a bounded run); most tables need nothing."""
        return None

    def finish(self) -> None:
        """Do what is due once a bounded run has written its last batch; most need nothing."""
        return None


class BatchSink(Sink):
    """A table each validated micro-batch is written to; each write is idempotent per batch."""

    def takes(self, batch: Batch) -> bool:
        """Return True when the batch holds anything for this table."""
        return True

    @abstractmethod
    def write(self, batch: Batch) -> str | None:
        """Write one micro-batch; return what the write did, for the lake ledger, or None."""


class DeltaSink(BatchSink):
    """A sink that writes a Delta table of the lake."""

    table: str

    @property
    def path(self) -> str:
        """Return the storage path of the table."""
        return self.settings.table_path(self.table)


class BronzeSink(DeltaSink):
    """bronze.cases_raw: every message as received."""

    name = "bronze"
    table = bronze.TABLE

    def write(self, batch: Batch) -> None:
        """Append the batch once per (app id, batch id)."""
        rows = batch.validated.select(*bronze.COLUMNS)
        bronze.write_bronze(rows, self.path, batch.app_id, batch.batch_id)

    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        """Return no counts: bronze is what replay reads, never what it rewrites."""
        return {}

    def compact(self) -> None:
        """Compact bronze.cases_raw."""
        compact(self.spark, self.path)


class QuarantineSink(DeltaSink):
    """silver.cases_quarantine: the rejected messages, raw bytes kept, with their reason."""

    name = "quarantine"
    table = silver.QUARANTINE_TABLE

    def takes(self, batch: Batch) -> bool:
        """Return True when the batch holds a rejected message."""
        return batch.figures.rows_quarantined > 0

    def write(self, batch: Batch) -> None:
        """Append the batch's rejected rows once per (app id, batch id)."""
        rows = silver.quarantine_rows(batch.validated)
        silver.append_quarantine(rows, self.path, batch.app_id, batch.batch_id)

    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        """Overwrite the quarantine with bronze's rejected messages; return no counts."""
        silver.overwrite_quarantine(silver.quarantine_rows(rebuild.validated), self.path)
        return {}


class SilverSink(DeltaSink):
    """silver.cases: one row per case, the newest version winning."""

    name = "silver"
    table = silver.TABLE

    def write(self, batch: Batch) -> str:
        """Upsert the batch's newest versions, then mark the cases its tombstones delete;
        return the action (append, merge, ..., with +delete after a marking)."""
        f = batch.figures
        # Not persisted here: MERGE materializes its source itself, once.
        rows = silver.curated_rows(batch.validated, batch.superseded)
        action = silver.merge_silver(
            self.spark, rows, self.path, batch.app_id, batch.batch_id, (f.id_min, f.id_max),
            batch.validated,
        )  # fmt: skip
        if f.rows_deleted == 0:
            return action
        silver.mark_deleted(self.spark, self.path, silver.deletions(batch.validated))
        return f"{action}+delete"

    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        """Overwrite silver.cases with bronze's curated cases; return no counts."""
        silver.overwrite_silver(self.spark, rebuild.curated, self.path)
        log.info("replay: silver.cases rewritten with %d cases", rebuild.cases)
        return {}

    def compact(self) -> None:
        """Compact silver.cases."""
        compact(self.spark, self.path)


class GoldSink(Sink):
    """The gold tables (daily_volume, backlog_daily, resolution_stats, sla_daily, sla_targets)
    in the lake, mirrored to Postgres schema gold with the silver version they reflect.

    Gold follows silver beside the lake query's batches, never inside one, so silver never
    waits for it: while the job streams, the driver refreshes it between batches at most every
    stream_gold_seconds; a bounded run refreshes it once, after its last batch. Each refresh
    takes every silver version since the one gold reflects, so a backlog costs one refresh."""

    name = "gold"

    def __init__(
        self, spark: SparkSession, settings: Settings, clock: Callable[[], datetime] = utc_now
    ) -> None:
        super().__init__(spark, settings, clock)
        # idle() runs on the driver's thread, compact() on the lake query's: one at a time.
        self._busy = threading.Lock()
        self._due = 0.0

    def idle(self) -> None:
        """Refresh gold when stream_gold_seconds have passed since the last refresh began."""
        if time.monotonic() < self._due or not self._busy.acquire(blocking=False):
            return
        try:
            self._due = time.monotonic() + self.settings.stream_gold_seconds
            self.refresh()
        finally:
            self._busy.release()

    def finish(self) -> None:
        """Refresh gold with the silver the bounded run has written."""
        with self._busy:
            self.refresh()

    def refresh(self) -> dict[str, int] | None:
        """Replace the gold slices silver changed since the version gold reflects; return the
        Postgres rows changed and deleted, or None when silver has not moved or Postgres is
        down (a later refresh catches up from gold.progress, which only the mirror moves)."""
        # The lake query's pool: the warehouse query keeps its half of the cores, as before.
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", LAKE_QUERY)
        try:
            return self.update(full=False, retry_seconds=0)
        except psycopg.OperationalError as err:
            log.warning("gold: Postgres unreachable (%s); gold catches up at a later refresh",
                        first_line(err))  # fmt: skip
            return None

    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        """Rebuild every gold table from the new silver.cases; return the Postgres rows
        changed and deleted."""
        bound = self.settings.stream_pg_retry_seconds
        return self.update(full=True, retry_seconds=bound) or {"gold_changed": 0, "gold_deleted": 0}

    def compact(self) -> None:
        """Compact the gold tables, which every refresh's MERGE leaves a few small files in;
        skipped while a refresh runs (a later compaction takes them)."""
        if not self._busy.acquire(blocking=False):
            return
        try:
            for path in gold_paths(self.settings).values():
                compact(self.spark, path)
        finally:
            self._busy.release()

    def update(self, full: bool, retry_seconds: float) -> dict[str, int] | None:
        """Bring gold, in the lake then in Postgres, up to silver's newest version, from its
        changes or (full, first run, change feed gone) from all of it; return the Postgres
        rows changed and deleted, or None when nothing was to do."""
        s, spark = self.settings, self.spark
        t0 = time.monotonic()
        dsn = s.postgres_dsn.get_secret_value()
        silver_path, paths = s.table_path(silver.TABLE), gold_paths(s)
        if not DeltaTable.isDeltaTable(spark, silver_path):
            return None  # the job's first refresh may come before silver's first batch
        conf = conf_targets(spark, s.conf_dir / "sla_targets.csv")
        progress = None if full else retrying(dsn, read_progress, retry_seconds)
        cached: list[DataFrame] = []
        found = None
        if progress is not None and progress.silver_table != table_id(spark, silver_path):
            # Another silver table (a new lake) than gold reflects: nothing to refresh from.
            log.warning("gold: Postgres gold reflects another silver.cases; rebuilding gold")
            progress = None
        if progress is not None and all_present(spark, paths.values()):
            try:
                found = refresh(spark, silver_path, paths[SLA_TARGETS.name], progress, conf)
            except AnalysisException as err:
                log.warning("gold: silver's change feed lacks versions after %d (%s); "
                            "rebuilding gold from all of silver", progress.silver_version,
                            str(err).splitlines()[0])  # fmt: skip
                progress = None
            else:
                if found is None:
                    return None
        if found is None:
            enable_change_feed(spark, silver_path)
            built = build(spark, silver_path, conf)
            if built is None:
                return None
            found = (*built, None)
        updates, reached, read = found
        if read is not None:
            cached.append(read)
        try:
            mirrored = []
            for u in updates:
                path = paths[u.table.name]
                if u.slices is None:
                    rows = u.rows.persist()
                    cached.append(rows)
                    overwrite(path, rows)
                    mirrored.append(Change(u.table, rows.toArrow(), None))
                    continue
                # A table no change touches costs no Spark job.
                if u.slices.num_rows == 0:
                    continue
                # Slices' rows are small: collected once, for the lake and the mirror.
                rows = u.rows.toArrow()
                replace_slices(spark, path, u.table, rows, u.slices)
                mirrored.append(Change(u.table, rows, u.slices))
            # Replaced slices and progress commit together: a retry or a replayed batch redoes
            # the same replacement, which then changes nothing.
            counts = retrying(dsn, lambda conn: mirror(conn, mirrored, reached), retry_seconds)
        finally:
            for df in cached:
                df.unpersist()
        seconds = round(time.monotonic() - t0, 3)
        log.info("gold: silver version %d (as of %s), %d rows changed and %d deleted in Postgres, "
                 "in %.1f s", reached.silver_version, reached.as_of.isoformat(),
                 counts["gold_changed"], counts["gold_deleted"], seconds,
                 extra={"gold_seconds": seconds})  # fmt: skip
        return counts


def arrow_slices(curated: DataFrame, rows: int) -> Iterator[pa.Table]:
    """Yield the curated (persisted) rows as Arrow tables, one slice of ids at a time."""
    slices = max(1, -(-rows // SLICE_ROWS))
    for n in range(slices):
        part = curated.where(F.pmod(F.col("service_request_id"), F.lit(slices)) == n)
        yield part.select(*CASE_COLUMNS).toArrow()


class WarehouseSink(BatchSink):
    """Postgres `cases`, with its ledger row in stream_batches and warehouse_offsets moved on."""

    name = "warehouse"
    collected = True

    def takes(self, batch: Batch) -> bool:
        """Return True when the batch holds messages the warehouse has still to load."""
        return batch.rows is not None and batch.rows.figures.rows_in > 0

    def write(self, batch: Batch) -> None:
        """Upsert the batch's rows with its ledger row, retrying while Postgres is down."""
        rows = batch.rows
        assert rows is not None, "takes() lets only collected batches through"
        f = rows.figures
        load = BatchLoad(
            query_id=batch.query_id,
            batch_id=batch.batch_id,
            figures=f,
            rows=rows.newest,
            started_at=batch.started,
            topic=self.settings.kafka_topic,
            offsets=rows.offsets,
            own_checkpoint=batch.query_name == WAREHOUSE_QUERY,
            deleted=rows.deleted,
        )
        dsn = self.settings.postgres_dsn.get_secret_value()
        t0 = time.monotonic()
        # The ledger makes a retry after an unknown commit outcome safe.
        changed = retrying(
            dsn, lambda conn: load_batch(conn, load), self.settings.stream_pg_retry_seconds
        )
        seconds = {"decode": batch.decode_seconds, "postgres": round(time.monotonic() - t0, 3)}
        finished = self.clock()
        record_phases(dsn, batch.query_id, batch.batch_id, seconds, finished)
        log.info(
            "warehouse batch %d: %d in, %d valid, %d curated, %s rows upserted",
            batch.batch_id, f.rows_in, f.rows_valid, load.rows.num_rows,
            "replayed: 0" if changed is None else changed,
            extra={
                "query": batch.query_name,
                "batch_id": batch.batch_id,
                "rows_in": f.rows_in,
                "rows_valid": f.rows_valid,
                "rows_curated": load.rows.num_rows,
                "rows_upserted": changed,
                "phase_seconds": seconds,
                "max_lag_seconds": round((finished - f.ts_min).total_seconds(), 3),
            },
        )  # fmt: skip

    def prepare(self, once: bool) -> None:
        """Before a bounded run into an empty `cases`, defer its secondary indexes to the run's
        end; before a streaming run, build any that a killed bounded run left deferred."""
        dsn = self.settings.postgres_dsn.get_secret_value()
        bound = self.settings.stream_pg_retry_seconds
        if once:
            deferred = retrying(dsn, defer_indexes, bound)
            if deferred:
                log.info("warehouse: `cases` is empty; %d indexes deferred to the run's end",
                         len(deferred))  # fmt: skip
        else:
            self._restore_indexes(dsn, bound)

    def finish(self) -> None:
        """Build the indexes deferred before a bounded run's loads, then vacuum `cases`
        (vacuum_cases)."""
        dsn = self.settings.postgres_dsn.get_secret_value()
        bound = self.settings.stream_pg_retry_seconds
        self._restore_indexes(dsn, bound)
        retrying(dsn, vacuum_cases, bound)

    def _restore_indexes(self, dsn: str, bound: float) -> None:
        t0 = time.monotonic()
        built = retrying(dsn, restore_indexes, bound)
        if built:
            log.info("warehouse: %d deferred indexes of `cases` built in %.1f s", len(built),
                     time.monotonic() - t0)  # fmt: skip

    def replace(self, rebuild: Rebuild) -> dict[str, int]:
        """Make `cases` hold exactly bronze's curated cases, those silver marks deleted marked
        too, and warehouse_offsets end where bronze ends; return the rows changed, deleted and
        now in the table."""
        log.info("replay: loading Postgres `cases`")
        marked = rebuild.curated.where("deleted_at IS NOT NULL").select(
            # As microseconds: collected timestamps would come back in the driver's time zone.
            "service_request_id",
            F.unix_micros("deleted_at"),
        )
        gone = [(i, utc(us)) for i, us in marked.collect()]
        with psycopg.connect(self.settings.postgres_dsn.get_secret_value()) as conn:
            changed, deleted, total = replace_cases(
                conn, arrow_slices(rebuild.curated, rebuild.cases), rebuild.ends, gone
            )
        return {"postgres_changed": changed, "postgres_deleted": deleted, "postgres_rows": total}


# In write order: a batch reaches silver only after bronze holds it; gold follows silver.
SINKS: tuple[type[Sink], ...] = (
    BronzeSink, QuarantineSink, SilverSink, GoldSink, WarehouseSink,
)  # fmt: skip


def lake_sinks(
    spark: SparkSession, settings: Settings, clock: Callable[[], datetime] = utc_now
) -> list[Sink]:
    """Return one instance of each of SINKS, in order."""
    return [sink(spark, settings, clock) for sink in SINKS]
