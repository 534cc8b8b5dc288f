"""Does generated data carry the real data's structure? The demo's model on both, compared.

Trains the project's model (sf311.model.train.fit_and_evaluate, TrainConfig defaults) with the
training job's split rule (test on the newest SF311_MODEL_TEST_DAYS, train on the
SF311_MODEL_TRAIN_DAYS before) on N generated cases over the demo's span, and on the real 10k
sample with the same rule and with the backtest's 2018-07 split. Target: generated R2(log)
within 0.15 of the real one. Also reports the generated holdout's 80 % interval in hours.
Run: .venv/bin/python -m bench.generated_fidelity [--rows 100000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from bench.results import Figure, write_results
from sf311.contract.city import LOCAL_ZONE
from sf311.ingest.generate import CaseGenerator
from sf311.model.job import split_from_newest
from sf311.model.train import TrainConfig, TrainResult, fit_and_evaluate
from sf311.settings import PROJECT_ROOT, load_settings
from sf311.spark import build_spark
from tests.support.silver_frames import (
    SILVER_COLUMNS,
    silver_cases_from_api_csv,
    silver_cases_from_api_frame,
    to_spark,
)

CSV = PROJECT_ROOT.parent / "shared" / "data" / "sf311" / "cases_10k_2008_2019.csv"
TARGET_GAP = 0.15
BACKTEST_SPLIT = TrainConfig(
    test_start=datetime(2018, 7, 1, tzinfo=LOCAL_ZONE),
    train_start=datetime(2015, 1, 1, tzinfo=LOCAL_ZONE),
)


def write_generated_silver(rows: int, days: int, seed: int, folder: Path) -> Path:
    """Return a folder with one parquet file of `rows` generated cases shaped like silver."""
    raw = pd.DataFrame(CaseGenerator(seed, days=days).cases(rows))
    # Silver holds the photo's URL as text; the data_* stamps are not read by the model.
    raw["media_url"] = raw["media_url"].map(lambda m: m["url"] if isinstance(m, dict) else None)
    frame = silver_cases_from_api_frame(raw.drop(columns=["data_as_of", "data_loaded_at"]))
    # An all-null column would be written as INT32; left out, Spark reads it as null.
    frame = frame.dropna(axis="columns", how="all")
    folder.mkdir(parents=True, exist_ok=True)
    # Spark reads parquet timestamps in micro-, not nanoseconds (pandas' default).
    frame.to_parquet(folder / "part-00000.parquet", index=False, coerce_timestamps="us")
    return folder


def summarize(result: TrainResult, cfg: TrainConfig) -> dict[str, float | int | str]:
    """Return a fit's holdout figures: R2/MAE (log), 80 % coverage and interval widths in hours."""
    h = result.holdout
    width_hours = np.expm1(h["high"]) - np.expm1(h["low"])
    return {
        "test_start": cfg.test_start.isoformat(),
        "train_start": cfg.train_start.isoformat() if cfg.train_start else "",
        "n_train": result.counts["train"],
        "n_test": result.counts["test"],
        "r2_log": round(result.metrics["r2_log"], 4),
        "mae_log": round(result.metrics["mae_log"], 4),
        "baseline_subtype_r2_log": round(result.metrics["baseline_subtype_r2_log"], 4),
        "interval_coverage": round(result.metrics["interval_coverage"], 4),
        "interval_width_log": round(result.metrics["interval_width_log"], 4),
        "median_interval_width_hours": round(float(np.median(width_hours)), 1),
        "median_predicted_hours": round(float(np.median(np.expm1(h["point"]))), 1),
        "median_interval_hours": [
            round(float(np.median(np.expm1(h["low"]))), 1),
            round(float(np.median(np.expm1(h["high"]))), 1),
        ],
    }


def fit(cases: DataFrame, cfg: TrainConfig, name: str) -> dict[str, float | int | str]:
    """Return the holdout figures of one fit, printing them with its time."""
    started = time.perf_counter()
    out = summarize(fit_and_evaluate(cases, cfg), cfg)
    out["fit_s"] = round(time.perf_counter() - started, 1)
    print(f"{name}: {out}", flush=True)
    return out


def main() -> int:
    """Run the three fits, print the figures and write them with write_results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = load_settings()
    load_before = os.getloadavg()[0]
    spark = build_spark(
        settings, "sf311-bench-generated-fidelity", {"spark.sql.shuffle.partitions": "2"}
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_generated_silver(
            args.rows, settings.demo_days, args.seed, Path(tmp) / "silver"
        )
        generated = spark.read.schema(SILVER_COLUMNS).parquet(str(folder)).cache()
        gen_rule = split_from_newest(generated, settings.model_test_days, settings.model_train_days)
        gen = fit(generated, gen_rule, "generated, newest-days split")
    real = to_spark(spark, silver_cases_from_api_csv(CSV)).cache()
    real_rule = split_from_newest(real, settings.model_test_days, settings.model_train_days)
    real_demo = fit(real, real_rule, "real, newest-days split")
    real_backtest = fit(real, BACKTEST_SPLIT, "real, 2018-07 split")
    spark.stop()
    gap = abs(gen["r2_log"] - real_demo["r2_log"])
    gap_backtest = abs(gen["r2_log"] - real_backtest["r2_log"])
    rows = int(gen["n_train"]) + int(gen["n_test"])
    figures = [
        Figure("generated_r2_log", gen["r2_log"], "", rows),
        Figure("real_r2_log", real_demo["r2_log"], "", int(real_demo["n_test"])),
        Figure("r2_log_gap", gap, "", rows, target=TARGET_GAP, better="lower"),
        Figure("r2_log_gap_to_backtest_split", gap_backtest, "", rows, TARGET_GAP, "lower"),
        Figure(
            "generated_median_interval_width",
            gen["median_interval_width_hours"],
            "h",
            int(gen["n_test"]),
            better="lower",
        ),
        Figure("generated_interval_coverage", gen["interval_coverage"], "fraction", rows),
    ]
    details = {
        "generated_rows": args.rows,
        "generated_days": settings.demo_days,
        "seed": args.seed,
        "generated": gen,
        "real_newest_days_split": real_demo,
        "real_backtest_split": real_backtest,
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }
    print(f"R2(log) generated {gen['r2_log']:.3f}, real {real_demo['r2_log']:.3f} (gap {gap:.3f})")
    write_results("generated_fidelity", figures, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
