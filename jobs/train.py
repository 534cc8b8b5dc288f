"""spark-submit entry point of the training job: `spark-submit jobs/train.py`."""

from __future__ import annotations

import sys

from sf311.model.job import train_and_register
from sf311.settings import load_settings
from sf311.spark import build_spark


def main() -> int:
    """Train on silver.cases, log and register the model; return 0."""
    settings = load_settings()
    spark = build_spark(settings, "sf311-train")
    try:
        train_and_register(settings, spark)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
