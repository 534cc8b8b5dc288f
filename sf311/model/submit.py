"""spark-submit command of the training job, for schedulers (Airflow) that launch it."""

from __future__ import annotations

import subprocess

from sf311.settings import PROJECT_ROOT, Settings

JOB = PROJECT_ROOT / "jobs" / "train.py"


def spark_submit_command(settings: Settings) -> list[str]:
    """Return the spark-submit argv that runs jobs/train.py with the project's jars and conf."""
    jars = sorted(str(j) for j in settings.jars_dir.glob("*.jar"))
    return [
        str(settings.spark_submit),
        "--master", settings.spark_master,
        "--name", "sf311-train",
        "--properties-file", str(settings.conf_dir / "spark-defaults.conf"),
        "--jars", ",".join(jars),
        str(JOB),
    ]  # fmt: skip


def run_spark_submit(settings: Settings) -> int:
    """Run the training job through spark-submit; return 0 or raise CalledProcessError."""
    subprocess.run(spark_submit_command(settings), check=True)
    return 0
