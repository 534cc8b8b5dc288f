"""The foreachBatch functions of the job's two queries: each decodes a micro-batch once, then
hands it to its sinks, timing each phase."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from sf311.lakehouse.batch import (
    Batch,
    BatchDecoder,
    WarehouseRows,
    collect_warehouse,
    not_loaded,
    read_loaded_offsets,
    spark_figures,
    superseded,
    warehouse_rows,
)
from sf311.lakehouse.checkpoints import LAKE_QUERY, WAREHOUSE_QUERY
from sf311.lakehouse.figures import BatchFigures, arrow_figures
from sf311.lakehouse.sinks import BatchSink, SilverSink, Sink, utc_now
from sf311.settings import Settings
from sf311.warehouse.ledgers import LakeLedger, lake_batch_row, lake_spool

log = logging.getLogger(__name__)


def job_tag(query_id: str, batch_id: int, phase: str) -> str:
    """Return the Spark job tag of one phase of one micro-batch of a query (its id is unique
    per checkpoint, so batch ids never collide across queries or runs)."""
    return f"{query_id}-batch-{batch_id}-{phase}"


@dataclass
class PhaseClock:
    """Seconds spent in each phase of one micro-batch; each phase tags the Spark jobs it runs."""

    spark: SparkSession
    query_id: str
    batch_id: int
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the block as `phase` and tag its Spark jobs with job_tag(query_id, batch, phase)."""
        sc = self.spark.sparkContext
        tag = job_tag(self.query_id, self.batch_id, phase)
        sc.addJobTag(tag)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.monotonic() - t0, 3)
            sc.removeJobTag(tag)


# A lake batch's decode result: cached rows, figures, and if collected the rows for Postgres
# and the superseded versions.
_Decoded = tuple[DataFrame, BatchFigures, WarehouseRows | None, pa.Table | None]


class QueryWriter:
    """What both foreachBatch functions share: the session, settings, decoder, sinks, query id."""

    query_name: str

    def __init__(self, spark: SparkSession, settings: Settings, decoder: BatchDecoder,
                 sinks: Sequence[Sink],
                 clock: Callable[[], datetime] = utc_now) -> None:  # fmt: skip
        self.spark = spark
        self.settings = settings
        self.decoder = decoder
        self.sinks = list(sinks)
        # Those each batch is written to; the others (gold) follow beside the batches.
        self.batch_sinks = [s for s in sinks if isinstance(s, BatchSink)]
        self.clock = clock
        self._query_id: str | None = None

    def begin(self, batch_id: int) -> PhaseClock:
        """Put this thread's Spark jobs in the query's scheduler pool; return the batch's clock."""
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", self.query_name)
        return PhaseClock(self.spark, self.query_id(), batch_id)

    def query_id(self) -> str:
        """Return the id of the running query, stable across restarts from one checkpoint."""
        if self._query_id is None:
            running = [q for q in self.spark.streams.active if q.name == self.query_name]
            if len(running) != 1:
                raise RuntimeError(f"expected one active query {self.query_name!r}")
            self._query_id = running[0].id
        return self._query_id


class WarehouseWriter(QueryWriter):
    """foreachBatch of sf311_warehouse: one batch collected to the driver in one Spark job, for
    the sinks that write from there (Postgres `cases`).

    It skips the messages warehouse_offsets records as loaded (by a bounded run's lake query),
    before decoding them."""

    query_name = WAREHOUSE_QUERY

    def __call__(self, messages: DataFrame, batch_id: int) -> None:
        started = self.clock()
        phase = self.begin(batch_id)
        with phase("decode"):
            loaded = read_loaded_offsets(self.settings)
            if loaded:
                messages = messages.where(not_loaded(loaded))

            def collect(validated: DataFrame) -> tuple[tuple[DataFrame, WarehouseRows], list[int]]:
                table, unknown = collect_warehouse(validated)
                return (validated, warehouse_rows(table)), unknown

            validated, rows = self.decoder.collect(messages, batch_id, started, collect)
        batch = Batch(self.query_name, self.query_id(), batch_id, started, validated,
                      rows.figures, phase.seconds["decode"], rows)  # fmt: skip
        for sink in self.batch_sinks:
            if sink.takes(batch):
                sink.write(batch)


