"""JVM-free scoring of an exported resolution-time model: string indexes and trees in numpy."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sf311.model.features import record_features
from sf311.model.levels import apply_levels, fallbacks

SPEC_FILE = "scorer.json"
TREES_FILE = "trees.npz"
# Subfolder holding the forest of |residual| that scales a normalized conformal interval.
SCALE_FOLDER = "scale"


# Calibration grouped by the forest's own prediction (Mondrian bins), not by a feature.
RAW_BIN = "raw_bin"


def calibration_groups(raw: np.ndarray, keys: Sequence[Any], cal: Mapping[str, Any]) -> list[str]:
    """Return the calibration group of each case: its feature value, or its prediction's bin."""
    if cal["group_column"] == RAW_BIN:
        return [str(b) for b in np.searchsorted(cal["raw_edges"], raw, side="right")]
    return [str(k) for k in keys]


def interval_method(cal: Mapping[str, Any]) -> str:
    """Return a one-line description of a training-time interval calibration."""
    share = round(100 * float(cal.get("coverage", 0.8)))
    if cal["group_column"] == RAW_BIN:
        by = "bins of the forest's own prediction"
    else:
        by = f"{cal['group_column']} ({len(cal['groups'])} with their own quantiles, others global)"
    scaled = ", residuals over a forest's predicted |residual|" if cal.get("scaled") else ""
    shrunk = ""
    if "window_share" in cal:
        pull = "global only" if cal["shrink"] is None else f"{cal['shrink']:g} pseudo-cases"
        shrunk = (
            f", finite-sample ends shrunk toward the global ones ({pull}) on the newest "
            f"{100 * cal['window_share']:.0f} % of the window, chosen on an inner split"
        )
    return f"{share} % split conformal on log1p(hours) residuals, Mondrian by {by}{scaled}{shrunk}"


def interval_bands(
    raw: np.ndarray, keys: Sequence[Any], cal: Mapping[str, Any], scale: np.ndarray | None = None
) -> np.ndarray:
    """Return an (n, 3) array of low, point, high log predictions from raw forest output.

    A `scaled` calibration holds quantiles of residuals divided by the predicted |residual|
    (normalized conformal): they are multiplied back by each case's `scale`."""
    groups, fallback = cal["groups"], cal["global"]
    q = np.array([groups.get(g, fallback) for g in calibration_groups(raw, keys, cal)])
    q = q.reshape(len(raw), 3)
    if cal.get("scaled"):
        if scale is None:
            raise ValueError("a scaled calibration needs the predicted scale of every case")
        q = q * np.asarray(scale, dtype=np.float64)[:, None]
    point = np.maximum(raw + q[:, 1], 0.0)
    low = np.maximum(raw + q[:, 0], 0.0)
    high = np.maximum(raw + q[:, 2], low)
    return np.column_stack([low, point, high])


