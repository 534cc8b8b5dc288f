"""How the model serves a category its training window never saw, on the validation folds.

In each of bench/model_validation.py's four folds (test periods ending by 2015-07-01, before
the backtest's first), each of the N categories with the most validation test cases is held
out of training in turn: its cases before the fold's cut-off are dropped, the TrainConfig
defaults are fit on the rest and its test cases are scored, so the category is new to the
forest, its level statistics and the interval's calibration alike. Per category and pooled:
80 % coverage, mean width (log) and MAE(log) on those cases.
Run: .venv/bin/python -m bench.new_categories [--categories 8]; results in
bench/results/new_categories.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from bench import model_quality as mq
from bench.model_validation import CUTOFFS
from bench.results import Figure, write_results
from sf311.model.features import LABEL
from sf311.model.train import fit_and_evaluate
from sf311.settings import load_settings
from sf311.spark import build_spark


def largest_categories(labels: pd.DataFrame, n: int) -> list[str]:
    """Return the n categories with the most labelled cases in the validation test periods."""
    t = labels["requested_datetime"]
    inside = pd.Series(False, index=labels.index)
    for cfg in mq.fold_configs(CUTOFFS):
        inside |= (t >= pd.Timestamp(cfg.test_start)) & (t < pd.Timestamp(cfg.test_end))
    return labels.loc[inside, "service_name"].value_counts().index[:n].tolist()


def scores(frame: pd.DataFrame) -> dict[str, float]:
    """Return coverage, mean width and MAE (log) of held-out cases' bands, and their count."""
    y = frame[LABEL].to_numpy()
    return {
        "n": len(frame),
        "coverage": round(float(np.mean((y >= frame["low"]) & (y <= frame["high"]))), 4),
        "width_log": round(float((frame["high"] - frame["low"]).mean()), 4),
        "mae_log": round(float(np.mean(np.abs(frame["point"] - y))), 4),
    }


def main() -> int:
    """Hold each category out in each fold; print and write the scores of its test cases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=8, help="how many to hold out")
    args = parser.parse_args()
    spark = build_spark(
        load_settings(), "sf311-bench-new-categories", {"spark.sql.shuffle.partitions": "2"}
    )
    _, spark_cases, labels, _ = mq.load_sample(spark)
    categories = largest_categories(labels, args.categories)
    parts, started = [], time.perf_counter()
    for cfg in mq.fold_configs(CUTOFFS):
        for name in categories:
            before = F.col("requested_datetime") < F.lit(cfg.test_start)
            kept = spark_cases.where(~((F.col("service_name") == name) & before))
            holdout = fit_and_evaluate(kept, cfg).holdout
            part = holdout[holdout["service_name"] == name].assign(
                fold=cfg.test_start.date().isoformat()
            )
            parts.append(part)
            print(f"fold {cfg.test_start.date()} {name}: {scores(part)}", flush=True)
    held = pd.concat(parts)
    pooled = scores(held)
    figures = [
        Figure("new category coverage_80", pooled["coverage"], "fraction", pooled["n"]),
        Figure("new category width_log", pooled["width_log"], "log1p h", pooled["n"]),
        Figure("new category mae_log", pooled["mae_log"], "log1p h", pooled["n"], better="lower"),
        Figure("seconds", round(time.perf_counter() - started, 1), "s", pooled["n"]),
    ]
    details = {
        "design": __doc__,
        "cutoffs": [c.date().isoformat() for c in CUTOFFS],
        "categories": categories,
        "pooled": pooled,
        "by_category": {str(k): scores(p) for k, p in held.groupby("service_name")},
        "by_fold": {str(k): scores(p) for k, p in held.groupby("fold")},
    }
    write_results("new_categories", figures, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
