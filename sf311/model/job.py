"""The training job: silver.cases -> fitted forest -> MLflow run, registry and champion alias."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sf311.lakehouse.silver import live
from sf311.model.registry import Decision, log_and_register
from sf311.model.train import TrainConfig, fit_and_evaluate
from sf311.settings import Settings


def split_from_newest(cases: DataFrame, test_days: int, train_days: int) -> TrainConfig:
    """Return a config testing on the newest `test_days` and training on `train_days` before."""
    newest = cases.agg(F.max("requested_datetime").alias("t")).first()["t"]
    if newest is None:
        raise ValueError("silver.cases is empty: nothing to train on")
    test_start: datetime = newest - timedelta(days=test_days)
    return TrainConfig(test_start=test_start, train_start=test_start - timedelta(days=train_days))


def train_and_register(settings: Settings, spark: SparkSession) -> Decision:
    """Return the champion decision after training on silver.cases and logging to MLflow."""
    cases = live(spark.read.format("delta").load(settings.table_path("silver.cases")))
    cfg = split_from_newest(cases, settings.model_test_days, settings.model_train_days)
    result = fit_and_evaluate(cases, cfg)
    decision = log_and_register(settings, result, cfg)
    print(json.dumps({"decision": decision.as_dict(), "metrics": result.metrics}, default=str))
    return decision
