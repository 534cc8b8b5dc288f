"""The streaming job's wiring: the warehouse and lake queries over the cases topic, their
triggers and checkpoints; a bounded run (`--once`) runs the lake query alone over every sink."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from sf311.contract.registry import SchemaRegistry
from sf311.contract.schema import reader_schema
from sf311.lakehouse.batch import BatchDecoder, read_loaded_offsets
from sf311.lakehouse.checkpoints import (
    LAKE_QUERY,
    WAREHOUSE_QUERY,
    checkpoint_location,
    committed_offsets,
)
from sf311.lakehouse.sinks import Sink, lake_sinks
from sf311.lakehouse.tables import use_write_conf
from sf311.lakehouse.writers import LakeWriter, QueryWriter, WarehouseWriter
from sf311.logs import configure_logging
from sf311.settings import Settings
from sf311.spark import build_spark

log = logging.getLogger(__name__)

AVAILABLE_NOW = "availablenow"


def trigger_options(trigger: str, once: bool = False) -> dict[str, object]:
    """Return DataStreamWriter.trigger keyword arguments for a trigger setting."""
    if once or trigger.replace("_", "").replace(" ", "").lower() == AVAILABLE_NOW:
        return {"availableNow": True}
    return {"processingTime": trigger}


# Spark tasks of at most this many messages, so that a task's decoded rows fit in memory.
MAX_RECORDS_PER_TASK = 100_000


def kafka_messages(spark: SparkSession, settings: Settings, max_offsets: int) -> DataFrame:
    """Return the streaming DataFrame of the cases topic, at most max_offsets per batch."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", settings.stream_starting_offsets)
        .option("maxOffsetsPerTrigger", max_offsets)
        .option("maxRecordsPerPartition", MAX_RECORDS_PER_TASK)
        .load()
    )


# silver's MERGE hints a broadcast that some of its steps cannot use; each logs a harmless warning.
HINT_LOGGER = "org.apache.spark.sql.catalyst.analysis.HintErrorLogger"


def quiet_hint_warnings(spark: SparkSession) -> None:
    """Keep only errors of Spark's hint logger in this JVM's log."""
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        HINT_LOGGER, jvm.org.apache.logging.log4j.Level.ERROR
    )


@dataclass
class Streams:
    """The job's running queries, handled as one."""

    queries: list[StreamingQuery]

    @property
    def active(self) -> bool:
        """Return True while every query runs."""
        return all(q.isActive for q in self.queries)

    def exception(self) -> Exception | None:
        """Return the first query's failure, or None."""
        return next((e for q in self.queries if (e := q.exception()) is not None), None)

    def stop(self) -> None:
        """Stop every query that still runs."""
        for q in self.queries:
            if q.isActive:
                q.stop()

    def wait(self, once: bool) -> None:
        """Return when every query has finished (once) or when any has stopped; a failure
        raises."""
        if once:
            for q in self.queries:
                q.awaitTermination()
        else:
            # Not awaitAnyTermination: it returns at once for any query ended in this session.
            while self.active:
                self.queries[0].awaitTermination(1)
        error = self.exception()
        if error is not None:
            raise error


def warehouse_behind_lake(spark: SparkSession, settings: Settings) -> bool:
    """Return True when the lake query has committed messages that the warehouse has not
    loaded (the lake ran ahead while streaming): a bounded run loads the warehouse only from
    what its lake query reads, so it must run the warehouse query first."""
    topic = settings.kafka_topic
    lake = committed_offsets(spark, checkpoint_location(settings, LAKE_QUERY), topic)
    if not lake:
        return False
    own = committed_offsets(spark, checkpoint_location(settings, WAREHOUSE_QUERY), topic)
    loaded = read_loaded_offsets(settings)
    return any(end > max(own.get(p, 0), loaded.get(p, 0)) for p, end in lake.items())


def served_sinks(sinks: Sequence[Sink], once: bool) -> dict[str, list[Sink]]:
    """Return the sinks each query writes: the warehouse query those that write from the
    driver, the lake query the rest, or in a bounded run (once) every sink."""
    collected = [s for s in sinks if s.collected]
    lake = list(sinks) if once else [s for s in sinks if not s.collected]
    return {WAREHOUSE_QUERY: collected, LAKE_QUERY: lake}


def start_stream(spark: SparkSession, settings: Settings, once: bool = False) -> Streams:
    """Return the started queries of the cases topic: the warehouse and lake queries, or for a
    bounded run (once) the lake query alone, writing every sink."""
    use_write_conf(spark)
    quiet_hint_warnings(spark)
    decoder = BatchDecoder(
        SchemaRegistry(settings.schema_registry_url), reader_schema(settings.schemas_dir)
    )
    warehouse_trigger = trigger_options(settings.stream_trigger, once)
    once = once or "availableNow" in warehouse_trigger
    sinks = served_sinks(lake_sinks(spark, settings), once)

    def start(writer: QueryWriter, trigger: dict[str, object], max_offsets: int) -> StreamingQuery:
        return (
            kafka_messages(spark, settings, max_offsets)
            .writeStream.queryName(writer.query_name)
            .option("checkpointLocation", checkpoint_location(settings, writer.query_name))
            .foreachBatch(writer)
            .trigger(**trigger)
            .start()
        )

    def warehouse() -> StreamingQuery:
        writer = WarehouseWriter(spark, settings, decoder, sinks[WAREHOUSE_QUERY])
        return start(writer, warehouse_trigger, settings.stream_max_offsets_per_trigger)

    def lake() -> StreamingQuery:
        writer = LakeWriter(spark, settings, decoder, sinks[LAKE_QUERY])
        trigger = trigger_options(settings.stream_lake_trigger, once)
        return start(writer, trigger, settings.stream_lake_max_offsets_per_trigger)

    if not once:
        return Streams([warehouse(), lake()])
    if warehouse_behind_lake(spark, settings):
        log.info("the warehouse is behind the lake: the warehouse query runs to the end first")
        Streams([warehouse()]).wait(once=True)
    return Streams([lake()])


def run_stream(spark: SparkSession, settings: Settings, once: bool = False) -> dict[str, dict]:
    """Run the job (to the end of the topic when once); return each query's last progress."""
    streams = start_stream(spark, settings, once)
    try:
        streams.wait(once)
    finally:
        streams.stop()
    return {q.name: q.lastProgress for q in streams.queries}


def run_job(settings: Settings, once: bool = False) -> int:
    """Build the SparkSession, run the streaming job and return an exit code."""
    configure_logging(settings)
    spark = build_spark(settings, app_name="sf311-stream")
    try:
        progress = run_stream(spark, settings, once)
    finally:
        spark.stop()
    log.info("stream finished; last progress: %s", progress)
    return 0
