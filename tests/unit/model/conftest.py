"""A hand-made two-split model whose predictions can be worked out on paper."""

from __future__ import annotations

import pytest

from sf311.model.export import flatten_trees
from sf311.model.scorer import Scorer


def _node(node_id, prediction, left=-1, right=-1, feature=-1, split=(), num_categories=-1):
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
                "numCategories": num_categories,
            },
        },
    }


@pytest.fixture
def paper_scorer() -> Scorer:
    """service_name A -> 2.0; otherwise hour <= 12 -> 3.0, else 4.0 (log1p hours)."""
    nodes = [
        _node(0, 0.0, left=1, right=2, feature=0, split=[0.0], num_categories=3),
        _node(1, 2.0),
        _node(2, 0.0, left=3, right=4, feature=1, split=[12.0]),
        _node(3, 3.0),
        _node(4, 4.0),
    ]
    spec = {
        "categorical": ["service_name"],
        "numeric": ["hour"],
        "labels": {"service_name": ["A", "B"]},
        "combine": "sum",
        "calibration": {
            "group_column": "service_name",
            "coverage": 0.8,
            "global": [-1.0, 0.0, 1.0],
            "groups": {"A": [-0.5, 0.1, 0.5]},
        },
        "model_version": "7",
    }
    return Scorer(spec, flatten_trees(nodes, {0: 1.0}))
