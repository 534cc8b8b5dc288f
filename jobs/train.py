"""spark-submit entry point of the training job: `spark-submit jobs/train.py`."""

from __future__ import annotations

import sys

from sf311.cli import run_reported
from sf311.model.job import train_and_register
from sf311.settings import Settings
from sf311.spark import build_spark


def _train(settings: Settings) -> int:
    spark = build_spark(settings, "sf311-train")
    try:
        train_and_register(settings, spark)
    finally:
        spark.stop()
    return 0


def main() -> int:
    """Train on silver.cases, log and register the model; return the exit code."""
    return run_reported("sf311 train", _train)


if __name__ == "__main__":
    sys.exit(main())
