"""Training of the resolution-time model: time split, baselines, Spark MLlib forest, metrics."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace
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
from sf311.model.scorer import RAW_BIN, calibration_groups, interval_bands

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
    # Half the fit time of 60 trees for about the same validation error (bench/results).
    num_trees: int = 30
    max_depth: int = 10
    min_instances: int = 10
    max_iter: int = 60
    step_size: float = 0.1
    coverage: float = 0.8
    # Calibration defaults: chosen by backtest on the training period only, see
    # bench/results/model_quality_calibration_selection.json (10**9: one global quantile row).
    min_group: int = 10**9
    calibration_half_life_days: float | None = 90.0
    center_on_median: bool = True
    refit: bool = True
    raw_bins: int = 0
    # > 0: a small forest of |residual| scales the interval per case (normalized conformal);
    # chosen by the same backtest (20 trees against 0).
    scale_trees: int = 20
    scale_depth: int = 4
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
    scale: PipelineModel | None = None


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
    # Node ids cached per row, so no tree is walked from its root at every level.
    common: dict[str, Any] = dict(
        labelCol=LABEL, weightCol="weight", maxBins=max_bins, seed=cfg.seed, cacheNodeIds=True
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


def build_scale_pipeline(cfg: TrainConfig, max_bins: int) -> Pipeline | None:
    """Return the unfitted pipeline predicting |residual| from the features, or None if unused."""
    if cfg.scale_trees <= 0:
        return None
    return build_pipeline(
        replace(cfg, algorithm="rf", num_trees=cfg.scale_trees, max_depth=cfg.scale_depth),
        max_bins,
    )


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


def apply_calibration(
    raw: np.ndarray, groups: pd.Series, cal: dict[str, Any], scale: pd.Series | None = None
) -> np.ndarray:
    """Return an (n, 3) array of low, point, high log predictions from raw forest output."""
    return interval_bands(raw, groups.tolist(), cal, None if scale is None else scale.to_numpy())


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


def _predict(
    model: PipelineModel,
    cases: DataFrame,
    columns: list[str],
    scale: PipelineModel | None = None,
) -> pd.DataFrame:
    if scale is not None:
        cases = scale.transform(cases).select(*cases.columns, F.col("prediction").alias("scale"))
        columns = [*columns, "scale"]
    return model.transform(cases).select(*columns, F.col("prediction").alias("raw")).toPandas()


def recency_weights(requested: pd.Series, as_of: datetime, half_life_days: float) -> np.ndarray:
    """Return weights halving every `half_life_days` before `as_of` for request instants."""
    at = pd.Timestamp(as_of)
    # Spark hands back naive datetimes in its session time zone, UTC (conf/spark-defaults.conf).
    at = at.tz_localize("UTC") if at.tzinfo is None else at
    age = at - pd.to_datetime(requested, utc=True)
    return 0.5 ** (age.dt.total_seconds().to_numpy() / 86400 / half_life_days)


def calibration_window(train: DataFrame, as_of: datetime, days: int) -> int:
    """Return the calibration window in days: `days`, or half the training span if shorter.

    A window as long as the training data would leave the forest fit before it nothing to learn
    from (a young deployment, or the demo's single year)."""
    # In Spark, so that naive and aware instants never meet in Python.
    span = train.agg(F.datediff(F.lit(as_of), F.min("requested_datetime"))).first()[0]
    if span is None:
        raise ValueError(f"no closed cases to train on before {as_of:%Y-%m-%d}")
    return max(1, min(days, span // 2))


def _calibration_split(
    pipeline: Pipeline, train: DataFrame, as_of: datetime, days: int
) -> tuple[PipelineModel, DataFrame, DataFrame]:
    """Return a model fit before the last `days` of `train`, its training cases, those days."""
    proper, calib = time_split(train, as_of - timedelta(days=days), None, None)
    return pipeline.fit(proper), proper, calib


def fit_scale(model: PipelineModel, proper: DataFrame, scale: Pipeline) -> PipelineModel:
    """Return `scale` fit to the |residual| of `model` on the cases `model` was fit on.

    Neither forest sees the calibration window, so its normalized residuals keep the split
    conformal guarantee (locally adaptive conformal, Lei et al. 2018); in-sample residuals
    are too small, but only their relative size matters once the quantiles rescale them."""
    others = [c for c in proper.columns if c != LABEL]
    resid = model.transform(proper).select(
        *others, F.abs(F.col(LABEL) - F.col("prediction")).alias(LABEL)
    )
    return scale.fit(resid)


def _calibration_frame(
    model: PipelineModel, calib: DataFrame, scale: PipelineModel | None
) -> pd.DataFrame:
    frame = _predict(model, calib, [GROUP_COLUMN, LABEL, "requested_datetime"], scale)
    return frame.rename(columns={GROUP_COLUMN: "group"})


def calibrate(frame: pd.DataFrame, as_of: datetime, cfg: TrainConfig) -> dict[str, Any]:
    """Return the residual quantiles of a calibration frame under the config's choices.

    With `raw_bins` > 1 the groups are bins of equal count of the forest's prediction
    instead of categories: the interval then follows how hard cases of that predicted level
    were to predict (a locally adaptive, Mondrian split conformal interval).
    """
    scaled = "scale" in frame
    keep = ["group", LABEL, "requested_datetime", "raw", *(["scale"] if scaled else [])]
    frame = frame[keep].rename(columns={LABEL: "label"})
    binned: dict[str, Any] = {}
    if cfg.raw_bins > 1 and len(frame):
        probs = np.linspace(0, 1, cfg.raw_bins + 1)[1:-1]
        edges = [float(e) for e in np.quantile(frame["raw"], probs)]
        binned = {"group_column": RAW_BIN, "raw_edges": edges}
        frame = frame.assign(group=calibration_groups(frame["raw"].to_numpy(), [], binned))
    if scaled:
        # Quantiles in units of the predicted |residual|: interval_bands scales them back.
        resid = (frame["label"] - frame["raw"]) / frame["scale"]
        frame = frame.drop(columns="scale").assign(label=resid, raw=0.0)
    if cfg.calibration_half_life_days is not None:
        frame = frame.assign(
            weight=recency_weights(
                frame["requested_datetime"], as_of, cfg.calibration_half_life_days
            )
        )
    cal = residual_quantiles(
        frame.drop(columns="requested_datetime"), cfg.coverage, cfg.min_group, cfg.center_on_median
    )
    return {**cal, **binned, "scaled": scaled}


def fit_and_evaluate(cases: DataFrame, cfg: TrainConfig) -> TrainResult:
    """Return the fitted pipeline with its calibration and holdout metrics on silver cases."""
    counts = label_counts(cases, cfg.max_hours)
    data = labelled(cases, cfg.max_hours)
    train, test = time_split(data, cfg.test_start, cfg.train_start, cfg.test_end)
    train = with_recency_weight(train, cfg.test_start, cfg.half_life_days).cache()
    test = test.cache()
    max_bins = max(32, max_categories(train, cfg.categorical) + 1)
    pipeline = build_pipeline(cfg, max_bins)
    scale_pipeline = build_scale_pipeline(cfg, max_bins)

    # Residuals come from a forest that never saw the calibration window (split conformal).
    calibration_days = calibration_window(train, cfg.test_start, cfg.calibration_days)
    calib_model, proper, calib = _calibration_split(
        pipeline, train, cfg.test_start, calibration_days
    )
    scale = fit_scale(calib_model, proper, scale_pipeline) if scale_pipeline else None
    calib_frame = _calibration_frame(calib_model, calib, scale)
    calibration = calibrate(calib_frame, cfg.test_start, cfg)
    # Refitting on the whole period uses the newest cases; validation decides whether the
    # calibrated interval still holds for the refit forest.
    model = pipeline.fit(train) if cfg.refit else calib_model
    # Every feature stays on the holdout so that another model (the champion) can score it.
    holdout = _predict(
        model, test, ["service_request_id", "requested_datetime", LABEL, *FEATURES], scale
    )
    holdout = holdout.merge(median_baselines(train, test), on="service_request_id")
    bands = apply_calibration(
        holdout["raw"].to_numpy(), holdout[GROUP_COLUMN], calibration, holdout.get("scale")
    )
    holdout["low"], holdout["point"], holdout["high"] = bands.T
    metrics = holdout_metrics(holdout)
    metrics.update(
        n_train=float(train.count()),
        n_test=float(len(holdout)),
        n_calibration=len(calib_frame),
        calibration_days=float(calibration_days),
    )
    counts = {**counts, "train": int(metrics["n_train"]), "test": len(holdout)}
    return TrainResult(model, calibration, metrics, counts, holdout, scale)


def interval_figures(label: np.ndarray, bands: np.ndarray) -> dict[str, float]:
    """Return coverage and mean width (log) of (low, point, high) bands, and point MAE/R2."""
    inside = (label >= bands[:, 0]) & (label <= bands[:, 2])
    point = regression_metrics(label, bands[:, 1], "")
    return {
        "coverage": float(inside.mean()),
        "width_log": float((bands[:, 2] - bands[:, 0]).mean()),
        "mae_log": point["mae_log"],
        "r2_log": point["r2_log"],
    }


def select_calibration(
    cases: DataFrame,
    cfg: TrainConfig,
    validation_days: int,
    folds: int,
    grid: dict[str, list[Any]],
) -> pd.DataFrame:
    """Return validation figures of every calibration candidate in every fold (a backtest).

    Only cases requested before `cfg.test_start` are read. Fold k validates on the k-th block
    of `validation_days` counted back from `cfg.test_start`, and replays the design of
    fit_and_evaluate on the cases before that block: a forest fit before a calibration window,
    the window's residuals, a refit on all of them. `grid` maps TrainConfig fields
    (calibration_days, refit, min_group, calibration_half_life_days, center_on_median,
    raw_bins, scale_trees) to candidate values; rank_candidates picks among them.
    """
    data = labelled(cases, cfg.max_hours)
    train, _ = time_split(data, cfg.test_start, cfg.train_start, None)
    train = train.cache()
    max_bins = max(32, max_categories(train, cfg.categorical) + 1)
    pipeline = build_pipeline(cfg, max_bins)
    keep = [GROUP_COLUMN, LABEL]
    fitted = ("calibration_days", "scale_trees")
    others = [k for k in grid if k not in fitted]
    rows = []
    for fold in range(1, folds + 1):
        val_end = cfg.test_start - timedelta(days=(fold - 1) * validation_days)
        val_start = val_end - timedelta(days=validation_days)
        inner, val = time_split(train, val_start, None, val_end)
        inner = with_recency_weight(inner, val_start, cfg.half_life_days).cache()
        val = val.cache()
        refit_model = pipeline.fit(inner)
        for days, trees in itertools.product(*(grid.get(k, [getattr(cfg, k)]) for k in fitted)):
            calib_model, proper, calib = _calibration_split(pipeline, inner, val_start, days)
            scale_pipeline = build_scale_pipeline(replace(cfg, scale_trees=trees), max_bins)
            scale = fit_scale(calib_model, proper, scale_pipeline) if scale_pipeline else None
            frame = _calibration_frame(calib_model, calib, scale)
            own_val = _predict(calib_model, val, keep, scale)
            refit_val = _predict(refit_model, val, keep, scale)
            for combo in itertools.product(*(grid[k] for k in others)):
                choice = dict(zip(others, combo, strict=True))
                candidate = replace(cfg, calibration_days=days, scale_trees=trees, **choice)
                scored = refit_val if candidate.refit else own_val
                cal = calibrate(frame, val_start, candidate)
                bands = apply_calibration(
                    scored["raw"].to_numpy(), scored[GROUP_COLUMN], cal, scored.get("scale")
                )
                rows.append(
                    {
                        "fold": fold,
                        "validation_start": val_start.isoformat(),
                        "calibration_days": days,
                        "scale_trees": trees,
                        **choice,
                        **interval_figures(scored[LABEL].to_numpy(), bands),
                        "n_calibration": len(frame),
                        "n_validation": len(scored),
                    }
                )
        inner.unpersist()
        val.unpersist()
    return pd.DataFrame(rows)


def rank_candidates(folds: pd.DataFrame, coverage: float, choices: list[str]) -> pd.DataFrame:
    """Return one row per candidate (mean fold figures, worst fold miss), best first.

    Best: the smallest mean distance of fold coverage from the target, in whole points, so
    that candidates within a point of each other are then ordered by mean MAE(log).
    """
    scored = folds.assign(miss=(folds["coverage"] - coverage).abs())
    key = scored[choices].astype(str).agg("|".join, axis=1)
    agg = scored.groupby(key, sort=False).agg(
        **{c: (c, "first") for c in choices},
        coverage=("coverage", "mean"),
        miss=("miss", "mean"),
        worst_miss=("miss", "max"),
        width_log=("width_log", "mean"),
        mae_log=("mae_log", "mean"),
        r2_log=("r2_log", "mean"),
    )
    agg["miss_points"] = np.round(agg["miss"] * 100)
    agg = agg.sort_values(["miss_points", "mae_log", "width_log"])
    return agg.drop(columns="miss_points").reset_index(drop=True)


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
