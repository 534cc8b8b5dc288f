"""The one SparkSession factory: Delta, the local jars, conf/spark-defaults.conf, s3a."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from sf311.settings import Settings


def read_spark_conf(path: Path) -> dict[str, str]:
    """Return the key/value pairs of a spark-defaults.conf style file."""
    conf: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value.strip()
    return conf


def spark_jars(settings: Settings) -> list[Path]:
    """Return the jars `spark.jars` names, failing clearly when setup has not fetched them."""
    jars = sorted(settings.jars_dir.glob("*.jar"))
    if not any(j.name.startswith("delta-spark") for j in jars):
        raise RuntimeError(
            f"no Delta jar in {settings.jars_dir}: run `make setup` "
            "(or set SF311_SPARK_JARS_DIR to a folder holding the Spark jars)"
        )
    return jars


def build_spark(
    settings: Settings, app_name: str = "sf311", extra: dict[str, str] | None = None
) -> SparkSession:
    """Return a SparkSession with Delta, Kafka, Avro and s3a support, configured from Settings."""
    conf = read_spark_conf(settings.conf_dir / "spark-defaults.conf")
    conf.update(settings.object_store_conf())
    conf.update(extra or {})
    python = str(settings.spark_python or sys.executable)
    # pyspark names its executors' Python from PYSPARK_PYTHON alone (else `python3` from their
    # PATH, which lacks the project); the conf records it for Spark's own launchers.
    os.environ["PYSPARK_PYTHON"] = python
    conf["spark.pyspark.python"] = python
    builder = SparkSession.builder.appName(app_name).master(settings.spark_master)
    builder = builder.config("spark.jars", ",".join(str(j) for j in spark_jars(settings)))
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
