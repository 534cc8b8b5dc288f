"""The JVM-free scorer: by hand on a paper model, and against Spark on held-out rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from sf311.model.columns import FEATURES
from sf311.model.export import export_pipeline
from sf311.model.features import labelled, record_features
from sf311.model.levels import stage_levels
from sf311.model.scorer import Scorer
from sf311.model.train import (
    TrainConfig,
    build_scale_pipeline,
    fit_pipeline,
    fit_scale,
    with_recency_weight,
)
from tests.support import silver_frames


def test_paper_model_scores_as_worked_out(paper_scorer: Scorer) -> None:
    rows = [
        {"service_name": "A", "hour": 20.0},  # left at the root whatever the hour
        {"service_name": "B", "hour": 12.0},  # threshold is inclusive on the left
        {"service_name": "Zed", "hour": 13.0},  # unseen: index 2, not a left category
    ]
    pred = paper_scorer.predict_features(rows)
    np.testing.assert_allclose(pred.log_hours, [2.1, 3.0, 4.0])
    np.testing.assert_allclose(pred.log_lower, [1.5, 2.0, 3.0])
    np.testing.assert_allclose(pred.log_upper, [2.5, 4.0, 5.0])
    np.testing.assert_allclose(pred.hours, np.expm1([2.1, 3.0, 4.0]))
    assert paper_scorer.unseen(rows[2]) == ["service_name"]


@pytest.fixture(scope="module")
def fitted(spark, tmp_path_factory):
    cases = silver_frames.synthetic_silver_cases(4000, seed=3)
    # Values training never sees, so that unseen labels take Spark's 'keep' bucket.
    late = cases["requested_datetime"] >= cases["requested_datetime"].iloc[2800]
    cases.loc[late & (cases.index % 7 == 0), "service_subtype"] = "brand new subtype"
    cases.loc[late & (cases.index % 11 == 0), "source"] = None
    df = labelled(silver_frames.to_spark(spark, cases))
    split = cases["requested_datetime"].iloc[2800].to_pydatetime()
    train = with_recency_weight(df.where(df.requested_datetime < split), split, 365.0)
    test = df.where(df.requested_datetime >= split)
    return cases, train, test, tmp_path_factory.mktemp("scorer")


@pytest.mark.parametrize("algorithm", ["rf", "gbt"])
def test_scorer_matches_spark_on_1000_held_out_rows(fitted, algorithm) -> None:
    cases, train, test, tmp = fitted
    cfg = TrainConfig(
        test_start=datetime(2100, 1, 1, tzinfo=UTC),
        algorithm=algorithm,
        num_trees=12,
        max_iter=5,
        max_depth=6,
        min_instances=5,
    )
    model = fit_pipeline(cfg, train, max_bins=64)
    held = (
        model.transform(test)
        .select("service_request_id", "prediction", *FEATURES)
        .orderBy("service_request_id")
        .limit(1000)
        .toPandas()
    )
    assert len(held) == 1000
    cal = {"group_column": "service_name", "global": [0.0, 0.0, 0.0], "groups": {}}
    scorer = Scorer.load(export_pipeline(model, cal, Path(tmp) / algorithm))
    by_id = cases.set_index("service_request_id")
    records = [
        {**by_id.loc[i].to_dict(), "requested_datetime": by_id.loc[i, "requested_datetime"]}
        for i in held["service_request_id"]
    ]
    rows = [record_features(r) for r in records]
    assert sum(bool(scorer.unseen(r)) for r in rows) > 50
    got = scorer.predict_matrix(scorer.matrix(rows))
    assert np.max(np.abs(got - held["prediction"].to_numpy())) <= 1e-6
    np.testing.assert_allclose(scorer.predict(records).log_hours, np.maximum(got, 0.0))


def test_scale_forest_travels_with_the_scorer_and_sizes_its_intervals(fitted) -> None:
    cases, train, test, tmp = fitted
    cfg = TrainConfig(
        test_start=datetime(2100, 1, 1, tzinfo=UTC),
        num_trees=6,
        max_depth=4,
        min_instances=5,
        scale_trees=5,
        scale_depth=3,
    )
    model = fit_pipeline(cfg, train, max_bins=64)
    scale_pipeline = build_scale_pipeline(cfg, 64, stage_levels(model.stages[0]))
    assert scale_pipeline is not None
    scale = fit_scale(model, train, scale_pipeline)
    held = (
        scale.transform(test)
        .select("service_request_id", "prediction")
        .orderBy("service_request_id")
        .limit(300)
        .toPandas()
    )
    cal = {"group_column": "service_name", "global": [-2.0, 0.0, 2.0], "groups": {}}
    scorer = Scorer.load(export_pipeline(model, {**cal, "scaled": True}, Path(tmp) / "s", scale))
    by_id = cases.set_index("service_request_id")
    records = [
        {**by_id.loc[i].to_dict(), "requested_datetime": by_id.loc[i, "requested_datetime"]}
        for i in held["service_request_id"]
    ]
    rows = [record_features(r) for r in records]
    spark_scale = held["prediction"].to_numpy()
    assert spark_scale.min() > 0
    pred = scorer.predict_features(rows)
    raw = scorer.predict_matrix(scorer.matrix(rows))
    # The interval is raw +- 2 predicted |residuals| of Spark's own scale forest (floored at 0).
    np.testing.assert_allclose(pred.log_upper, raw + 2.0 * spark_scale, atol=1e-6)
    np.testing.assert_allclose(pred.log_lower, np.maximum(raw - 2.0 * spark_scale, 0), atol=1e-6)
