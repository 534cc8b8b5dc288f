"""JVM-free scoring of an exported resolution-time model: string indexes and trees in numpy."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sf311.model.features import record_features

SPEC_FILE = "scorer.json"
TREES_FILE = "trees.npz"


# Calibration grouped by the forest's own prediction (Mondrian bins), not by a feature.
RAW_BIN = "raw_bin"


def calibration_groups(raw: np.ndarray, keys: Sequence[Any], cal: Mapping[str, Any]) -> list[str]:
    """Return the calibration group of each case: its feature value, or its prediction's bin."""
    if cal["group_column"] == RAW_BIN:
        return [str(b) for b in np.searchsorted(cal["raw_edges"], raw, side="right")]
    return [str(k) for k in keys]


def interval_bands(raw: np.ndarray, keys: Sequence[Any], cal: Mapping[str, Any]) -> np.ndarray:
    """Return an (n, 3) array of low, point, high log predictions from raw forest output."""
    groups, fallback = cal["groups"], cal["global"]
    q = np.array([groups.get(g, fallback) for g in calibration_groups(raw, keys, cal)])
    q = q.reshape(len(raw), 3)
    point = np.maximum(raw + q[:, 1], 0.0)
    low = np.maximum(raw + q[:, 0], 0.0)
    high = np.maximum(raw + q[:, 2], low)
    return np.column_stack([low, point, high])


@dataclass(frozen=True)
class Prediction:
    """Predicted resolution for a batch: log1p(hours) point and 80 % interval, and in hours."""

    log_hours: np.ndarray
    log_lower: np.ndarray
    log_upper: np.ndarray

    @property
    def hours(self) -> np.ndarray:
        """Return the point prediction in hours."""
        return np.expm1(self.log_hours)

    @property
    def lower_hours(self) -> np.ndarray:
        """Return the lower end of the interval in hours."""
        return np.expm1(self.log_lower)

    @property
    def upper_hours(self) -> np.ndarray:
        """Return the upper end of the interval in hours."""
        return np.expm1(self.log_upper)


class Scorer:
    """Scores cases exactly as the exported Spark pipeline does, plus the conformal interval."""

    def __init__(self, spec: Mapping[str, Any], trees: Mapping[str, np.ndarray]) -> None:
        self.spec = dict(spec)
        self.categorical: list[str] = spec["categorical"]
        self.numeric: list[str] = spec["numeric"]
        self._indexes = [
            {label: i for i, label in enumerate(spec["labels"][c])} for c in self.categorical
        ]
        self._unseen = [len(spec["labels"][c]) for c in self.categorical]
        self._feature = trees["feature"]
        self._threshold = trees["threshold"]
        self._left = trees["left"]
        self._right = trees["right"]
        self._value = trees["value"]
        self._cat_row = trees["cat_row"]
        self._cat_mask = trees["cat_mask"]
        self._roots = trees["roots"]
        self._weights = trees["weights"]
        self._depth = int(trees["depth"])
        self._combine = spec["combine"]
        self._calibration = spec["calibration"]

    @classmethod
    def load(cls, folder: Path) -> Scorer:
        """Return the scorer saved in `folder` by sf311.model.export."""
        spec = json.loads((Path(folder) / SPEC_FILE).read_text())
        with np.load(Path(folder) / TREES_FILE) as npz:
            trees = {k: npz[k] for k in npz.files}
        return cls(spec, trees)

    @property
    def version(self) -> str | None:
        """Return the model version recorded in the spec, if any."""
        return self.spec.get("model_version")

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Return the feature matrix in the assembler's column order (indexes as floats)."""
        k = len(self.categorical)
        out = np.empty((len(rows), k + len(self.numeric)), dtype=np.float64)
        for j, (name, index, unseen) in enumerate(
            zip(self.categorical, self._indexes, self._unseen, strict=True)
        ):
            out[:, j] = [index.get(row[name], unseen) for row in rows]
        for j, name in enumerate(self.numeric, start=k):
            out[:, j] = [row[name] for row in rows]
        return out

    def unseen(self, row: Mapping[str, Any]) -> list[str]:
        """Return the categorical features of a feature row that training never saw."""
        return [
            name
            for name, index in zip(self.categorical, self._indexes, strict=True)
            if row[name] not in index
        ]

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Return the tree ensemble's raw prediction (log1p hours) for a feature matrix."""
        n = x.shape[0]
        nodes = np.broadcast_to(self._roots, (n, self._roots.size)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self._depth):
            feat = self._feature[nodes]
            values = x[rows, np.maximum(feat, 0)]
            cat_row = self._cat_row[nodes]
            go_left = values <= self._threshold[nodes]
            is_cat = cat_row >= 0
            if is_cat.any():
                cats = np.clip(values[is_cat].astype(np.int64), 0, self._cat_mask.shape[1] - 1)
                go_left[is_cat] = self._cat_mask[cat_row[is_cat], cats]
            nodes = np.where(go_left, self._left[nodes], self._right[nodes])
        leaf = self._value[nodes]
        if self._combine == "mean":
            return leaf.sum(axis=1) / leaf.shape[1]
        return leaf @ self._weights

    def predict_features(self, rows: Sequence[Mapping[str, Any]]) -> Prediction:
        """Return predictions and intervals for feature rows built by record_features."""
        raw = self.predict_matrix(self.matrix(rows))
        column = self._calibration["group_column"]
        keys = [None] * len(rows) if column == RAW_BIN else [row[column] for row in rows]
        low, point, high = interval_bands(raw, keys, self._calibration).T
        return Prediction(log_hours=point, log_lower=low, log_upper=high)

    def predict(self, cases: Iterable[Mapping[str, Any]]) -> Prediction:
        """Return predictions and intervals for silver-shaped case records."""
        return self.predict_features([record_features(c) for c in cases])
