"""The optional Spark standalone cluster: its JVMs, ports and place among the stack's services."""

from __future__ import annotations

from pathlib import Path

import pytest

from sf311.platform import stack
from sf311.platform.services import SparkCluster, spark_home
from sf311.settings import SettingsError, load_settings


def test_master_and_workers_are_separate_jvms_on_loopback(tmp_path: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path, spark_cluster_port=17077, spark_cluster_ui_port=18090,
        spark_cluster_workers=3, spark_worker_memory="768m",
    )  # fmt: skip
    cluster = SparkCluster(settings)
    master, *workers = cluster.launches()
    assert cluster.url == "spark://127.0.0.1:17077"
    assert master.name == "spark-master"
    assert master.argv[0] == str(spark_home() / "bin" / "spark-class")
    assert master.argv[1:] == [
        "org.apache.spark.deploy.master.Master",
        "--host", "127.0.0.1", "--port", "17077", "--webui-port", "18090",
    ]  # fmt: skip
    assert [w.name for w in workers] == ["spark-worker-1", "spark-worker-2", "spark-worker-3"]
    for n, worker in enumerate(workers, start=1):
        args = worker.argv[1:]
        assert args[:2] == ["org.apache.spark.deploy.worker.Worker", "spark://127.0.0.1:17077"]
        flags = dict(zip(args[2::2], args[3::2], strict=True))
        assert flags == {
            "--host": "127.0.0.1", "--cores": "1", "--memory": "768m",
            "--webui-port": str(18090 + n), "--work-dir": str(tmp_path / "spark" / f"worker-{n}"),
        }  # fmt: skip
        assert worker.env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert {e.port for e in cluster.endpoints()} == {17077, 18090, 18091, 18092, 18093}


def test_only_started_by_name_but_stopped_and_shown_with_the_rest(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    assert "spark" not in [s.name for s in stack._selected(settings, None)]
    assert [s.name for s in stack._selected(settings, ["spark"])] == ["spark"]
    assert "spark" in [s.name for s in stack._selected(settings, None, apps=True)]
    assert SparkCluster.optional


def test_worker_memory_must_be_a_spark_size() -> None:
    with pytest.raises(SettingsError, match="SF311_SPARK_WORKER_MEMORY"):
        load_settings(spark_worker_memory="1 GB")
