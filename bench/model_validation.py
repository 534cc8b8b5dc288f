"""Where the model's choices are made: TrainConfig variants on validation folds before the backtest.

Four folds cut every 6 months from 2013-07-01 to 2015-01-01, each training on the 4 years
before its cut-off and testing on the 6 months after it, so every test period ends by
2015-07-01, where bench/model_quality.py's first test period starts: a choice made here never
reads a backtest test period. Each variant runs the same folds as the TrainConfig defaults, with
HistGradientBoosting beside it (bench.model_quality.run_fold); per fold and pooled: MAE(log),
R2(log), 80 % coverage and width, and the paired bootstrap of (variant - HGB) MAE(log); pooled,
the coverage of every category with at least 100 validation cases too.
Run: .venv/bin/python -m bench.model_validation "name:field=value,field=value" ...
(for example "hl180:half_life_days=180"; a tuple field takes values split by ";", for example
"fixed:shrink_grid=0,share_grid=1"); results in bench/results/model_validation.json.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import pandas as pd

from bench import model_quality as mq
from bench.results import Figure, write_results
from sf311.contract.city import LOCAL_ZONE
from sf311.settings import load_settings
from sf311.spark import build_spark

CUTOFFS = [
    datetime(2013, 7, 1, tzinfo=LOCAL_ZONE),
    datetime(2014, 1, 1, tzinfo=LOCAL_ZONE),
    datetime(2014, 7, 1, tzinfo=LOCAL_ZONE),
    datetime(2015, 1, 1, tzinfo=LOCAL_ZONE),
]
DEFAULTS = "defaults"


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """Return the name and TrainConfig overrides of "name:field=value,field=value", each value
    typed like the field's default (a field whose default is None takes a float, a tuple field
    a tuple of values split by ";" typed like its first item)."""
    name, _, assignments = text.partition(":")
    base = mq.fold_configs(CUTOFFS)[0]
    overrides: dict[str, Any] = {}
    for assignment in filter(None, assignments.split(",")):
        field, _, value = assignment.partition("=")
        if not hasattr(base, field):
            raise SystemExit(f"{text!r}: TrainConfig has no field {field!r}")
        default = getattr(base, field)
        if isinstance(default, tuple):
            item = type(default[0]) if default else str
            overrides[field] = tuple(item(v) for v in filter(None, value.split(";")))
        else:
            overrides[field] = float(value) if default is None else type(default)(value)
    return name, overrides


def main() -> int:
    """Score the defaults and every variant on the validation folds; print and write them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", help='"name:field=value,..." TrainConfig overrides')
    args = parser.parse_args()
    variants = dict([(DEFAULTS, {})] + [parse_variant(v) for v in args.variants])
    spark = build_spark(
        load_settings(), "sf311-bench-model-validation", {"spark.sql.shuffle.partitions": "2"}
    )
    _, spark_cases, labels, feats = mq.load_sample(spark)
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in variants}
    folds = []
    for base in mq.fold_configs(CUTOFFS):
        for name, overrides in variants.items():
            started = time.perf_counter()
            frame, _ = mq.run_fold(spark_cases, labels, feats, replace(base, **overrides))
            frames[name].append(frame)
            scores = mq.method_scores(frame)
            folds.append(
                {
                    "test_start": base.test_start.date().isoformat(),
                    "variant": name,
                    "seconds": round(time.perf_counter() - started, 1),
                    **scores,
                }
            )
            print(
                f"fold {base.test_start.date()} {name}: MAE {scores['model']['mae_log']:.4f}"
                f" R2 {scores['model']['r2_log']:.4f} (HGB {scores['hgb']['mae_log']:.4f},"
                f" {scores['hgb']['r2_log']:.4f})",
                flush=True,
            )
    pooled, figures = {}, []
    for name, parts in frames.items():
        both = pd.concat(parts)
        categories = mq.by_category(both)
        pooled[name] = mq.method_scores(both) | {
            "model_minus_hgb_mae_log_bootstrap": mq.mae_gap(both),
            "coverage_by_category": categories,
        }
        mae = pooled[name]["model"]["mae_log"]
        coverage = pooled[name]["model"]["coverage"]
        figures += [
            Figure(f"{name} pooled MAE(log)", mae, "log1p h", len(both), better="lower"),
            Figure(f"{name} pooled coverage", coverage, "fraction", len(both)),
        ]
        if categories:
            worst = max(abs(c["coverage"] - mq.COVERAGE) for c in categories.values())
            figures.append(
                Figure(f"{name} worst category coverage distance", worst, "fraction", len(both))
            )
    details = {
        "design": __doc__,
        "cutoffs": [c.date().isoformat() for c in CUTOFFS],
        "variants": variants,
        "folds": folds,
        "pooled": pooled,
    }
    write_results("model_validation", figures, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
