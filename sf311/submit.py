"""spark-submit commands of the jobs in jobs/, for schedulers (Airflow) that launch them.

No pyspark import here: the Airflow environment calls this without Spark installed.

The DAGs call this rather than the Spark provider's SparkSubmitOperator (6.3.4 fits Airflow
3.3.2): the operator takes the master, deploy mode and binary from an Airflow connection, a
second place beside Settings, accepts only a `spark-submit` found on PATH, and brings Spark
Connect's client (grpcio, pandas 3) into Airflow's environment. What it mainly adds, driver
tracking in cluster deploy mode, standalone masters refuse for Python jobs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sf311.settings import PROJECT_ROOT, Settings

JOBS = PROJECT_ROOT / "jobs"


def job_file(job: str) -> Path:
    """Return the entry-point file of a job named after it, e.g. 'stream' -> jobs/stream.py."""
    return JOBS / f"{job}.py"


def spark_submit_command(settings: Settings, job: str, *args: str) -> list[str]:
    """Return the spark-submit argv that runs jobs/<job>.py with the project's jars and conf."""
    # The JVM starts before the job's SparkSession builder runs, so jars and driver settings
    # must be on the command line rather than only in build_spark().
    jars = sorted(str(j) for j in settings.jars_dir.glob("*.jar"))
    return [
        str(settings.spark_submit),
        "--master", settings.spark_master,
        "--name", f"sf311-{job}",
        "--properties-file", str(settings.conf_dir / "spark-defaults.conf"),
        "--jars", ",".join(jars),
        *(a for k, v in settings.object_store_conf().items() for a in ("--conf", f"{k}={v}")),
        str(job_file(job)),
        *args,
    ]  # fmt: skip


def spark_submit_env(settings: Settings) -> dict[str, str]:
    """Return the environment spark-submit needs when the caller runs another Python.

    pip's spark-submit finds SPARK_HOME through the `python` on PATH, and Python workers start
    `python3` from PATH: both must be the Python of spark-submit's own environment (an Airflow
    worker runs in its own virtualenv without pyspark)."""
    bin_dir = settings.spark_submit.parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    if settings.spark_python:
        env["PYSPARK_PYTHON"] = str(settings.spark_python)
    elif (bin_dir / "python").exists():
        env["PYSPARK_PYTHON"] = str(bin_dir / "python")
    return env


def run_spark_submit(settings: Settings, job: str, *args: str) -> int:
    """Run a job through spark-submit; return 0 or raise CalledProcessError."""
    subprocess.run(
        spark_submit_command(settings, job, *args), check=True, env=spark_submit_env(settings)
    )
    return 0
