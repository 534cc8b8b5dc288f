"""Whether "overdue" means anything: the model's overdue flag replayed on the backtest folds.

A queue operator sees a case on the overdue list (view overdue_cases) once it is still open
past the upper end of its 80 % interval. Replayed over the rolling-origin backtest's folds
(bench/model_quality.py: the same folds, training code and interval), on every case requested
in a fold's test period whatever became of it (closed as a duplicate, transferred, still
open), with the sample's last instant as "now":
- flagged: still open `upper` hours after its request (closed later, or never), judged only
  when request + upper is before now;
- still open d later: of the flagged cases, the share still open upper + d hours after the
  request (d = 24 h, 7 days), judged only when that instant is before now: whether the flag
  picks out a long tail or cases about to close anyway;
- late: open past its category's SLA target (conf/sla_targets.csv, else the p90 of resolved
  hours closed in the year before the fold's test start, as gold.sla_daily);
  late never flagged: of the late cases, the share that closed at or before their upper end,
  so never reached the overdue list (the SLA breaches the list misses);
- the SLA clock as a flag for comparison: of the cases open past their target, the share
  still open 7 days after the target.
The 2018-07 fold is spent for model choices; it is reported, and the pooled figures without
it too. Run: .venv/bin/python -m bench.overdue
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from bench.model_quality import CSV, SPENT, fold_configs
from bench.results import Figure, write_results
from sf311.contract import quality
from sf311.model.features import with_features
from sf311.model.train import (
    GROUP_COLUMN,
    TrainConfig,
    TrainResult,
    apply_calibration,
    fit_and_evaluate,
)
from sf311.settings import load_settings
from sf311.spark import build_spark
from tests.support import silver_frames

DAY = 24.0
WEEK = 7 * 24.0
TRAILING = timedelta(days=365)
SLA_QUANTILE = 0.9


def sla_targets(cases: pd.DataFrame, as_of: datetime, conf: dict[str, float]) -> dict[str, float]:
    """Return each category's SLA target in hours: conf's, else the p90 of resolution hours of
    resolved cases closed in the year up to `as_of` (gold.sla_daily's rule)."""
    hours = (cases["closed_date"] - cases["requested_datetime"]).dt.total_seconds() / 3600
    kinds = [
        quality.closure_kind(n if isinstance(n, str) else None, True) for n in cases["status_notes"]
    ]
    at = pd.Timestamp(as_of)
    year = cases[
        (np.array(kinds) == quality.RESOLVED)
        & (hours >= 0)
        & (cases["closed_date"] > at - TRAILING)
        & (cases["closed_date"] <= at)
    ]
    p90 = (hours[year.index]).groupby(year["service_name"]).quantile(SLA_QUANTILE)
    return {**{str(k): float(v) for k, v in p90.items()}, **conf}


def overdue_figures(frame: pd.DataFrame, now: pd.Timestamp) -> dict[str, float | int | None]:
    """Return the overdue flag's figures for cases with requested, closed (NaT while open),
    upper_hours and target_hours (NaN when the category has none)."""
    requested, closed = frame["requested_datetime"], frame["closed_date"]
    # A closure before the request counts as an instant one.
    open_hours = ((closed - requested).dt.total_seconds() / 3600).clip(lower=0.0)
    watched = (now - requested).dt.total_seconds() / 3600
    still_open = open_hours.isna()

    def open_past(hours: pd.Series) -> tuple[pd.Series, pd.Series]:
        """Return (known, open): whether `hours` after the request is before now, and the case
        was still open then."""
        known = watched >= hours
        return known, known & (still_open | (open_hours > hours))

    known, flagged = open_past(frame["upper_hours"])
    out: dict[str, float | int | None] = {
        "cases": len(frame),
        "judged": int(known.sum()),
        "flagged": int(flagged.sum()),
        "flagged_share": _share(flagged, known),
    }
    for name, extra in (("24h", DAY), ("7d", WEEK)):
        later, open_later = open_past(frame["upper_hours"] + extra)
        out[f"flagged_still_open_{name}"] = _share(open_later, flagged & later)
        out[f"flagged_still_open_{name}_judged"] = int((flagged & later).sum())
    days_after = (open_hours - frame["upper_hours"])[flagged & ~still_open] / 24
    out["flagged_median_days_to_close_after_flag"] = (
        round(float(days_after.median()), 2) if len(days_after) else None
    )
    has_target = frame["target_hours"].notna()
    known_sla, late = open_past(frame["target_hours"].where(has_target, np.inf))
    late &= has_target & known
    missed = late & ~flagged
    out["late"] = int(late.sum())
    out["late_share"] = _share(late, known_sla & known & has_target)
    out["late_never_flagged"] = int(missed.sum())
    out["late_never_flagged_share"] = _share(missed, late)
    out["flagged_late_share"] = _share(flagged & late, flagged & has_target)
    sla_later, sla_open_later = open_past(frame["target_hours"].where(has_target, np.inf) + WEEK)
    out["sla_flag_still_open_7d"] = _share(sla_open_later, late & sla_later)
    return out


def _share(hits: pd.Series, among: pd.Series) -> float | None:
    """Return the share of `among` that are `hits`, None when `among` is empty."""
    n = int(among.sum())
    return round(float((hits & among).sum()) / n, 4) if n else None


def scored_window(result: TrainResult, spark_cases: DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """Return every case requested in the fold's test period with its interval's upper end
    (hours) from the fold's model and calibration."""
    t = F.col("requested_datetime")
    window = with_features(
        spark_cases.where((t >= F.lit(cfg.test_start)) & (t < F.lit(cfg.test_end)))
    )
    raw = (
        result.model.transform(window)
        .select("service_request_id", GROUP_COLUMN, F.col("prediction").alias("raw"))
        .toPandas()
    )
    bands = apply_calibration(raw["raw"].to_numpy(), raw[GROUP_COLUMN], result.calibration)
    return raw.assign(upper_hours=np.expm1(bands[:, 2]))[["service_request_id", "upper_hours"]]


def main() -> int:
    """Replay the overdue flag over the folds, print and write bench/results/overdue.json."""
    settings = load_settings()
    spark = build_spark(settings, "sf311-bench-overdue", {"spark.sql.shuffle.partitions": "2"})
    cases = silver_frames.silver_cases_from_api_csv(CSV)
    spark_cases = silver_frames.to_spark(spark, cases).cache()
    now = max(cases["requested_datetime"].max(), cases["closed_date"].max())
    conf = _conf_targets(settings.conf_dir / "sla_targets.csv")
    frames, folds, started = [], [], time.perf_counter()
    for cfg in fold_configs():
        result = fit_and_evaluate(spark_cases, cfg)
        targets = sla_targets(cases, cfg.test_start, conf)
        scored = scored_window(result, spark_cases, cfg).merge(cases, on="service_request_id")
        scored["target_hours"] = scored["service_name"].map(targets).astype(float)
        scored["fold"] = cfg.test_start.date().isoformat()
        frames.append(scored)
        figures = overdue_figures(scored, now)
        folds.append(
            {"test_start": scored["fold"].iloc[0], "spent": cfg.test_start == SPENT, **figures}
        )
        print(f"fold {cfg.test_start.date()}: {figures}", flush=True)
    pooled_frame = pd.concat(frames)
    pooled = overdue_figures(pooled_frame, now)
    fresh = overdue_figures(pooled_frame[pooled_frame["fold"] != SPENT.date().isoformat()], now)
    print(f"pooled: {pooled}")
    print(f"pooled without the spent fold: {fresh}")
    n = pooled["cases"]
    figures = [
        Figure("overdue_flagged_share", fresh["flagged_share"], "fraction", n),
        Figure("overdue_flagged_still_open_24h", fresh["flagged_still_open_24h"], "fraction", n),
        Figure("overdue_flagged_still_open_7d", fresh["flagged_still_open_7d"], "fraction", n),
        Figure("overdue_late_never_flagged", fresh["late_never_flagged_share"], "fraction", n),
        Figure("sla_flag_still_open_7d", fresh["sla_flag_still_open_7d"], "fraction", n),
        Figure("overdue_seconds", time.perf_counter() - started, "s", n, better="lower"),
    ]
    details = {
        "design": __doc__.split("Run:")[0].strip(),
        "now": now.isoformat(),
        "spent_fold": SPENT.date().isoformat(),
        "figures": "pooled over the folds but the spent one",
        "folds": folds,
        "pooled": pooled,
        "pooled_without_spent_fold": fresh,
    }
    write_results("overdue", figures, details)
    spark.stop()
    return 0


def _conf_targets(path: Path) -> dict[str, float]:
    """Return conf/sla_targets.csv as {category: target_hours}, empty when absent or empty."""
    if not path.exists():
        return {}
    conf = pd.read_csv(path)
    return dict(zip(conf["category"].astype(str), conf["target_hours"].astype(float), strict=True))


if __name__ == "__main__":
    raise SystemExit(main())
