"""Model quality on the real 10k sample: Spark MLlib forest against baselines and sklearn.

Split (issue 5, item 8): closed cases with 0 <= hours < 2 years, target log1p(hours), train on
cases requested 2015-01-01 .. 2018-06-30, test on cases requested from 2018-07-01 (local time).
Every calibration choice (window, refit, min_group, weighting, centering, prediction bins, a
forest of |residual| scaling each interval) is made by a backtest on validation blocks carved
from the end of the training period (--select);
the test split is scored once, with the TrainConfig defaults that selection recorded. The online
recalibration rule (the newest closures, at a fixed or an adaptive level, or the newest requests
with open cases right-censored) is chosen the same way, on validation blocks, before the test is
replayed once.
Run: .venv/bin/python -m bench.model_quality [--select [--validation-days 182] [--folds 3]]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from bench.results import RESULTS_DIR, Figure, write_results
from sf311.contract.city import LOCAL_ZONE
from sf311.model.columns import CATEGORICAL, NUMERIC
from sf311.model.export import export_pipeline
from sf311.model.features import LABEL, record_features
from sf311.model.online import REQUESTS, OnlineRule, adaptive_levels, replay
from sf311.model.scorer import Scorer
from sf311.model.train import (
    TrainConfig,
    TrainResult,
    fit_and_evaluate,
    interval_figures,
    rank_candidates,
    regression_metrics,
    select_calibration,
)
from sf311.settings import PROJECT_ROOT, load_settings
from sf311.spark import build_spark
from tests.support import silver_frames

CSV = PROJECT_ROOT.parent / "shared" / "data" / "sf311" / "cases_10k_2008_2019.csv"
SELECTION_OUT = RESULTS_DIR / "model_quality_calibration_selection.json"
TRAIN_START = datetime(2015, 1, 1, tzinfo=LOCAL_ZONE)
TEST_START = datetime(2018, 7, 1, tzinfo=LOCAL_ZONE)


def sklearn_frames(
    cases: pd.DataFrame, holdout: pd.DataFrame, train_ids: set
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], pd.Series]:
    """Return sklearn train and test frames (pandas categoricals) on the Spark split."""
    feats = pd.DataFrame([record_features(r) for r in cases.to_dict("records")])
    feats["service_request_id"] = cases["service_request_id"].to_numpy()
    feats["supervisor_district"] = pd.to_numeric(feats["supervisor_district"], errors="coerce")
    cats = [c for c in CATEGORICAL if c != "supervisor_district"]
    for c in cats:
        feats[c] = feats[c].astype("category")
    columns = list(CATEGORICAL) + list(NUMERIC)
    labels = holdout.set_index("service_request_id")["label"]
    train = feats[feats["service_request_id"].isin(train_ids)]
    test = feats.set_index("service_request_id").loc[labels.index].reset_index()
    return train, test, columns, labels


# Candidates are compared on the validation period only (select_calibration never reads test).
GRID: dict[str, list] = {
    "calibration_days": [91, 182, 365],
    "refit": [True, False],
    "min_group": [30, 100, 10**9],
    "calibration_half_life_days": [None, 90.0],
    "center_on_median": [True, False],
    "raw_bins": [0, 5],
    "scale_trees": [0, 20],
}
CHOICE_FIELDS = tuple(GRID)
# Online recalibration candidates, also compared on the validation blocks only. CLOSURES: how
# many of the newest closures form the window, whether cases the model was fit on may join it,
# and the central share of the window's residuals the interval spans. REQUESTS (censored,
# Kaplan-Meier): how many of the newest requests, at least how many days old, and the level.
ONLINE_WINDOWS = [100, 200, 400]
ONLINE_OUT_OF_SAMPLE = [True, False]
ONLINE_LEVELS = [0.8, 0.85, 0.88, 0.9, 0.92]
CENSORED_WINDOWS = [200, 400, 800]
CENSORED_MIN_AGE_DAYS = [0.0, 30.0]
CENSORED_LEVELS = [0.8, 0.82, 0.85, 0.88]
# Adaptive level (ACI with delayed feedback) on the newest 100 closures: the step gamma per
# revealed outcome, how many of the last requests it replays, and the level it starts from.
ADAPTIVE_WINDOW = 100
ADAPTIVE_GAMMAS = [0.002, 0.005, 0.01, 0.02, 0.05]
ADAPTIVE_HORIZONS = [200, 500]
ADAPTIVE_LEVELS = [0.8, 0.85]
RULE_FIELDS = [
    "method",
    "window_cases",
    "min_age_days",
    "out_of_sample",
    "level",
    "adaptive_gamma",
    "adaptive_horizon",
]
ONLINE_MIN_CASES = 30


def main() -> int:
    """Run the benchmark, print the figures and write bench/results/model_quality.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algorithm", default="rf", choices=["rf", "gbt"])
    parser.add_argument("--num-trees", type=int, default=TrainConfig.num_trees)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--half-life-days", type=float, default=365.0)
    parser.add_argument(
        "--validation-days",
        type=int,
        default=182,
        help="length of each validation block of the backtest (--select)",
    )
    parser.add_argument("--folds", type=int, default=3, help="validation blocks (backtest)")
    parser.add_argument(
        "--online-folds",
        type=int,
        default=3,
        help="validation blocks on which the online recalibration rule is chosen",
    )
    parser.add_argument(
        "--select",
        action="store_true",
        help="choose the calibration by backtest first (slow) instead of TrainConfig defaults",
    )
    args = parser.parse_args()
    settings = load_settings()
    spark = build_spark(
        settings, "sf311-bench-model-quality", {"spark.sql.shuffle.partitions": "2"}
    )
    cases = silver_frames.silver_cases_from_api_csv(CSV)
    spark_cases = silver_frames.to_spark(spark, cases)
    cfg = TrainConfig(
        test_start=TEST_START,
        train_start=TRAIN_START,
        algorithm=args.algorithm,
        num_trees=args.num_trees,
        max_depth=args.max_depth,
        half_life_days=args.half_life_days,
    )
    selection: dict = {"selected_on": "TrainConfig defaults (no selection run)"}
    if args.select:
        started = time.perf_counter()
        folds = select_calibration(spark_cases, cfg, args.validation_days, args.folds, GRID)
        ranked = rank_candidates(folds, cfg.coverage, list(CHOICE_FIELDS))
        best = {k: _plain(ranked.iloc[0][k]) for k in CHOICE_FIELDS}
        cfg = replace(cfg, **best)
        selection = {
            "selected_on": (
                f"backtest: {args.folds} validation blocks of {args.validation_days} days "
                f"counted back from {TEST_START.date()}, each scored by forests fit on the "
                "training cases before it; test cases never read"
            ),
            "rule": "smallest mean |fold coverage - 0.80| in whole points, then mean MAE(log)",
            "chosen": best,
            "chosen_figures": {
                k: round(float(v), 4) for k, v in ranked.iloc[0].drop(list(CHOICE_FIELDS)).items()
            },
            "seconds": round(time.perf_counter() - started, 1),
            "candidates": ranked.round(4).to_dict("records"),
            "folds": folds.round(4).to_dict("records"),
        }
        print(ranked.head(12).round(3).to_string())
        SELECTION_OUT.write_text(json.dumps(selection, indent=1, default=str) + "\n")
    started = time.perf_counter()
    result = fit_and_evaluate(spark_cases, cfg)
    fit_seconds = time.perf_counter() - started
    holdout = result.holdout

    scorer = exported_scorer(result)
    online = online_figures(spark_cases, cases, cfg, args.validation_days, args.online_folds)
    chosen = online["chosen"]
    rule = OnlineRule(
        min_cases=ONLINE_MIN_CASES, **{k: chosen[k] for k in RULE_FIELDS if k != "out_of_sample"}
    )
    not_before = TEST_START if chosen["out_of_sample"] else None
    test_online = online_interval(scorer, cases, holdout, rule, not_before)
    if rule.adaptive_gamma > 0:
        instants = pd.to_datetime(holdout["requested_datetime"], utc=True)
        steered = adaptive_levels(
            scorer, cases, np.array([t.timestamp() for t in instants]), rule, not_before
        )
        test_online["adaptive_level"] = level_spread([s.level for s in steered])
    online["test"] = {
        "training_calibration": interval_figures(
            holdout[LABEL].to_numpy(), holdout[["low", "point", "high"]].to_numpy()
        ),
        "online": test_online,
    }
    sample = holdout.sample(n=min(1000, len(holdout)), random_state=1)
    by_id = cases.set_index("service_request_id")
    records = [
        {**by_id.loc[i].to_dict(), "requested_datetime": by_id.loc[i, "requested_datetime"]}
        for i in sample["service_request_id"]
    ]
    rows = [record_features(r) for r in records]
    parity = float(np.max(np.abs(scorer.predict_matrix(scorer.matrix(rows)) - sample["raw"])))

    ref = reference_figures(cases, holdout, cfg)
    m = result.metrics
    n_test = int(m["n_test"])
    figures = [
        Figure("test_mae_log", m["mae_log"], "log1p h", n_test, target=1.244, better="lower"),
        Figure("test_r2_log", m["r2_log"], "", n_test, target=0.42),
        *interval_figures_of("test", m["interval_coverage"], m["interval_width_log"], n_test),
        *interval_figures_of(
            "test_online", test_online["coverage"], test_online["width_log"], n_test
        ),
        Figure("sklearn_reference_mae_log", ref["mae_log"], "log1p h", n_test),
        Figure("sklearn_reference_r2_log", ref["r2_log"], "", n_test),
        Figure("scorer_parity_max_abs_diff", parity, "log1p h", len(sample), 1e-6, "lower"),
        Figure("fit_seconds", fit_seconds, "s", int(m["n_train"]), better="lower"),
    ]
    details = {
        "split": {"train_start": str(TRAIN_START), "test_start": str(TEST_START)},
        "counts": result.counts,
        "config": cfg.params(),
        "calibration_selection": {
            k: v for k, v in selection.items() if k not in ("candidates", "folds")
        },
        "metrics": {k: round(v, 4) for k, v in m.items()},
        "online_recalibration": online,
        "sklearn_reference": {k: round(v, 4) for k, v in ref.items()},
    }
    print(
        f"MLlib {cfg.algorithm}: MAE(log) {m['mae_log']:.3f} R2(log) {m['r2_log']:.3f} "
        f"coverage {m['interval_coverage']:.3f} | forest raw MAE {m['forest_mae_log']:.3f} "
        f"R2 {m['forest_r2_log']:.3f} | subtype median MAE {m['baseline_subtype_mae_log']:.3f} "
        f"R2 {m['baseline_subtype_r2_log']:.3f} | sklearn MAE {ref['mae_log']:.3f} "
        f"R2 {ref['r2_log']:.3f} | parity {parity:.2e}"
    )
    print(
        f"online recalibration {online['chosen']}: validation coverage "
        f"{online['chosen_figures']['coverage']:.3f} | test coverage "
        f"{test_online['coverage']:.3f} width {test_online['width_log']:.3f} "
        f"(training calibration {m['interval_coverage']:.3f} width "
        f"{m['interval_width_log']:.3f}), online share {test_online['online_share']:.3f}"
    )
    write_results("model_quality", figures, details)
    spark.stop()
    return 0


