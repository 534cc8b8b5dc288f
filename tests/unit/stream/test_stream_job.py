"""Wiring of the streaming job: triggers, checkpoints, spark-submit, migrations, entry points."""

from __future__ import annotations

import importlib.util
import json
import threading
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from sf311.cli import build_parser
from sf311.lakehouse.batch import not_loaded, warehouse_rows
from sf311.lakehouse.checkpoints import QUERIES, checkpoint_location, committed_offsets
from sf311.lakehouse.stream import HINT_LOGGER, Streams, quiet_hint_warnings, trigger_options
from sf311.settings import load_settings
from sf311.submit import job_file, spark_submit_command
from sf311.warehouse.migrate import MigrationError, load_migrations
from sf311.warehouse.offsets import OffsetRange

JOB = job_file("stream")


@pytest.mark.parametrize(
    ("trigger", "once", "expected"),
    [
        ("10 seconds", False, {"processingTime": "10 seconds"}),
        ("10 seconds", True, {"availableNow": True}),
        ("availableNow", False, {"availableNow": True}),
        ("available_now", False, {"availableNow": True}),
    ],
)
def test_one_setting_switches_between_processing_time_and_available_now(trigger, once, expected):
    assert trigger_options(trigger, once) == expected


def test_each_query_checkpoints_under_the_configured_root():
    settings = load_settings(checkpoint_path="s3a://bucket/checkpoints/")
    assert [checkpoint_location(settings, q) for q in QUERIES] == [
        "s3a://bucket/checkpoints/sf311_warehouse",
        "s3a://bucket/checkpoints/sf311_lake",
    ]


class _Finisher:
    """A sink's finish(), recording the thread it ran on."""

    def __init__(self, collected: bool, wait_for: threading.Event, done: threading.Event):
        self.collected = collected
        self.wait_for, self.done = wait_for, done
        self.thread: str | None = None

    def finish(self) -> None:
        # The Spark sink's finish waits for the Postgres one to begin: side by side, or stuck.
        assert self.wait_for.wait(10), "the other finish() never began"
        self.thread = threading.current_thread().name
        self.done.set()


def test_a_bounded_runs_postgres_finish_runs_beside_the_spark_sinks_finish():
    postgres_began = threading.Event()
    spark_sink = _Finisher(False, postgres_began, threading.Event())
    postgres_sink = _Finisher(True, _set(threading.Event()), postgres_began)
    Streams([], [spark_sink, postgres_sink]).finish()
    assert spark_sink.thread == threading.current_thread().name
    assert postgres_sink.thread not in (None, spark_sink.thread)


def test_a_failed_postgres_finish_fails_the_bounded_run():
    class Failing:
        collected = True

        def finish(self) -> None:
            raise RuntimeError("postgres gone")

    ran = threading.Event()
    spark_sink = _Finisher(False, _set(threading.Event()), ran)
    with pytest.raises(RuntimeError, match="postgres gone"):
        Streams([], [Failing(), spark_sink]).finish()
    assert ran.is_set()


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


def test_spark_submit_command_runs_the_job_file_with_jars_conf_and_once(tmp_path):
    (tmp_path / "delta-spark_2.13-4.4.0.jar").touch()
    (tmp_path / "spark-avro_2.13-4.2.0.jar").touch()
    settings = load_settings(spark_jars_dir=tmp_path, spark_master="spark://h:7077")
    cmd = spark_submit_command(settings, "stream", "--once")
    assert cmd[0] == str(settings.spark_submit)
    assert cmd[cmd.index("--master") + 1] == "spark://h:7077"
    assert cmd[cmd.index("--jars") + 1].split(",") == [
        str(tmp_path / "delta-spark_2.13-4.4.0.jar"),
        str(tmp_path / "spark-avro_2.13-4.2.0.jar"),
    ]
    assert cmd[-2:] == [str(JOB), "--once"]
    assert spark_submit_command(settings, "stream")[-1] == str(JOB)


