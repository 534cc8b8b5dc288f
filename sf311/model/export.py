"""Export a fitted Spark pipeline (levels, StringIndexer, VectorAssembler, trees) for Scorer."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer, StringIndexerModel, VectorAssembler
from pyspark.ml.regression import GBTRegressionModel, RandomForestRegressionModel

from sf311.model.levels import stage_levels
from sf311.model.scorer import SCALE_FOLDER, SPEC_FILE, TREES_FILE


def _read_parquet(folder: Path) -> list[dict[str, Any]]:
    return pq.read_table(str(folder)).to_pylist()


def _ensemble_folder(saved: Path, index: int) -> Path:
    return next((saved / "stages").glob(f"{index}_*"))


def flatten_trees(nodes: list[dict[str, Any]], weights: dict[int, float]) -> dict[str, np.ndarray]:
    """Return the nodes of Spark's saved ensemble as flat numpy arrays (children point to self
    at leaves, categorical splits as rows of a boolean mask)."""
    by_tree: dict[int, list[dict[str, Any]]] = {}
    for row in nodes:
        by_tree.setdefault(row["treeID"], []).append(row["nodeData"])
    feature: list[int] = []
    left: list[int] = []
    right: list[int] = []
    cat_row: list[int] = []
    roots: list[int] = []
    threshold: list[float] = []
    value: list[float] = []
    tree_weights: list[float] = []
    masks: list[list[int]] = []
    width = 1
    depth = 0
    for tree_id in sorted(by_tree):
        tree = sorted(by_tree[tree_id], key=lambda n: n["id"])
        base = len(feature)
        roots.append(base)
        tree_weights.append(weights[tree_id])
        for pos, node in enumerate(tree):
            if node["id"] != pos:
                raise ValueError(f"tree {tree_id}: node ids are not 0..n-1")
            split = node["split"]
            value.append(node["prediction"])
            if node["leftChild"] < 0:
                feature.append(-1)
                threshold.append(0.0)
                left.append(base + pos)
                right.append(base + pos)
                cat_row.append(-1)
                continue
            feature.append(split["featureIndex"])
            left.append(base + node["leftChild"])
            right.append(base + node["rightChild"])
            if split["numCategories"] < 0:
                threshold.append(split["leftCategoriesOrThreshold"][0])
                cat_row.append(-1)
            else:
                threshold.append(0.0)
                cat_row.append(len(masks))
                masks.append([int(c) for c in split["leftCategoriesOrThreshold"]])
                width = max(width, split["numCategories"])
        depth = max(depth, _depth(tree))
    cat_mask = np.zeros((max(len(masks), 1), width), dtype=bool)
    for mask_row, cats in enumerate(masks):
        cat_mask[mask_row, cats] = True
    return {
        "feature": np.array(feature, dtype=np.int64),
        "threshold": np.array(threshold, dtype=np.float64),
        "left": np.array(left, dtype=np.int64),
        "right": np.array(right, dtype=np.int64),
        "value": np.array(value, dtype=np.float64),
        "cat_row": np.array(cat_row, dtype=np.int64),
        "cat_mask": cat_mask,
        "roots": np.array(roots, dtype=np.int64),
        "weights": np.array(tree_weights, dtype=np.float64),
        "depth": np.array(depth),
    }


def _depth(tree: list[dict[str, Any]]) -> int:
    deepest = 0
    stack = [(0, 0)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if tree[node]["leftChild"] >= 0:
            stack.append((tree[node]["leftChild"], level + 1))
            stack.append((tree[node]["rightChild"], level + 1))
    return deepest


def export_pipeline(
    model: PipelineModel,
    calibration: Mapping[str, Any],
    out: Path,
    scale: PipelineModel | None = None,
    **extra: Any,
) -> Path:
    """Return `out` after writing scorer.json and trees.npz for the fitted pipeline (and the
    pipeline predicting |residual| of a normalized conformal interval in out/scale)."""
    levels, indexer, assembler, ensemble = model.stages
    if not (
        isinstance(levels, SQLTransformer)
        and isinstance(indexer, StringIndexerModel)
        and isinstance(assembler, VectorAssembler)
    ):
        raise TypeError(
            "expected levels SQLTransformer, StringIndexerModel, VectorAssembler, trees"
        )
    if isinstance(ensemble, RandomForestRegressionModel):
        combine = "mean"
    elif isinstance(ensemble, GBTRegressionModel):
        combine = "sum"
    else:
        raise TypeError(f"cannot export {type(ensemble).__name__}")
    categorical = list(indexer.getInputCols())
    indexed = list(indexer.getOutputCols())
    inputs = list(assembler.getInputCols())
    if inputs[: len(indexed)] != indexed:
        raise ValueError("assembler must take the indexed categoricals first")
    if indexer.getHandleInvalid() != "keep":
        raise ValueError("StringIndexer must use handleInvalid='keep' so unseen labels score")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "pipeline"
        model.write().save(str(saved))
        folder = _ensemble_folder(saved, 3)
        nodes = _read_parquet(folder / "data")
    trees = flatten_trees(nodes, dict(enumerate(ensemble.treeWeights)))
    spec = {
        "format": 2,
        "levels": stage_levels(levels),
        "categorical": categorical,
        "numeric": inputs[len(indexed) :],
        "labels": {
            c: list(labels) for c, labels in zip(categorical, indexer.labelsArray, strict=True)
        },
        "combine": combine,
        "calibration": dict(calibration),
        **extra,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True))
    np.savez_compressed(out / TREES_FILE, **trees)
    if scale is not None:
        export_pipeline(scale, {}, out / SCALE_FOLDER)
    return out
