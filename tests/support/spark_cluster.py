"""A Spark standalone cluster for tests: `sf311 up --only spark` on free ports and a folder of
the test's own, so it never meets a cluster a user started with `make cluster-up`."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sf311.platform import stack
from sf311.platform.process import port_is_free
from sf311.platform.services import SparkCluster
from sf311.settings import Settings, load_settings


def free_port_run(count: int, low: int = 20_000, high: int = 60_000) -> int:
    """Return the first of `count` consecutive free ports on 127.0.0.1."""
    for _ in range(200):
        first = random.randrange(low, high - count)
        if all(port_is_free("127.0.0.1", p) for p in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")


@contextmanager
def spark_cluster(state_dir: Path, workers: int = 2) -> Iterator[Settings]:
    """Yield the settings of a running master and `workers` workers of 1 core and 1 GB each,
    all registered; stop every JVM of it (by pid, process group) on exit."""
    ui = free_port_run(workers + 1)
    settings = load_settings(
        state_dir=state_dir,
        spark_cluster_port=free_port_run(1),
        spark_cluster_ui_port=ui,
        spark_cluster_workers=workers,
        spark_worker_cores=1,
        spark_worker_memory="1g",
    )
    # up() waits until the master's /json lists every worker as alive, and undoes itself on failure.
    stack.up(settings, only=[SparkCluster.name])
    try:
        yield settings
    finally:
        stack.down(settings, only=[SparkCluster.name])


def executor_pythons() -> list[str]:
    """Return the Python that each executor's Python workers run, from a job of 4 tasks."""
    import sys

    from sf311.spark import build_spark

    spark = build_spark(load_settings(), "sf311-tests-executor-python")
    try:
        tasks = spark.sparkContext.parallelize(range(4), 4)
        return sorted(set(tasks.map(lambda _: sys.executable).collect()))
    finally:
        spark.stop()


if __name__ == "__main__":
    # Run in its own process: the test process already holds a local SparkContext.
    print(json.dumps(executor_pythons()))
