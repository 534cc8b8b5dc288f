"""Stress on the real sample: subtypes training never saw are scored like their category."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pyspark.sql import functions as F

from sf311.contract.city import LOCAL_ZONE
from sf311.model.features import LABEL, labelled
from sf311.model.train import TrainConfig, fit_pipeline, max_categories, with_recency_weight
from tests.support import silver_frames

TRAIN_START = datetime(2015, 1, 1, tzinfo=LOCAL_ZONE)
TEST_START = datetime(2018, 1, 1, tzinfo=LOCAL_ZONE)
TEST_END = datetime(2019, 1, 1, tzinfo=LOCAL_ZONE)


def test_held_out_subtypes_score_no_worse_than_their_category_median(spark, shared_data) -> None:
    cases = silver_frames.silver_cases_from_api_csv(shared_data / "cases_10k_2008_2019.csv")
    data = labelled(silver_frames.to_spark(spark, cases)).cache()
    subtypes = sorted(r[0] for r in data.select("service_subtype").distinct().collect())
    rng = np.random.default_rng(19)
    held = [str(s) for s in rng.choice(subtypes, size=int(0.3 * len(subtypes)), replace=False)]
    t = F.col("requested_datetime")
    train = data.where((t >= F.lit(TRAIN_START)) & (t < F.lit(TEST_START)))
    train = train.where(~F.col("service_subtype").isin(held))
    test = data.where((t >= F.lit(TEST_START)) & (t < F.lit(TEST_END)))
    test = test.where(F.col("service_subtype").isin(held))
    cfg = TrainConfig(test_start=TEST_START)
    train = with_recency_weight(train, TEST_START, cfg.half_life_days).cache()
    model = fit_pipeline(cfg, train, max(32, max_categories(train, cfg.categorical) + 1))

    scored = model.transform(test).select("service_name", LABEL, "prediction").toPandas()
    medians = train.groupBy("service_name").agg(F.percentile(LABEL, 0.5).alias("m")).toPandas()
    overall = float(train.agg(F.percentile(LABEL, 0.5)).first()[0])
    category = scored.merge(medians, on="service_name", how="left")["m"].fillna(overall)
    assert len(scored) >= 200  # enough held-out cases for the comparison to mean something
    model_mae = float(np.mean(np.abs(scored["prediction"] - scored[LABEL])))
    category_mae = float(np.mean(np.abs(category.to_numpy() - scored[LABEL].to_numpy())))
    assert model_mae <= category_mae, (model_mae, category_mae)
