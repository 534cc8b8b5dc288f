"""Every open case rescored after a model change: what the streaming job does when MLflow's
champion alias moves (the same code as `sf311 score`), timed on a warehouse database, 8 M
cases at full scale.

    .venv/bin/python -m bench.score --register-only        # a champion for the stream to use
    .venv/bin/python -m bench.stream --full --database sf311_bench_full --model-name sf311-bench
    .venv/bin/python -m bench.score --database sf311_bench_full

Each run fits the production forest on the real 10k sample (../shared), logs it to MLflow under
`--model-name` (never the stack's own model) as a new version and moves the champion alias to
it: a model change. It then rescores every open case of the database's `cases` into its
`case_predictions` and checks that each open case holds one row by the new version.
Writes bench/results/score.json.
"""

from __future__ import annotations

import argparse
import os

import psycopg
from mlflow.tracking import MlflowClient

from bench.results import Figure, write_results
from bench.serve import CSV, TEST_START  # the real sample and split bench.serve fits on
from sf311.credentials import use_mlflow
from sf311.model.predictions import score_open_cases
from sf311.model.registry import ALIAS, log_and_register
from sf311.model.train import TrainConfig, fit_and_evaluate
from sf311.settings import Settings, load_settings
from sf311.spark import build_spark
from tests.support import scratch, silver_frames

BENCH_MODEL = "sf311-bench"


def register_new_champion(settings: Settings) -> str:
    """Return the version of a forest fitted on the real sample, logged under
    settings.model_name and made the champion whatever its holdout score."""
    spark = build_spark(settings, "sf311-bench-score", {"spark.sql.shuffle.partitions": "2"})
    try:
        cases = silver_frames.to_spark(spark, silver_frames.silver_cases_from_api_csv(CSV))
        cfg = TrainConfig(test_start=TEST_START)
        decision = log_and_register(settings, fit_and_evaluate(cases, cfg), cfg)
    finally:
        spark.stop()
    use_mlflow(settings)
    MlflowClient().set_registered_model_alias(settings.model_name, ALIAS, decision.version)
    return decision.version


def open_and_scored(dsn: str, version: str) -> tuple[int, int, int]:
    """Return the open cases, their prediction rows by `version`, and all prediction rows."""
    query = (
        "SELECT (SELECT count(*) FROM open_case_rows),"
        " (SELECT count(*) FROM case_predictions JOIN open_case_rows USING (service_request_id)"
        "   WHERE model_version = %s),"
        " (SELECT count(*) FROM case_predictions)"
    )
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, (version,)).fetchone()


def main() -> None:
    """Register a new champion, rescore the database's open cases, write score.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="warehouse database (bench.stream --database)")
    parser.add_argument("--model-name", default=BENCH_MODEL)
    parser.add_argument("--register-only", action="store_true", help="register and stop")
    args = parser.parse_args()
    base = load_settings(model_name=args.model_name)
    version = register_new_champion(base)
    print(f"{args.model_name} version {version} is the champion")
    if args.register_only:
        return
    if not args.database:
        parser.error("--database is needed unless --register-only")
    dsn = scratch.kept(base, args.database).owner_dsn
    settings = load_settings(model_name=args.model_name, postgres_dsn=dsn)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT count(*) FROM cases").fetchone()[0]
    load_before = round(os.getloadavg()[0], 2)
    counts = score_open_cases(settings)
    print(counts.summary())
    open_cases, by_version, predictions = open_and_scored(dsn, version)
    # Every open case carries the new version's prediction, and nothing else is kept.
    assert open_cases == by_version == predictions, (open_cases, by_version, predictions)
    rate = round(counts.scored / counts.seconds)
    details = {
        "database": args.database,
        "rows": rows,
        "open_cases": open_cases,
        "model_name": args.model_name,
        "model_version": version,
        "scored": counts.scored,
        "written": counts.written,
        "deleted": counts.deleted,
        "seconds": counts.seconds,
        "slice_rows": settings.predictions_slice_rows,
        "load_average_1m_before": load_before,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    figures = [
        Figure("rescore every open case after a model change", counts.seconds, "s", rows,
               better="lower"),
        Figure("open cases rescored per second", rate, "cases/s", rows),
    ]  # fmt: skip
    write_results("score", figures, details)


if __name__ == "__main__":
    main()