def _decision_table(
    trees: Mapping[str, np.ndarray], categorical: int
) -> tuple[dict[int, np.ndarray], np.ndarray, int]:
    """Return per numeric feature its sorted split thresholds, and the flat go-left table.

    A number x goes left at threshold t_j exactly when fewer than j + 1 thresholds of its
    feature lie below x, so with x replaced by that count (its rank) every split, numeric or
    categorical, is one lookup in row `node` of the table: one numpy gather per tree level.
    """
    feature, threshold, cat_row = trees["feature"], trees["threshold"], trees["cat_row"]
    split = feature >= 0
    numeric = split & (cat_row < 0)
    if np.any(feature[split & (cat_row >= 0)] >= categorical) or np.any(
        feature[numeric] < categorical
    ):
        raise ValueError("categorical splits must use the first (indexed) features only")
    cuts = {
        int(f): np.unique(threshold[numeric & (feature == f)]) for f in np.unique(feature[numeric])
    }
    width = max([trees["cat_mask"].shape[1], *(c.size + 1 for c in cuts.values())])
    table = np.zeros((feature.size, width), dtype=bool)
    for node in np.flatnonzero(numeric):
        rank = np.searchsorted(cuts[int(feature[node])], threshold[node])
        table[node, : rank + 1] = True
    cats = np.flatnonzero(split & (cat_row >= 0))
    mask = trees["cat_mask"]
    table[cats, : mask.shape[1]] = mask[cat_row[cats]]
    return cuts, table.ravel(), width


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

    def __init__(
        self,
        spec: Mapping[str, Any],
        trees: Mapping[str, np.ndarray],
        scale: Scorer | None = None,
    ) -> None:
        self.spec = dict(spec)
        self._scale = scale
        self.categorical: list[str] = spec["categorical"]
        self.levels: dict[str, Any] | None = spec.get("levels")
        if self.levels is not None:
            # Sets: membership is tested on every request.
            self.levels = {
                **self.levels,
                "kept": {c: set(v) for c, v in self.levels["kept"].items()},
            }
        self.numeric: list[str] = spec["numeric"]
        self._indexes = [
            {label: i for i, label in enumerate(spec["labels"][c])} for c in self.categorical
        ]
        self._unseen = [len(spec["labels"][c]) for c in self.categorical]
        self._feature = np.maximum(trees["feature"], 0)
        # Leaves read feature 0 and lead back to themselves: every row walks `depth` steps.
        self._children = np.column_stack([trees["right"], trees["left"]]).ravel()
        self._value = trees["value"]
        self._cuts, self._decision, self._width = _decision_table(trees, len(self.categorical))
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
        scale = Path(folder) / SCALE_FOLDER
        return cls(spec, trees, cls.load(scale) if scale.is_dir() else None)

    @property
    def version(self) -> str | None:
        """Return the model version recorded in the spec, if any."""
        return self.spec.get("model_version")

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Return the feature matrix in the assembler's column order (indexes as floats)."""
        if self.levels is not None:
            rows = [apply_levels(row, self.levels) for row in rows]
        k = len(self.categorical)
        out = np.empty((len(rows), k + len(self.numeric)), dtype=np.float64)
        for j, (name, index, unseen) in enumerate(
            zip(self.categorical, self._indexes, self._unseen, strict=True)
        ):
            out[:, j] = [index.get(row[name], unseen) for row in rows]
        for j, name in enumerate(self.numeric, start=k):
            out[:, j] = [row[name] for row in rows]
        return out

    def fallbacks(self, row: Mapping[str, Any]) -> dict[str, str]:
        """Return, per input of a feature row training saw too rarely, what stood in for it."""
        if self.levels is not None:
            return fallbacks(row, self.levels)
        return {
            name: "unseen level"
            for name, index in zip(self.categorical, self._indexes, strict=True)
            if row[name] not in index
        }

    def unseen(self, row: Mapping[str, Any]) -> list[str]:
        """Return the inputs of a feature row that training never saw (or too rarely)."""
        return list(self.fallbacks(row))

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Return the tree ensemble's raw prediction (log1p hours) for a feature matrix."""
        n, k = x.shape
        nodes = np.tile(self._roots, (n, 1))
        offsets = (np.arange(n) * k)[:, None]
        bins = self._bins(x).ravel()
        for _ in range(self._depth):
            at = bins[offsets + self._feature[nodes]]
            go_left = self._decision[nodes * self._width + at]
            nodes = self._children[2 * nodes + go_left]
        leaf = self._value[nodes]
        if self._combine == "mean":
            return leaf.sum(axis=1) / leaf.shape[1]
        return leaf @ self._weights

    def _bins(self, x: np.ndarray) -> np.ndarray:
        """Return x with category indexes clipped to the table and numbers as threshold ranks."""
        bins = np.zeros(x.shape, dtype=np.int64)
        k = len(self.categorical)
        bins[:, :k] = np.minimum(x[:, :k].astype(np.int64), self._width - 1)
        for j, cuts in self._cuts.items():
            bins[:, j] = np.searchsorted(cuts, x[:, j], side="left")
        return bins

    @property
    def calibration(self) -> dict[str, Any]:
        """Return the training-time interval calibration exported with the model."""
        return self._calibration

    def raw_and_scale(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the forest's raw predictions and the predicted |residual| (None if unused)."""
        raw = self.predict_matrix(self.matrix(rows))
        scale = self._scale.predict_matrix(self._scale.matrix(rows)) if self._scale else None
        return raw, scale

    def predict_features(
        self, rows: Sequence[Mapping[str, Any]], calibration: Mapping[str, Any] | None = None
    ) -> Prediction:
        """Return predictions and intervals for feature rows built by record_features, under
        `calibration` (an online recalibration) or else the training-time one."""
        cal = self._calibration if calibration is None else calibration
        raw, scale = self.raw_and_scale(rows)
        column = cal["group_column"]
        keys = [None] * len(rows) if column == RAW_BIN else [row[column] for row in rows]
        low, point, high = interval_bands(raw, keys, cal, scale).T
        return Prediction(log_hours=point, log_lower=low, log_upper=high)

    def predict(self, cases: Iterable[Mapping[str, Any]]) -> Prediction:
        """Return predictions and intervals for silver-shaped case records."""
        return self.predict_features([record_features(c) for c in cases])