def interval_figures_of(prefix: str, coverage: float, width: float, n: int) -> list[Figure]:
    """Return the coverage, its distance from 80 % (the judged figure) and the mean width."""
    return [
        Figure(f"{prefix}_interval_coverage_80", coverage, "fraction", n),
        Figure(
            f"{prefix}_coverage_distance_from_80",
            abs(coverage - 0.8),
            "fraction",
            n,
            target=0.02,
            better="lower",
        ),
        Figure(f"{prefix}_interval_width_log", width, "log1p h", n, better="lower"),
    ]


def exported_scorer(result: TrainResult) -> Scorer:
    """Return the JVM-free scorer of a training result, as the registry exports it."""
    with tempfile.TemporaryDirectory() as tmp:
        return Scorer.load(
            export_pipeline(result.model, result.calibration, Path(tmp), scale=result.scale)
        )


def online_interval(
    scorer: Scorer,
    cases: pd.DataFrame,
    holdout: pd.DataFrame,
    rule: OnlineRule,
    not_before: datetime | None,
) -> dict[str, float]:
    """Return coverage, width and point figures of the online-recalibrated interval on a
    holdout, each case seeing only the cases closed before it was requested."""
    ordered = holdout.sort_values("requested_datetime", kind="stable")
    bands, online = replay(scorer, cases, ordered, rule, not_before)
    return {
        **interval_figures(ordered[LABEL].to_numpy(), bands),
        "online_share": float(online.mean()),
        "n": len(ordered),
    }


