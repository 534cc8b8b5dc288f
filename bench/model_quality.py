"""Model quality on the real 10k sample: Spark MLlib forest against baselines and sklearn.

Split (issue 5, item 8): closed cases with 0 <= hours < 2 years, target log1p(hours), train on
cases requested 2015-01-01 .. 2018-06-30, test on cases requested from 2018-07-01 (local time).
Every calibration choice (window, refit, min_group, weighting, centering, prediction bins, a
forest of |residual| scaling each interval) is made by a backtest on validation blocks carved
from the end of the training period (--select);
the test split is scored once, with the TrainConfig defaults that selection recorded.
Run: .venv/bin/python bench/model_quality.py [--select [--validation-days 182] [--folds 3]]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from sf311.benchmarks import RESULTS_DIR, Figure, write_results
from sf311.model import dataset
from sf311.model.columns import CATEGORICAL, NUMERIC
from sf311.model.export import export_pipeline
from sf311.model.features import LOCAL_TZ, record_features
from sf311.model.scorer import Scorer
from sf311.model.train import (
    TrainConfig,
    fit_and_evaluate,
    rank_candidates,
    regression_metrics,
    select_calibration,
)
from sf311.settings import PROJECT_ROOT, load_settings
from sf311.spark import build_spark

CSV = PROJECT_ROOT.parent / "shared" / "data" / "sf311" / "cases_10k_2008_2019.csv"
SELECTION_OUT = RESULTS_DIR / "model_quality_calibration_selection.json"
LA = ZoneInfo(LOCAL_TZ)
TRAIN_START = datetime(2015, 1, 1, tzinfo=LA)
TEST_START = datetime(2018, 7, 1, tzinfo=LA)


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
        "--select",
        action="store_true",
        help="choose the calibration by backtest first (slow) instead of TrainConfig defaults",
    )
    args = parser.parse_args()
    settings = load_settings()
    spark = build_spark(
        settings, "sf311-bench-model-quality", {"spark.sql.shuffle.partitions": "2"}
    )
    cases = dataset.silver_cases_from_api_csv(CSV)
    spark_cases = dataset.to_spark(spark, cases)
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

    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer.load(
            export_pipeline(result.model, result.calibration, Path(tmp), scale=result.scale)
        )
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
        Figure("test_interval_coverage_80", m["interval_coverage"], "fraction", n_test),
        Figure(
            "test_coverage_distance_from_80",
            abs(m["interval_coverage"] - cfg.coverage),
            "fraction",
            n_test,
            target=0.02,
            better="lower",
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
        "sklearn_reference": {k: round(v, 4) for k, v in ref.items()},
    }
    print(
        f"MLlib {cfg.algorithm}: MAE(log) {m['mae_log']:.3f} R2(log) {m['r2_log']:.3f} "
        f"coverage {m['interval_coverage']:.3f} | forest raw MAE {m['forest_mae_log']:.3f} "
        f"R2 {m['forest_r2_log']:.3f} | subtype median MAE {m['baseline_subtype_mae_log']:.3f} "
        f"R2 {m['baseline_subtype_r2_log']:.3f} | sklearn MAE {ref['mae_log']:.3f} "
        f"R2 {ref['r2_log']:.3f} | parity {parity:.2e}"
    )
    write_results("model_quality", figures, details)
    spark.stop()
    return 0


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
