"""The streaming job's wiring: the warehouse and lake queries over the cases topic, their
triggers and checkpoints; a bounded run (`--once`) runs the lake query alone over every sink."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
import requests
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from sf311.contract.registry import RegistryError, SchemaRegistry
from sf311.contract.schema import reader_schema
from sf311.errors import ServiceUnavailable, first_line
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
from sf311.warehouse.ledgers import LakeLedger, lake_spool
from sf311.warehouse.retry import with_retries

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
    # Every sink the queries keep: each one's idle() runs about every second (wait, not once),
    # its finish() once every query has finished (wait, once).
    sinks: list[Sink] = field(default_factory=list)
    # Called about every second while the queries run (wait, not once), and once they stop.
    tick: Callable[[], object] = lambda: None

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

    def between(self) -> None:
        """Do what is due between batches: the tick, then each sink's idle()."""
        self.tick()
        for sink in self.sinks:
            sink.idle()

    def wait(self, once: bool) -> None:
        """Return when every query has finished (once, each sink's finish() done then) or when
        any has stopped; a failure raises."""
        if once:
            for q in self.queries:
                q.awaitTermination()
        else:
            # Not awaitAnyTermination: it returns at once for any query ended in this session.
            while self.active:
                self.queries[0].awaitTermination(1)
                self.between()
        error = self.exception()
        if error is not None:
            raise error
        if once:
            self.finish()

    def finish(self) -> None:
        """Run each sink's finish(): those that write from the driver (Postgres) in a thread,
        beside the others' Spark work, which none of them waits for."""
        with ThreadPoolExecutor(1, "sf311-warehouse-finish") as beside:
            pending = [beside.submit(s.finish) for s in self.sinks if s.collected]
            for sink in self.sinks:
                if not sink.collected:
                    sink.finish()
            for future in pending:
                future.result()


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


def start_stream(
    spark: SparkSession,
    settings: Settings,
    once: bool = False,
    extra_sinks: Sequence[type[Sink]] = (),
) -> Streams:
    """Return the started queries of the cases topic: the warehouse and lake queries, or for a
    bounded run (once) the lake query alone, writing every sink (extra_sinks after SINKS)."""
    use_write_conf(spark)
    quiet_hint_warnings(spark)
    decoder = BatchDecoder(
        SchemaRegistry(settings.schema_registry_url),
        reader_schema(settings.schemas_dir),
        retry_seconds=settings.stream_registry_retry_seconds,
    )
    decoder.learn(settings.case_subject)
    warehouse_trigger = trigger_options(settings.stream_trigger, once)
    once = once or "availableNow" in warehouse_trigger
    extra = [sink(spark, settings) for sink in extra_sinks]
    sinks = served_sinks([*lake_sinks(spark, settings), *extra], once)

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
        kept = [*sinks[WAREHOUSE_QUERY], *sinks[LAKE_QUERY]]
        for sink in kept:
            sink.prepare(once=False)
        return Streams([warehouse(), lake()], kept)
    if warehouse_behind_lake(spark, settings):
        log.info("the warehouse is behind the lake: the warehouse query runs to the end first")
        Streams([warehouse()]).wait(once=True)
    for sink in sinks[LAKE_QUERY]:
        sink.prepare(once=True)
    return Streams([lake()], sinks[LAKE_QUERY])


PROBE_SECONDS = 5.0


def _kafka_answers(settings: Settings) -> None:
    # log_level 0: an unreachable broker would print a librdkafka line per attempt.
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 0})
    admin.list_topics(settings.kafka_topic, timeout=PROBE_SECONDS)


def _registry_answers(settings: Settings) -> None:
    url = f"{settings.schema_registry_url.rstrip('/')}/subjects"
    try:
        answer = requests.get(url, timeout=PROBE_SECONDS)
    except requests.RequestException as err:
        raise RegistryError(f"schema registry at {url} unreachable: {err}") from err
    if answer.status_code != 200:
        raise RegistryError(f"schema registry at {url} answered HTTP {answer.status_code}")


def _postgres_answers(settings: Settings) -> None:
    dsn = settings.postgres_dsn.get_secret_value()
    psycopg.connect(dsn, connect_timeout=int(PROBE_SECONDS)).close()


