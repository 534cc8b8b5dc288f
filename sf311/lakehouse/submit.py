"""spark-submit command of the streaming job, for schedulers (Airflow) that launch it."""

from __future__ import annotations

import subprocess

from sf311.settings import PROJECT_ROOT, Settings

JOB = PROJECT_ROOT / "jobs" / "stream.py"


def spark_submit_command(settings: Settings, once: bool = True) -> list[str]:
    """Return the spark-submit argv that runs jobs/stream.py with the project's jars and conf."""
    # The JVM starts before the job's SparkSession builder runs, so jars and driver memory
    # must be on the command line rather than only in build_spark().
    jars = sorted(str(j) for j in settings.jars_dir.glob("*.jar"))
    cmd = [
        str(settings.spark_submit),
        "--master", settings.spark_master,
        "--name", "sf311-stream",
        "--properties-file", str(settings.conf_dir / "spark-defaults.conf"),
        "--jars", ",".join(jars),
        str(JOB),
    ]  # fmt: skip
    return [*cmd, "--once"] if once else cmd


def run_spark_submit(settings: Settings, once: bool = True) -> int:
    """Run the streaming job through spark-submit; return 0 or raise CalledProcessError."""
    subprocess.run(spark_submit_command(settings, once), check=True)
    return 0
