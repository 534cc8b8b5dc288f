"""Model quality on the real 10k sample: Spark MLlib forest against baselines and sklearn.

Split (issue 5, item 8): closed cases with 0 <= hours < 2 years, target log1p(hours), train on
cases requested 2015-01-01 .. 2018-06-30, test on cases requested from 2018-07-01 (local time).
Run: .venv/bin/python bench/model_quality.py [--algorithm rf|gbt]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from sf311.model import dataset
from sf311.model.columns import CATEGORICAL, NUMERIC
from sf311.model.export import export_pipeline
from sf311.model.features import LOCAL_TZ, record_features
from sf311.model.scorer import Scorer
from sf311.model.train import TrainConfig, fit_and_evaluate, regression_metrics
from sf311.settings import PROJECT_ROOT, load_settings
from sf311.spark import build_spark

CSV = PROJECT_ROOT.parent / "shared" / "data" / "sf311" / "cases_10k_2008_2019.csv"
OUT = PROJECT_ROOT / "bench" / "results" / "model_quality.json"
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


def main() -> int:
    """Run the benchmark, print the figures and write bench/results/model_quality.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algorithm", default="rf", choices=["rf", "gbt"])
    parser.add_argument("--num-trees", type=int, default=60)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--half-life-days", type=float, default=365.0)
    parser.add_argument("--calibration-days", type=int, default=365)
    parser.add_argument("--min-group", type=int, default=100)
    parser.add_argument("--calibration-half-life", type=float, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    settings = load_settings()
    spark = build_spark(
        settings, "sf311-bench-model-quality", {"spark.sql.shuffle.partitions": "2"}
    )
    cases = dataset.silver_cases_from_api_csv(CSV)
    cfg = TrainConfig(
        test_start=TEST_START,
        train_start=TRAIN_START,
        algorithm=args.algorithm,
        num_trees=args.num_trees,
        max_depth=args.max_depth,
        half_life_days=args.half_life_days,
        calibration_days=args.calibration_days,
        min_group=args.min_group,
        calibration_half_life_days=args.calibration_half_life,
    )
    started = time.perf_counter()
    result = fit_and_evaluate(dataset.to_spark(spark, cases), cfg)
    fit_seconds = time.perf_counter() - started
    holdout = result.holdout

    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer.load(export_pipeline(result.model, result.calibration, Path(tmp)))
    sample = holdout.sample(n=min(1000, len(holdout)), random_state=1)
    by_id = cases.set_index("service_request_id")
    records = [
        {**by_id.loc[i].to_dict(), "requested_datetime": by_id.loc[i, "requested_datetime"]}
        for i in sample["service_request_id"]
    ]
    rows = [record_features(r) for r in records]
    parity = float(np.max(np.abs(scorer.predict_matrix(scorer.matrix(rows)) - sample["raw"])))

    ref = reference_figures(cases, holdout, cfg)

    figures = {
        "split": {"train_start": str(TRAIN_START), "test_start": str(TEST_START)},
        "counts": result.counts,
        "config": cfg.params(),
        "fit_seconds": round(fit_seconds, 1),
        "metrics": {k: round(v, 4) for k, v in result.metrics.items()},
        "sklearn_reference": {k: round(v, 4) for k, v in ref.items()},
        "scorer_parity_max_abs_diff_log": parity,
        "targets": {"mae_log_below": 1.244, "r2_log_above": 0.42, "coverage": [0.78, 0.82]},
    }
    m = result.metrics
    print(json.dumps(figures, indent=1, default=str))
    print(
        f"MLlib {cfg.algorithm}: MAE(log) {m['mae_log']:.3f} R2(log) {m['r2_log']:.3f} "
        f"coverage {m['interval_coverage']:.3f} | forest raw MAE {m['forest_mae_log']:.3f} "
        f"R2 {m['forest_r2_log']:.3f} | subtype median MAE {m['baseline_subtype_mae_log']:.3f} "
        f"R2 {m['baseline_subtype_r2_log']:.3f} | sklearn MAE {ref['mae_log']:.3f} "
        f"R2 {ref['r2_log']:.3f} | parity {parity:.2e}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1, default=str))
    spark.stop()
    return 0


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