def level_spread(levels: list[float]) -> dict[str, float]:
    """Return the mean and the 10/50/90 % points of the adaptive levels served."""
    p10, p50, p90 = np.percentile(levels, [10, 50, 90])
    return {
        "mean": round(float(np.mean(levels)), 4),
        "p10": round(float(p10), 4),
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
    }


def online_rules() -> list[tuple[OnlineRule, bool]]:
    """Return every online candidate of the grids: its rule and whether it is out of sample."""
    closures = [
        (
            OnlineRule(window_cases=w, min_cases=ONLINE_MIN_CASES, level=level, adaptive_gamma=0.0),
            oos,
        )
        for w, oos, level in itertools.product(ONLINE_WINDOWS, ONLINE_OUT_OF_SAMPLE, ONLINE_LEVELS)
    ]
    censored = [
        (
            OnlineRule(
                window_cases=w,
                min_cases=ONLINE_MIN_CASES,
                level=level,
                method=REQUESTS,
                min_age_days=age,
                adaptive_gamma=0.0,
            ),
            oos,
        )
        for w, age, oos, level in itertools.product(
            CENSORED_WINDOWS, CENSORED_MIN_AGE_DAYS, ONLINE_OUT_OF_SAMPLE, CENSORED_LEVELS
        )
    ]
    adaptive = [
        (
            OnlineRule(
                window_cases=ADAPTIVE_WINDOW,
                min_cases=ONLINE_MIN_CASES,
                level=level,
                adaptive_gamma=gamma,
                adaptive_horizon=horizon,
            ),
            False,
        )
        for gamma, horizon, level in itertools.product(
            ADAPTIVE_GAMMAS, ADAPTIVE_HORIZONS, ADAPTIVE_LEVELS
        )
    ]
    return closures + censored + adaptive


