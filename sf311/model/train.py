"""Training of the resolution-time model: time split, baselines, Spark MLlib forest, metrics."""

from __future__ import annotations

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
from sf311.model.levels import STATS, fit_levels, levels_stage, pooled_name, stage_levels
from sf311.model.scorer import RAW_BIN, calibration_groups, interval_bands

# Neighborhood (66 values) is left to lat/long: as a categorical it overfits the forest. The
# subtype (hundreds, renamed over the years) enters as its shrunk median (sf311.model.levels),
# the other categoricals with their rare levels pooled.
MODEL_CATEGORICAL: tuple[str, ...] = (
    "service_name",
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
    # Newer cases weigh more; 180 days and 20 cases per leaf beat 365 and 10 in every
    # pre-2015-07 validation fold (bench/model_validation.py, #19).
    half_life_days: float = 180.0
    algorithm: str = "rf"
    # Half the fit time of 60 trees for about the same validation error (bench/results).
    num_trees: int = 30
    max_depth: int = 10
    min_instances: int = 20
    max_iter: int = 60
    step_size: float = 0.1
    coverage: float = 0.8
    # Mondrian split conformal: categories with min_group calibration cases get their own
    # residual quantiles, the others the global ones (judged in bench/model_quality.py).
    min_group: int = 100
    calibration_half_life_days: float | None = None
    center_on_median: bool = True
    refit: bool = True
    raw_bins: int = 0
    # > 0: a small forest of |residual| scales the interval per case (normalized conformal).
    scale_trees: int = 0
    scale_depth: int = 4
    # Interval ends per category: finite-sample conformal quantiles shrunk toward the global
    # ones by `shrink` pseudo-cases, on the newest `share` of the calibration window; both
    # chosen per training run on an inner split of that window (choose_shrinkage). Empty:
    # one pair of ends for all but the min_group categories (the rule before).
    shrink_grid: tuple[float, ...] = (0.0, 10.0, 30.0, 100.0, float("inf"))
    share_grid: tuple[float, ...] = (1.0, 0.5)
    # A category's own ends lose weight as they move between the window's halves, none left at
    # shrink_drift x the global width: closer category coverage on pre-2015-07 folds (#19).
    shrink_drift: float | None = 0.5
    # Levels with fewer training cases are pooled (sf311.model.levels); prior: pseudo-cases
    # pulling a level's median toward its parent's.
    min_level_count: int = 10
    level_prior: float = 20.0
    max_hours: float = MAX_HOURS_DEFAULT
    seed: int = 7
    categorical: tuple[str, ...] = field(default=MODEL_CATEGORICAL)
    numeric: tuple[str, ...] = field(default=NUMERIC)

    def params(self) -> dict[str, Any]:
        """Return the config as flat MLflow-ready params."""
        return {
            k: (",".join(str(x) for x in v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
        }


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


def build_pipeline(cfg: TrainConfig, max_bins: int, levels: dict[str, Any]) -> Pipeline:
    """Return the unfitted levels -> StringIndexer -> VectorAssembler -> tree ensemble pipeline."""
    pooled = [pooled_name(c) for c in cfg.categorical]
    indexed = [f"{c}_idx" for c in cfg.categorical]
    indexer = StringIndexer(inputCols=pooled, outputCols=indexed, handleInvalid="keep")
    assembler = VectorAssembler(
        inputCols=indexed + list(STATS) + list(cfg.numeric), outputCol="features"
    )
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
    return Pipeline(stages=[levels_stage(levels), indexer, assembler, ensemble])


def fit_pipeline(cfg: TrainConfig, train: DataFrame, max_bins: int) -> PipelineModel:
    """Return the pipeline fit on labelled, weighted cases, its level statistics fit on them."""
    levels = fit_levels(train, cfg.categorical, cfg.min_level_count, cfg.level_prior)
    return build_pipeline(cfg, max_bins, levels).fit(train)


def build_scale_pipeline(
    cfg: TrainConfig, max_bins: int, levels: dict[str, Any]
) -> Pipeline | None:
    """Return the unfitted pipeline predicting |residual| from the features, or None if unused."""
    if cfg.scale_trees <= 0:
        return None
    return build_pipeline(
        replace(cfg, algorithm="rf", num_trees=cfg.scale_trees, max_depth=cfg.scale_depth),
        max_bins,
        levels,
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


# A category with fewer calibration cases takes the global ends; an inner-split category
# with fewer evaluation cases is not judged (its coverage is noise).
MIN_OWN_ENDS = 5
MIN_JUDGED = 25


def conformal_ends(resid: np.ndarray, coverage: float) -> np.ndarray:
    """Return the (low, high) split-conformal ends: the finite-sample ranks of `resid`.

    The high end is the ceil((n + 1)(1 - a/2))-th smallest residual and the low end the
    floor((n + 1) a/2)-th, so that each side misses at most a/2 of exchangeable new cases
    even for a category with a few dozen calibration cases (plain quantiles miss more)."""
    alpha = (1.0 - coverage) / 2.0
    ranked = np.sort(resid)
    n = len(ranked)
    # Rounded first: (1 - 0.8) / 2 is a hair below 0.1 in binary, which would lose a rank.
    low = int(np.floor(round((n + 1) * alpha, 9))) - 1
    high = int(np.ceil(round((n + 1) * (1.0 - alpha), 9))) - 1
    return np.array([ranked[min(max(low, 0), n - 1)], ranked[min(high, n - 1)]])


def _newest(frame: pd.DataFrame, share: float) -> pd.DataFrame:
    """Return the cases of `frame` requested in the newest `share` of its time span."""
    if share >= 1.0 or frame.empty:
        return frame
    t = frame["requested_datetime"]
    return frame[t >= t.max() - (t.max() - t.min()) * share]


def _middle(frame: pd.DataFrame) -> pd.Timestamp:
    """Return the instant halfway through the requests of `frame`."""
    t = frame["requested_datetime"]
    return t.min() + (t.max() - t.min()) / 2


def _drift_weight(
    part: pd.DataFrame, middle: pd.Timestamp, coverage: float, width: float, drift: float
) -> float:
    """Return 1 - (mean move of a category's ends from before `middle` to after it) /
    (drift x width), at least 0; 0 if either side has too few cases to tell."""
    older = part["requested_datetime"] < middle
    sides = [part[older], part[~older]]
    if min(len(s) for s in sides) < MIN_OWN_ENDS:
        return 0.0
    before, after = (conformal_ends((s["label"] - s["raw"]).to_numpy(), coverage) for s in sides)
    move = float(np.mean(np.abs(after - before)))
    if move == 0.0:
        return 1.0
    return max(0.0, 1.0 - move / (drift * width)) if width > 0 else 0.0


def shrunk_ends(
    frame: pd.DataFrame, coverage: float, shrink: float, share: float, drift: float | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return the global (low, high) ends and each category's, shrunk toward the global ones.

    `frame` has group, label and raw; a category of n cases weighs n / (n + shrink) against
    the global ends (shrink inf: global ends only), on the newest `share` of the window; with
    `drift`, that weight is scaled by _drift_weight at the middle of that newest share."""
    frame = _newest(frame, share)
    resid = (frame["label"] - frame["raw"]).to_numpy()
    overall = conformal_ends(resid, coverage)
    width = float(overall[1] - overall[0])
    own: dict[str, np.ndarray] = {}
    if np.isfinite(shrink):
        middle = _middle(frame)
        for g, part in frame.groupby("group"):
            n = len(part)
            if n >= MIN_OWN_ENDS:
                ends = conformal_ends((part["label"] - part["raw"]).to_numpy(), coverage)
                weight = n / (n + shrink)
                if drift is not None:
                    weight *= _drift_weight(part, middle, coverage, width, drift)
                own[str(g)] = weight * ends + (1.0 - weight) * overall
    return overall, own


def _category_miss(
    frame: pd.DataFrame, ends: tuple[np.ndarray, dict[str, np.ndarray]], coverage: float
) -> float | None:
    """Return the case-weighted RMS of coverage - `coverage` over the categories of `frame`
    with MIN_JUDGED cases under `ends`, None if none has."""
    overall, own = ends
    q = np.array([own.get(str(g), overall) for g in frame["group"]]).reshape(len(frame), 2)
    resid = (frame["label"] - frame["raw"]).to_numpy()
    inside = pd.Series((resid >= q[:, 0]) & (resid <= q[:, 1]), index=frame.index)
    per = inside.groupby(frame["group"]).agg(["size", "mean"])
    per = per[per["size"] >= MIN_JUDGED]
    if per.empty:
        return None
    return float(np.sqrt(np.average((per["mean"] - coverage) ** 2, weights=per["size"])))


def choose_shrinkage(frame: pd.DataFrame, cfg: TrainConfig) -> dict[str, Any]:
    """Return the shrink and share of the grid whose ends, fit on the older half of the
    calibration window, cover each category of the newer half closest to the target.

    Judged by the case-weighted RMS distance of category coverage from cfg.coverage over
    categories with MIN_JUDGED newer cases; among rules within 0.01 of the best, the
    narrowest. Only calibration cases are read: nothing after the training window."""
    newer_half = frame["requested_datetime"] >= _middle(frame)
    older, newer = frame[~newer_half], frame[newer_half]
    scored = []
    for shrink in cfg.shrink_grid if len(older) else ():
        for share in cfg.share_grid:
            overall, own = shrunk_ends(older, cfg.coverage, shrink, share, cfg.shrink_drift)
            miss = _category_miss(newer, (overall, own), cfg.coverage)
            if miss is None:
                continue
            q = np.array([own.get(str(g), overall) for g in newer["group"]])
            scored.append((miss, float(np.mean(q[:, 1] - q[:, 0])), shrink, share))
    if not scored:
        # Too few calibration cases to judge: the global ends on the whole window.
        return {"shrink": float("inf"), "share": 1.0, "inner_miss": None}
    best = min(s[0] for s in scored)
    miss, _, shrink, share = min((s for s in scored if s[0] <= best + 0.01), key=lambda s: s[1])
    return {"shrink": shrink, "share": share, "inner_miss": round(miss, 4)}


def with_shrunk_ends(cal: dict[str, Any], frame: pd.DataFrame, cfg: TrainConfig) -> dict[str, Any]:
    """Return `cal` with every category's ends from choose_shrinkage; centres stay as they are."""
    choice = choose_shrinkage(frame, cfg)
    overall, own = shrunk_ends(
        frame, cfg.coverage, choice["shrink"], choice["share"], cfg.shrink_drift
    )
    center = cal["global"][1]

    def row(ends: np.ndarray, mid: float) -> list[float]:
        return [min(float(ends[0]), mid), mid, max(float(ends[1]), mid)]

    groups = {g: row(e, cal["groups"].get(g, [0.0, center])[1]) for g, e in own.items()}
    # A min_group category without its own ends keeps its centre with the global ends.
    groups.update({g: row(overall, q[1]) for g, q in cal["groups"].items() if g not in groups})
    shrink = choice["shrink"]
    return {
        **cal,
        "global": row(overall, center),
        "groups": groups,
        "shrink": None if not np.isfinite(shrink) else shrink,
        "window_share": choice["share"],
        "inner_miss": choice["inner_miss"],
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
    cfg: TrainConfig, train: DataFrame, as_of: datetime, days: int, max_bins: int
) -> tuple[PipelineModel, DataFrame, DataFrame]:
    """Return a model fit before the last `days` of `train`, its training cases, those days."""
    proper, calib = time_split(train, as_of - timedelta(days=days), None, None)
    return fit_pipeline(cfg, proper, max_bins), proper, calib


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
    if cfg.shrink_grid and not binned and not scaled and "weight" not in frame and len(frame):
        cal = with_shrunk_ends(cal, frame, cfg)
    return {**cal, **binned, "scaled": scaled}


# Fewer labelled cases than this leave a forest, its level statistics and a calibration
# window nothing to learn from.
MIN_TRAIN_CASES = 50


def check_windows(n_train: int, n_test: int, cfg: TrainConfig) -> None:
    """Raise a one-line ValueError when the training or test window is too short to use."""
    window = f"{cfg.train_start:%Y-%m-%d}" if cfg.train_start else "the first case"
    if n_train < MIN_TRAIN_CASES:
        raise ValueError(
            f"{n_train} usable closed cases from {window} to {cfg.test_start:%Y-%m-%d}: "
            f"training needs at least {MIN_TRAIN_CASES}; widen the training window"
        )
    if n_test == 0:
        raise ValueError(
            f"no usable closed cases from {cfg.test_start:%Y-%m-%d} to test on; "
            "shorten the training window or wait for closures"
        )


def fit_and_evaluate(cases: DataFrame, cfg: TrainConfig) -> TrainResult:
    """Return the fitted pipeline with its calibration and holdout metrics on silver cases."""
    counts = label_counts(cases, cfg.max_hours)
    data = labelled(cases, cfg.max_hours)
    train, test = time_split(data, cfg.test_start, cfg.train_start, cfg.test_end)
    train = with_recency_weight(train, cfg.test_start, cfg.half_life_days).cache()
    test = test.cache()
    check_windows(train.count(), test.count(), cfg)
    max_bins = max(32, max_categories(train, cfg.categorical) + 1)

    # Residuals come from a forest (and level statistics) that never saw the calibration
    # window (split conformal).
    calibration_days = calibration_window(train, cfg.test_start, cfg.calibration_days)
    calib_model, proper, calib = _calibration_split(
        cfg, train, cfg.test_start, calibration_days, max_bins
    )
    scale_pipeline = build_scale_pipeline(cfg, max_bins, stage_levels(calib_model.stages[0]))
    scale = fit_scale(calib_model, proper, scale_pipeline) if scale_pipeline else None
    calib_frame = _calibration_frame(calib_model, calib, scale)
    calibration = calibrate(calib_frame, cfg.test_start, cfg)
    # Refitting on the whole period uses the newest cases; validation decides whether the
    # calibrated interval still holds for the refit forest.
    model = fit_pipeline(cfg, train, max_bins) if cfg.refit else calib_model
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
