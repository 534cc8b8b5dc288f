"""Small known models for tests: a hand-made scorer and a forest on synthetic cases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import SparkSession

from sf311.model.export import flatten_trees
from sf311.model.scorer import Scorer
from sf311.model.train import TrainConfig, TrainResult, fit_and_evaluate
from tests.support import silver_frames


def _node(
    node_id: int,
    prediction: float,
    left: int = -1,
    right: int = -1,
    feature: int = -1,
    split: Sequence[float] = (),
    categories: int = -1,
) -> dict[str, Any]:
    return {
        "treeID": 0,
        "nodeData": {
            "id": node_id,
            "prediction": prediction,
            "leftChild": left,
            "rightChild": right,
            "split": {
                "featureIndex": feature,
                "leftCategoriesOrThreshold": list(split),
                "numCategories": categories,
            },
        },
    }


def paper_scorer(
    labels: Sequence[str],
    groups: Mapping[str, Sequence[float]] | None = None,
    version: str = "7",
) -> Scorer:
    """Return a one-tree scorer worked out on paper: service_name labels[0] -> 2.0; otherwise
    hour <= 12 -> 3.0, else 4.0 (log1p hours); interval global [-1, 0, +1] or per `groups`."""
    nodes = [
        _node(0, 0.0, left=1, right=2, feature=0, split=[0.0], categories=len(labels) + 1),
        _node(1, 2.0),
        _node(2, 0.0, left=3, right=4, feature=1, split=[12.0]),
        _node(3, 3.0),
        _node(4, 4.0),
    ]
    spec = {
        "categorical": ["service_name"],
        "numeric": ["hour"],
        "labels": {"service_name": list(labels)},
        "combine": "sum",
        "calibration": {
            "group_column": "service_name",
            "coverage": 0.8,
            "global": [-1.0, 0.0, 1.0],
            "groups": {g: list(q) for g, q in (groups or {}).items()},
        },
        "model_version": version,
    }
    return Scorer(spec, flatten_trees(nodes, {0: 1.0}))


def fit_synthetic(
    spark: SparkSession, num_trees: int, max_depth: int, rows: int = 3000, seed: int = 11
) -> tuple[TrainResult, TrainConfig]:
    """Return a small forest fit on seeded synthetic cases (test on the newest fifth)."""
    cases = silver_frames.synthetic_silver_cases(rows, seed=seed)
    test_start = cases["requested_datetime"].iloc[rows * 4 // 5].to_pydatetime()
    cfg = TrainConfig(
        test_start=test_start, num_trees=num_trees, max_depth=max_depth, calibration_days=90
    )
    return fit_and_evaluate(silver_frames.to_spark(spark, cases).cache(), cfg), cfg