def online_candidates(
    scorer: Scorer, cases: pd.DataFrame, block: pd.DataFrame, block_start: datetime
) -> list[dict]:
    """Return the coverage and width of every online candidate replayed on one block."""
    rows = []
    for rule, oos in online_rules():
        figures = online_interval(scorer, cases, block, rule, block_start if oos else None)
        fields = {k: getattr(rule, k) for k in RULE_FIELDS if k != "out_of_sample"}
        rows.append({"rule": "online", **fields, "out_of_sample": oos, **figures})
    return rows


def rank_online(folds_frame: pd.DataFrame, coverage: float) -> pd.DataFrame:
    """Return the online candidates ranked by mean |block coverage - target| in whole points,
    then by mean width, with their mean and worst figures over the blocks."""
    candidates = folds_frame[folds_frame["rule"] == "online"].assign(
        miss=lambda f: (f["coverage"] - coverage).abs()
    )
    return (
        candidates.groupby(RULE_FIELDS, as_index=False)
        .agg(
            coverage=("coverage", "mean"),
            miss=("miss", "mean"),
            worst_miss=("miss", "max"),
            width_log=("width_log", "mean"),
            online_share=("online_share", "mean"),
        )
        .assign(miss_points=lambda f: np.round(f["miss"] * 100))
        .sort_values(["miss_points", "width_log"])
        .drop(columns="miss_points")
    )