@dataclass(frozen=True)
class Dependency:
    """A service the job reads or writes: how to probe it, what its outage raises, its bound."""

    name: str
    setting: str
    probe: Callable[[Settings], None]
    unavailable: type[Exception]
    bound: Callable[[Settings], float]


DEPENDENCIES = (
    Dependency("kafka", "SF311_KAFKA_BOOTSTRAP_SERVERS", _kafka_answers, KafkaException,
               lambda s: s.stream_kafka_retry_seconds),
    Dependency("schema registry", "SF311_SCHEMA_REGISTRY_URL", _registry_answers, RegistryError,
               lambda s: s.stream_registry_retry_seconds),
    Dependency("postgres", "SF311_POSTGRES_DSN", _postgres_answers, psycopg.OperationalError,
               lambda s: s.stream_pg_retry_seconds),
)  # fmt: skip


def await_dependencies(settings: Settings) -> None:
    """Return once Kafka, the registry and Postgres answer, waiting for each up to its
    stream_*_retry_seconds; raise ServiceUnavailable naming the first that did not."""
    for dep in DEPENDENCIES:
        bound = dep.bound(settings)
        try:
            with_retries(lambda d=dep: d.probe(settings), dep.unavailable, dep.name, bound)
        except dep.unavailable as err:
            raise ServiceUnavailable(
                f"{dep.name} unreachable for {bound:.0f} s ({first_line(err)[:300]}): start it "
                f"(`sf311 up`) or correct {dep.setting}"
            ) from err


def unreachable(settings: Settings) -> list[str]:
    """Return the names of the dependencies that do not answer now."""
    down = []
    for dep in DEPENDENCIES:
        try:
            dep.probe(settings)
        except dep.unavailable:
            down.append(dep.name)
    return down


# How a query's failure names an outage of a dependency (its error text carries the class of
# the Python or Kafka client error); any other failure ends the job.
OUTAGE_MARKS = ("RegistryError", "OperationalError", "org.apache.kafka.common.errors.")
# Restarts in a row, none of them getting a batch through, before the job gives up.
MAX_IDLE_RESTARTS = 3


def _moved(streams: Streams) -> bool:
    return any(p.numInputRows > 0 for q in streams.queries for p in q.recentProgress)


def run_stream(
    spark: SparkSession,
    settings: Settings,
    once: bool = False,
    extra_sinks: Sequence[type[Sink]] = (),
) -> dict[str, dict]:
    """Run the job (to the end of the topic when once); return each query's last progress.

    A query that fails during an outage of Kafka, the registry or Postgres is restarted from
    its checkpoint once they answer (await_dependencies)."""
    ledger = LakeLedger(settings.postgres_dsn.get_secret_value(), lake_spool(settings.state_dir))
    idle_restarts = 0
    while True:
        streams = start_stream(spark, settings, once, extra_sinks)
        lake_ids = [q.id for q in streams.queries if q.name == LAKE_QUERY]
        # A row spooled while Postgres was down is stored once it answers, batches or not.
        streams.tick = lambda ids=lake_ids: [ledger.flush(i) for i in ids]
        try:
            streams.wait(once)
            return {q.name: q.lastProgress for q in streams.queries}
        except Exception as err:  # noqa: BLE001 - re-raised unless an outage explains it
            down = unreachable(settings)
            outage = bool(down) or any(mark in str(err) for mark in OUTAGE_MARKS)
            idle_restarts = 0 if _moved(streams) else idle_restarts + 1
            if not outage or idle_restarts > MAX_IDLE_RESTARTS:
                raise
            log.warning("a query stopped during an outage of %s (%s); restarting it from its "
                        "checkpoint once they answer", ", ".join(down) or "a service",
                        first_line(err)[:300])  # fmt: skip
        finally:
            streams.stop()
            streams.tick()
        await_dependencies(settings)


def run_job(settings: Settings, once: bool = False, extra_sinks: Sequence[type[Sink]] = ()) -> int:
    """Build the SparkSession, run the streaming job and return an exit code; a service that
    stays unreachable raises ServiceUnavailable."""
    configure_logging(settings)
    await_dependencies(settings)
    spark = build_spark(settings, app_name="sf311-stream")
    try:
        progress = run_stream(spark, settings, once, extra_sinks)
    finally:
        spark.stop()
    log.info("stream finished; last progress: %s", progress)
    return 0