class LakeWriter(QueryWriter):
    """foreachBatch of sf311_lake: one batch, cached once, through its sinks in order.

    Sinks that write from the driver (a bounded run's Postgres load, as that run has no
    warehouse query) get the rows warehouse_offsets does not record as loaded, collected in the
    decode's Spark job, and run in a thread beside the Spark writes."""

    query_name = LAKE_QUERY

    def __init__(self, spark: SparkSession, settings: Settings, decoder: BatchDecoder,
                 sinks: Sequence[Sink],
                 clock: Callable[[], datetime] = utc_now) -> None:  # fmt: skip
        super().__init__(spark, settings, decoder, sinks, clock)
        self.spark_sinks = [s for s in self.batch_sinks if not s.collected]
        self.driver_sinks = [s for s in self.batch_sinks if s.collected]
        self.loader = ThreadPoolExecutor(1, "sf311-warehouse-load") if self.driver_sinks else None
        self.ledger = LakeLedger(settings.postgres_dsn.get_secret_value(),
                                 lake_spool(settings.state_dir))  # fmt: skip

    def __call__(self, messages: DataFrame, batch_id: int) -> None:
        started = self.clock()
        phase = self.begin(batch_id)
        s = self.settings
        cached: list[DataFrame] = []
        loaded = read_loaded_offsets(s) if self.loader else None

        def persisted(validated: DataFrame) -> tuple[_Decoded, list[int]]:
            # Deserialized: the serialized level runs the serializer on every write and read.
            validated = validated.persist(StorageLevel.MEMORY_AND_DISK_DESER)
            cached.append(validated)
            if loaded is None:
                figures, unknown = spark_figures(validated)
                return (validated, figures, None, None), unknown
            table, unknown = collect_warehouse(validated, loaded)
            to_load = table["to_load"]
            # A filter copies every row, even when it keeps them all (a backfill's batches).
            rows = warehouse_rows(table if pc.all(to_load).as_py() else table.filter(to_load))
            return (validated, arrow_figures(table), rows, superseded(table)), unknown

        pending: list[Future] = []
        outcomes: dict[str, str | None] = {}
        try:
            with phase("decode"):
                validated, figures, rows, replaced = self.decoder.collect(
                    messages, batch_id, started, persisted
                )
            if figures.rows_in == 0:
                return
            batch = Batch(self.query_name, self.query_id(), batch_id, started, validated,
                          figures, phase.seconds["decode"], rows, replaced)  # fmt: skip
            if self.loader is not None:
                takers = [k for k in self.driver_sinks if k.takes(batch)]
                pending = [self.loader.submit(k.write, batch) for k in takers]
            for sink in self.spark_sinks:
                if sink.takes(batch):
                    with phase(sink.name):
                        outcomes[sink.name] = sink.write(batch)
            if s.stream_compact_every and batch_id % s.stream_compact_every == 0 and batch_id:
                with phase("compact"):
                    for sink in self.sinks:
                        sink.compact()
        finally:
            for df in cached:
                df.unpersist()
            wait(pending)
        for future in pending:
            future.result()  # the warehouse load's failure fails the batch, which is replayed
        finished = self.clock()
        action = outcomes.get(SilverSink.name) or ""
        # Spooled, then stored: Postgres down costs the row no more than a delay.
        self.ledger.record(lake_batch_row(batch.query_id, batch_id, figures, action,
                                          phase.seconds, started, finished))  # fmt: skip
        log.info(
            "lake batch %d: %d in, %d valid, silver %s",
            batch_id, figures.rows_in, figures.rows_valid, action,
            extra={
                "query": self.query_name,
                "batch_id": batch_id,
                "rows_in": figures.rows_in,
                "rows_valid": figures.rows_valid,
                "silver_action": action,
                "phase_seconds": phase.seconds,
                "max_lag_seconds": round((finished - figures.ts_min).total_seconds(), 3),
            },
        )  # fmt: skip