def online_figures(
    spark_cases, cases: pd.DataFrame, cfg: TrainConfig, validation_days: int, folds: int
) -> dict:
    """Return the online rule chosen on validation blocks before the test period, with the
    coverage and width of every candidate and of the training-time interval on each block.

    Each block is scored by a model trained exactly as fit_and_evaluate does for the test
    split, on the training cases before the block; no test case is read."""
    rows = []
    for fold in range(1, folds + 1):
        val_end = TEST_START - timedelta(days=(fold - 1) * validation_days)
        val_start = val_end - timedelta(days=validation_days)
        result = fit_and_evaluate(spark_cases, replace(cfg, test_start=val_start, test_end=val_end))
        scorer = exported_scorer(result)
        block = result.holdout
        base = interval_figures(block[LABEL].to_numpy(), block[["low", "point", "high"]].to_numpy())
        rows.append({"fold": fold, "rule": "training", **base})
        rows += [{"fold": fold, **r} for r in online_candidates(scorer, cases, block, val_start)]
    folds_frame = pd.DataFrame(rows)
    ranked = rank_online(folds_frame, cfg.coverage)
    best = ranked.iloc[0]
    print(ranked.round(3).to_string(index=False))
    training = folds_frame[folds_frame["rule"] == "training"]
    return {
        "selected_on": (
            f"{folds} validation blocks of {validation_days} days before {TEST_START.date()}"
        ),
        "rule": "smallest mean |block coverage - 0.80| in whole points, then mean width",
        "min_cases": ONLINE_MIN_CASES,
        "chosen": {
            "method": str(best["method"]),
            "window_cases": int(best["window_cases"]),
            "min_age_days": float(best["min_age_days"]),
            "out_of_sample": bool(best["out_of_sample"]),
            "level": float(best["level"]),
            "adaptive_gamma": float(best["adaptive_gamma"]),
            "adaptive_horizon": int(best["adaptive_horizon"]),
        },
        "chosen_figures": {
            k: round(float(best[k]), 4) for k in ("coverage", "worst_miss", "width_log")
        },
        "validation_training_calibration": {
            "coverage": round(float(training["coverage"].mean()), 4),
            "width_log": round(float(training["width_log"].mean()), 4),
        },
        "candidates": ranked.round(4).to_dict("records"),
        "folds": folds_frame.round(4).to_dict("records"),
    }


def _plain(value: object) -> object:
    """Return a numpy scalar or NaN from a pandas row as a plain Python value or None."""
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def reference_figures(cases: pd.DataFrame, holdout: pd.DataFrame, cfg: TrainConfig) -> dict:
    """Return the off-the-shelf HistGradientBoosting (absolute loss) figures on the same split."""
    labelled_train = _train_labels(cases, cfg)
    train, test, columns, labels = sklearn_frames(cases, holdout, set(labelled_train.index))
    y_train = labelled_train.loc[train["service_request_id"]].to_numpy()
    model = HistGradientBoostingRegressor(
        loss="absolute_error", categorical_features="from_dtype", random_state=0
    )
    model.fit(train[columns], y_train)
    pred = model.predict(test[columns])
    return regression_metrics(labels.to_numpy(), pred, "")


def _train_labels(cases: pd.DataFrame, cfg: TrainConfig) -> pd.Series:
    t = pd.to_datetime(cases["requested_datetime"], utc=True)
    closed = pd.to_datetime(cases["closed_date"], utc=True)
    hours = (closed - t).dt.total_seconds() / 3600
    ok = hours.notna() & (hours >= 0) & (hours < cfg.max_hours)
    ok &= (t >= pd.Timestamp(TRAIN_START)) & (t < pd.Timestamp(TEST_START))
    return pd.Series(np.log1p(hours[ok]).to_numpy(), index=cases.loc[ok, "service_request_id"])


if __name__ == "__main__":
    raise SystemExit(main())