def test_job_entry_point_imports_and_exposes_main():
    spec = importlib.util.spec_from_file_location("stream_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)


def test_cli_has_stream_and_db_migrate():
    parser, commands = build_parser()
    assert parser.parse_args(["stream", "--once"]).once is True
    assert parser.parse_args(["db", "migrate"]).command == "db"
    assert parser.parse_args(["replay"]).command == "replay"
    assert {"stream", "db", "replay"} <= set(commands)


def test_repository_migrations_are_numbered_without_gaps():
    names = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    assert names[0] == "0001_cases"
    assert [m.version for m in load_migrations()] == list(range(1, len(names) + 1))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], "without gaps"),
        (["0001_a.sql", "2_b.sql"], "named NNNN_name.sql"),
    ],
)
def test_malformed_migration_folders_are_refused(tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        load_migrations(tmp_path)


def test_warehouse_rows_keep_the_newest_valid_version_and_the_batch_figures():
    t = [datetime(2019, 5, 1, 12, 0, s, tzinfo=UTC) for s in range(60)]
    table = pa.table(
        {
            "reason": [None, None, "missing_id", None, None, None],
            "kafka_timestamp": [t[0], t[10], t[20], t[30], t[40], t[50]],
            "service_request_id": [7, 7, None, 3, 7, 3],
            "updated_datetime": [t[5], t[9], None, t[1], t[9], t[1]],
            "kafka_partition": [1, 1, 0, 0, 1, 0],
            "kafka_offset": [10, 11, 4, 5, 12, 6],
            "status_notes": ["7 old", "7 newest", None, "3 first", "7 same time, later", "3 later"],
        }
    )
    rows = warehouse_rows(table)
    # Newest updated_datetime wins; a tie goes to the later offset.
    assert rows.newest["status_notes"].to_pylist() == ["3 later", "7 same time, later"]
    f = rows.figures
    assert (f.rows_in, f.rows_valid, f.id_min, f.id_max) == (6, 5, 3, 7)
    assert (f.ts_min, f.ts_max, f.ts_p50) == (t[0], t[50], t[20])
    assert f.ts_p05 == t[0]
    # The rejected message at offset 4 counts: the batch covers it.
    assert sorted(rows.offsets, key=lambda r: r.partition) == [
        OffsetRange(0, 4, 6),
        OffsetRange(1, 10, 12),
    ]


def test_warehouse_rows_carry_the_deletions_of_tombstones_no_version_followed():
    t = [datetime(2019, 5, 1, 12, 0, s, tzinfo=UTC) for s in range(10)]
    table = pa.table(
        {
            "reason": [None, "deletion", "deletion", None, "deletion", "deletion"],
            "kafka_timestamp": [t[0], t[1], t[2], t[3], t[4], t[5]],
            "service_request_id": [7, 7, 8, 8, 9, 9],
            "updated_datetime": [t[0], None, None, t[0], None, None],
            "kafka_partition": [0] * 6,
            "kafka_offset": list(range(6)),
        }
    )
    rows = warehouse_rows(table)
    # 7 deleted after its version, 8 back after its tombstone, 9 at its newest tombstone.
    assert rows.deleted == [(7, t[1]), (9, t[5])]
    assert (rows.figures.rows_valid, rows.figures.rows_deleted) == (2, 4)
    assert rows.newest["service_request_id"].to_pylist() == [7, 8]


def test_an_empty_batch_has_no_rows_and_no_figures():
    empty = pa.table(
        {
            "reason": pa.array([], pa.string()),
            "kafka_timestamp": pa.array([], pa.timestamp("us", tz="UTC")),
            "service_request_id": pa.array([], pa.int64()),
            "updated_datetime": pa.array([], pa.timestamp("us", tz="UTC")),
            "kafka_partition": pa.array([], pa.int32()),
            "kafka_offset": pa.array([], pa.int64()),
        }
    )
    rows = warehouse_rows(empty)
    assert (rows.figures.rows_in, rows.newest.num_rows, rows.figures.ts_min) == (0, 0, None)
    assert rows.offsets == []


def test_not_loaded_keeps_messages_at_or_above_their_partitions_next_offset(spark):
    messages = spark.createDataFrame(
        [(0, 4), (0, 5), (0, 6), (1, 0), (1, 9), (2, 0)], "partition int, offset long"
    )
    kept = messages.where(not_loaded({0: 5, 1: 9}))
    # Partition 2 has no next_offset: nothing of it is loaded yet.
    assert sorted(tuple(r) for r in kept.collect()) == [(0, 5), (0, 6), (1, 9), (2, 0)]
    assert messages.where(not_loaded({})).count() == 6


def test_the_job_keeps_only_errors_of_sparks_hint_logger(spark):
    log_manager = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager
    quiet_hint_warnings(spark)
    assert log_manager.getLogger(HINT_LOGGER).getLevel().toString() == "ERROR"


def test_committed_offsets_are_read_through_sparks_file_system(spark, tmp_path):
    def batch(n: int, offsets: dict[str, int], committed: bool) -> None:
        (tmp_path / "offsets").mkdir(exist_ok=True)
        (tmp_path / "commits").mkdir(exist_ok=True)
        meta = json.dumps({"batchWatermarkMs": 0, "batchTimestampMs": 0, "conf": {}})
        (tmp_path / "offsets" / str(n)).write_text(f"v1\n{meta}\n{json.dumps({'t': offsets})}")
        if committed:
            (tmp_path / "commits" / str(n)).write_text('v1\n{"nextBatchWatermarkMs":0}')

    location = f"file://{tmp_path}"
    assert committed_offsets(spark, location, "t") == {}
    batch(0, {"0": 10, "1": 7}, committed=True)
    batch(1, {"0": 25, "1": 9}, committed=True)
    batch(2, {"0": 40, "1": 30}, committed=False)  # planned, not committed
    assert committed_offsets(spark, location, "t") == {0: 25, 1: 9}
    assert committed_offsets(spark, str(tmp_path), "other") == {}
