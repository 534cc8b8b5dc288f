"""Training of the resolution-time model: time split, baselines, Spark MLlib forest, metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.regression import GBTRegressor, RandomForestRegressor
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sf311.model.columns import FEATURES, NUMERIC
from sf311.model.features import LABEL, MAX_HOURS_DEFAULT, label_counts, labelled

# Neighborhood (66 values) is left to lat/long: as a categorical it overfits the forest.
MODEL_CATEGORICAL: tuple[str, ...] = (
    "service_name",
    "service_subtype",
    "agency_responsible",
    "supervisor_district",
    "police_district",
    "source",
)
GROUP_COLUMN = "service_name"


@dataclass(frozen=True)
class TrainConfig:
    """What to train on and how: split instants, forest size, interval coverage."""

    test_start: datetime
    train_start: datetime | None = None
    test_end: datetime | None = None
    calibration_days: int = 365
    half_life_days: float = 365.0
    algorithm: str = "rf"
    num_trees: int = 60
    max_depth: int = 10
    min_instances: int = 10
    max_iter: int = 60
    step_size: float = 0.1
    coverage: float = 0.8
    min_group: int = 100
    calibration_half_life_days: float | None = None
    center_on_median: bool = True
    max_hours: float = MAX_HOURS_DEFAULT
    seed: int = 7
    categorical: tuple[str, ...] = field(default=MODEL_CATEGORICAL)
    numeric: tuple[str, ...] = field(default=NUMERIC)

    def params(self) -> dict[str, Any]:
        """Return the config as flat MLflow-ready params."""
        return {k: (",".join(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """A fitted pipeline, its calibration, holdout metrics and the holdout itself."""

    model: PipelineModel
    calibration: dict[str, Any]
    metrics: dict[str, float]
    counts: dict[str, int]
    holdout: pd.DataFrame


def time_split(
    cases: DataFrame, test_start: datetime, train_start: datetime | None, test_end: datetime | None
) -> tuple[DataFrame, DataFrame]:
    """Return (train, test): requested in [train_start, test_start) and [test_start, test_end)."""
    t = F.col("requested_datetime")
    train = cases.where(t < F.lit(test_start))
    if train_start is not None:
        train = train.where(t >= F.lit(train_start))
    test = cases.where(t >= F.lit(test_start))
    if test_end is not None:
        test = test.where(t < F.lit(test_end))
    return train, test


def with_recency_weight(cases: DataFrame, as_of: datetime, half_life_days: float) -> DataFrame:
    """Return `cases` with `weight` halving every `half_life_days` before `as_of`."""
    age_days = (F.lit(as_of).cast("double") - F.col("requested_datetime").cast("double")) / 86400
    return cases.withColumn("weight", F.pow(F.lit(0.5), age_days / F.lit(half_life_days)))


def build_pipeline(cfg: TrainConfig, max_bins: int) -> Pipeline:
    """Return the unfitted StringIndexer -> VectorAssembler -> tree ensemble pipeline."""
    indexed = [f"{c}_idx" for c in cfg.categorical]
    indexer = StringIndexer(
        inputCols=list(cfg.categorical), outputCols=indexed, handleInvalid="keep"
    )
    assembler = VectorAssembler(inputCols=indexed + list(cfg.numeric), outputCol="features")
    common: dict[str, Any] = dict(
        labelCol=LABEL, weightCol="weight", maxBins=max_bins, seed=cfg.seed
    )
    ensemble: RandomForestRegressor | GBTRegressor
    if cfg.algorithm == "rf":
        ensemble = RandomForestRegressor(
            numTrees=cfg.num_trees,
            maxDepth=cfg.max_depth,
            minInstancesPerNode=cfg.min_instances,
            featureSubsetStrategy="onethird",
            **common,
        )
    elif cfg.algorithm == "gbt":
        ensemble = GBTRegressor(
            maxIter=cfg.max_iter,
            maxDepth=cfg.max_depth,
            minInstancesPerNode=cfg.min_instances,
            stepSize=cfg.step_size,
            subsamplingRate=0.8,
            **common,
        )
    else:
        raise ValueError(f"unknown algorithm {cfg.algorithm!r}: rf or gbt")
    return Pipeline(stages=[indexer, assembler, ensemble])


def max_categories(cases: DataFrame, columns: tuple[str, ...]) -> int:
    """Return the largest number of distinct values among `columns`."""
    row = cases.agg(*[F.countDistinct(c).alias(c) for c in columns]).first()
    return max(int(row[c]) for c in columns)


def residual_quantiles(
    frame: pd.DataFrame, coverage: float, min_group: int, center: bool
) -> dict[str, Any]:
    """Return split-conformal residual quantiles (low, mid, high) per group, with a global row.

    `frame` has columns group, label and raw (the model's prediction on calibration cases),
    and optionally weight: then quantiles are of the weighted residuals, so that recent cases
    count more under drift (non-exchangeable conformal prediction, Barber et al. 2023).
    """
    alpha = (1.0 - coverage) / 2.0
    probs = np.array([alpha, 0.5, 1.0 - alpha])

    def qs(part: pd.DataFrame) -> list[float]:
        resid = (part["label"] - part["raw"]).to_numpy()
        if "weight" in part:
            order = np.argsort(resid)
            cum = np.cumsum(part["weight"].to_numpy()[order])
            at = np.searchsorted(cum / cum[-1], probs, side="left")
            low, mid, high = (float(v) for v in resid[order][np.minimum(at, len(resid) - 1)])
        else:
            low, mid, high = (float(v) for v in np.quantile(resid, probs))
        return [low, mid if center else 0.0, high]

    groups = {str(g): qs(part) for g, part in frame.groupby("group") if len(part) >= min_group}
    return {
        "group_column": GROUP_COLUMN,
        "coverage": coverage,
        "global": qs(frame) if len(frame) else [0.0, 0.0, 0.0],
        "groups": groups,
    }


def apply_calibration(raw: np.ndarray, groups: pd.Series, cal: dict[str, Any]) -> np.ndarray:
    """Return an (n, 3) array of low, point, high log predictions from raw forest output."""
    q = np.array([cal["groups"].get(str(g), cal["global"]) for g in groups]).reshape(-1, 3)
    point = np.maximum(raw + q[:, 1], 0.0)
    low = np.maximum(raw + q[:, 0], 0.0)
    high = np.maximum(raw + q[:, 2], low)
    return np.column_stack([low, point, high])


def regression_metrics(label: np.ndarray, pred: np.ndarray, prefix: str) -> dict[str, float]:
    """Return MAE and median AE in log and hour space and R2 on the log target."""
    err = np.abs(pred - label)
    hours_err = np.abs(np.expm1(pred) - np.expm1(label))
    ss_tot = float(np.sum((label - label.mean()) ** 2))
    return {
        f"{prefix}mae_log": float(err.mean()),
        f"{prefix}medae_log": float(np.median(err)),
        f"{prefix}mae_hours": float(hours_err.mean()),
        f"{prefix}medae_hours": float(np.median(hours_err)),
        f"{prefix}r2_log": 1.0 - float(np.sum((pred - label) ** 2)) / ss_tot,
    }


def median_baselines(train: DataFrame, test: DataFrame) -> pd.DataFrame:
    """Return the test labels with the global and per category+subtype train medians."""
    keys = ["service_name", "service_subtype"]
    overall = train.agg(F.percentile(LABEL, 0.5).alias("m")).first()["m"]
    per_key = train.groupBy(*keys).agg(F.percentile(LABEL, 0.5).alias("subtype_median"))
    out = test.join(per_key, keys, "left").select(
        "service_request_id",
        F.lit(overall).alias("global_median"),
        F.coalesce("subtype_median", F.lit(overall)).alias("subtype_median"),
    )
    return out.toPandas()


def _predict(model: PipelineModel, cases: DataFrame, columns: list[str]) -> pd.DataFrame:
    return model.transform(cases).select(*columns, F.col("prediction").alias("raw")).toPandas()


def fit_and_evaluate(cases: DataFrame, cfg: TrainConfig) -> TrainResult:
    """Return the fitted pipeline with its calibration and holdout metrics on silver cases."""
    counts = label_counts(cases, cfg.max_hours)
    data = labelled(cases, cfg.max_hours)
    train, test = time_split(data, cfg.test_start, cfg.train_start, cfg.test_end)
    train = with_recency_weight(train, cfg.test_start, cfg.half_life_days).cache()
    test = test.cache()
    max_bins = max(32, max_categories(train, cfg.categorical) + 1)
    pipeline = build_pipeline(cfg, max_bins)

    calib_start = cfg.test_start - timedelta(days=cfg.calibration_days)
    proper, calib = time_split(train, calib_start, None, None)
    # Residuals come from a forest that never saw the calibration window (split conformal);
    # the served forest is then refit on the whole training period.
    calib_model = pipeline.fit(proper.cache())
    calib_frame = _predict(calib_model, calib, [GROUP_COLUMN, LABEL, "requested_datetime"])
    calib_frame = calib_frame.rename(columns={GROUP_COLUMN: "group"})
    if cfg.calibration_half_life_days is not None:
        age = pd.Timestamp(cfg.test_start) - pd.to_datetime(
            calib_frame.pop("requested_datetime"), utc=True
        )
        calib_frame["weight"] = 0.5 ** (
            age.dt.total_seconds() / 86400 / cfg.calibration_half_life_days
        )
    calibration = residual_quantiles(calib_frame, cfg.coverage, cfg.min_group, cfg.center_on_median)

    model = pipeline.fit(train)
    # Every feature stays on the holdout so that another model (the champion) can score it.
    holdout = _predict(model, test, ["service_request_id", "requested_datetime", LABEL, *FEATURES])
    holdout = holdout.merge(median_baselines(train, test), on="service_request_id")
    bands = apply_calibration(holdout["raw"].to_numpy(), holdout[GROUP_COLUMN], calibration)
    holdout["low"], holdout["point"], holdout["high"] = bands.T
    metrics = holdout_metrics(holdout)
    metrics.update(
        n_train=float(train.count()), n_test=float(len(holdout)), n_calibration=len(calib_frame)
    )
    counts = {**counts, "train": int(metrics["n_train"]), "test": len(holdout)}
    return TrainResult(model, calibration, metrics, counts, holdout)


def holdout_metrics(holdout: pd.DataFrame) -> dict[str, float]:
    """Return model, raw-forest and baseline metrics and interval coverage on the holdout."""
    y = holdout[LABEL].to_numpy()
    inside = (y >= holdout["low"].to_numpy()) & (y <= holdout["high"].to_numpy())
    metrics = {
        **regression_metrics(y, holdout["point"].to_numpy(), ""),
        **regression_metrics(y, holdout["raw"].to_numpy(), "forest_"),
        **regression_metrics(y, holdout["global_median"].to_numpy(), "baseline_global_"),
        **regression_metrics(y, holdout["subtype_median"].to_numpy(), "baseline_subtype_"),
        "interval_coverage": float(inside.mean()) if len(y) else float("nan"),
        "interval_width_log": float((holdout["high"] - holdout["low"]).mean()),
    }
    return metrics
