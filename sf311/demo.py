"""`make demo`: the whole pipeline on one machine, from generated (or live Socrata) cases to the
API and the dashboard, then a one-screen summary; each step reuses what a previous run left."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from sf311.contract.city import LOCAL_ZONE
from sf311.lakehouse.checkpoints import LAKE_QUERY, WAREHOUSE_QUERY
from sf311.platform import pipeline, stack
from sf311.platform.apps import Api, Dashboard, SodaSource, StreamJob, demo_file
from sf311.platform.process import StackError, process_table, wait_until
from sf311.platform.services import Airflow, Service
from sf311.settings import PROJECT_ROOT, Settings

INGEST_DAG = "sf311_ingest"
INGEST_TASK = "socrata_to_kafka"
SUMMARY_METRICS = ("mae_hours", "medae_hours", "mae_log", "r2_log", "interval_coverage", "n_train")
# The real-data backtest (bench/model_quality.py), quoted beside the demo model's own figures.
BACKTEST_RESULTS = PROJECT_ROOT / "bench" / "results" / "model_quality.json"
BACKTEST_FIGURES = ("mae_log", "r2_log", "coverage")
BACKTEST_SHOWN = 8
# The stream may take long on a big demo; it only has to keep moving.
STREAM_STALL_SECONDS = 600.0


class DemoError(RuntimeError):
    """A demo step failed; the message says which and where to look."""


def _say(message: str) -> None:
    print(message, flush=True)


def source_settings(settings: Settings) -> Settings:
    """Return the settings the demo runs with: the local SODA server unless socrata_live."""
    if settings.socrata_live:
        return settings
    return settings.model_copy(
        update={
            "socrata_domain": f"127.0.0.1:{settings.demo_soda_port}",
            "socrata_scheme": "http",
        }
    )


def _start_app(settings: Settings, app: Service) -> None:
    """Start one application process through the stack (`up --only`), if it is not healthy."""
    # One that runs but no longer answers is replaced rather than reported as running.
    if process_table(settings).get(app.name) and not app.healthy():
        stack.down(settings, only=[app.name])
    stack.up(settings, only=[app.name])


def _airflow_env(settings: Settings) -> dict[str, str]:
    """Return the SF311_* environment the running Airflow scheduler was started with."""
    running = process_table(settings).get("airflow-scheduler")
    if running is None:
        return {}
    raw = Path(f"/proc/{running.pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if b"=" in item)
    return {k: v for k, _, v in pairs if k.startswith("SF311_")}


def ensure_stack(settings: Settings) -> None:
    """Start the stack; restart Airflow when it runs with another Socrata source than the demo's."""
    wanted = {k: settings.as_env()[k] for k in ("SF311_SOCRATA_DOMAIN", "SF311_SOCRATA_SCHEME")}
    current = _airflow_env(settings)
    if current and any(current.get(k) != v for k, v in wanted.items()):
        _say(f"  airflow   restarting to read from {wanted['SF311_SOCRATA_DOMAIN']}")
        stack.down(settings, only=["airflow"])
    stack.up(settings)


def ensure_data(settings: Settings) -> Path:
    """Return the demo's generated cases file, writing it on the first run only."""
    from sf311.ingest.generate import write_cases

    path = demo_file(settings)
    if path.exists():
        _say(f"  data      reusing {path} ({settings.demo_rows:,} generated cases)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    end = datetime.now(LOCAL_ZONE).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    _say(f"  data      generating {settings.demo_rows:,} cases over {settings.demo_days} days")
    partial = path.with_suffix(".partial")
    write_cases(partial, rows=settings.demo_rows, seed=0, end=end, days=settings.demo_days)
    partial.rename(path)
    return path


@dataclass
class AirflowApi:
    """The few calls of Airflow's REST API the demo needs, as the `admin` user."""

    base: str
    password: str
    _token: str | None = None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            answer = requests.post(
                f"{self.base}/auth/token",
                json={"username": "admin", "password": self.password},
                timeout=10,
            )
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Return the answer of one API call; raise on an error status."""
        answer = requests.request(
            method, f"{self.base}/api/v2{path}", headers=self._headers(), timeout=30, **kwargs
        )
        answer.raise_for_status()
        return answer


def _dag_loaded(api: AirflowApi, dag_id: str) -> bool:
    try:
        api.call("GET", f"/dags/{dag_id}")
        return True
    except requests.HTTPError:
        return False


def ingest_through_airflow(settings: Settings) -> dict[str, int]:
    """Trigger sf311_ingest (a backfill window on the first run), wait, return its counts."""
    from sf311.ingest.sources import watermark_source
    from sf311.ingest.watermark import WatermarkStore

    airflow = Airflow(settings)
    api = AirflowApi(f"http://{airflow.http}", airflow.admin_password())
    wait_until(lambda: _dag_loaded(api, INGEST_DAG), 120, f"DAG {INGEST_DAG} in Airflow")
    api.call("PATCH", f"/dags/{INGEST_DAG}", json={"is_paused": False})
    store = WatermarkStore(settings.postgres_dsn.get_secret_value())
    try:
        watermark = store.get(watermark_source(settings))
    finally:
        store.close()
    conf: dict[str, str] = {}
    if watermark is None:
        days = settings.demo_live_days if settings.socrata_live else settings.demo_days + 1
        since = datetime.now(LOCAL_ZONE) - timedelta(days=days)
        # Up to now, not to the end of the run's 15-minute data interval.
        until = datetime.now(UTC) + timedelta(minutes=1)
        conf = {"since": since.isoformat(), "until": until.isoformat()}
    run = api.call(
        "POST", f"/dags/{INGEST_DAG}/dagRuns", json={"logical_date": None, "conf": conf}
    ).json()
    run_id = run["dag_run_id"]
    what = f"backfill from {conf['since'][:10]}" if conf else "from the stored watermark"
    _say(f"  ingest    DAG run {run_id} ({what}); Airflow UI: http://{airflow.http}")
    t0 = time.monotonic()
    state = run["state"]
    while state not in ("success", "failed"):
        time.sleep(3)
        state = api.call("GET", f"/dags/{INGEST_DAG}/dagRuns/{run_id}").json()["state"]
        _say(f"  ingest    {state} after {time.monotonic() - t0:4.0f} s")
    if state != "success":
        raise DemoError(
            f"DAG run {run_id} failed: see its task log in the Airflow UI (http://{airflow.http})"
        )
    counts = api.call(
        "GET",
        f"/dags/{INGEST_DAG}/dagRuns/{run_id}/taskInstances/{INGEST_TASK}/xcomEntries/return_value",
        params={"deserialize": True},
    ).json()["value"]
    return counts if isinstance(counts, dict) else {}


def stream_until_caught_up(settings: Settings) -> None:
    """Start the streaming job (left running) and return once it has processed the topic."""
    _start_app(settings, StreamJob(settings))
    table = process_table(settings)
    t0 = last_said = moved = time.monotonic()
    last = -1
    while True:
        lags = pipeline.lags(settings)
        messages = lags[WAREHOUSE_QUERY].messages
        through = {
            q: messages - (lag.behind if lag.behind is not None else messages)
            for q, lag in lags.items()
        }
        done = min(through.values())
        now = time.monotonic()
        if done != last or now - last_said >= 30:
            _say(
                f"  stream    {messages:,} messages; through Postgres "
                f"{through[WAREHOUSE_QUERY]:,}, through bronze and silver {through[LAKE_QUERY]:,} "
                f"after {now - t0:4.0f} s"
            )
            last_said = now
        if done == messages and messages > 0:
            return
        if done != last:
            last, moved = done, now
        if table.get(StreamJob.name) is None:
            raise DemoError(f"the streaming job exited; see {table.log_path(StreamJob.name)}")
        if time.monotonic() - moved > STREAM_STALL_SECONDS:
            raise DemoError(
                f"the stream made no progress for {STREAM_STALL_SECONDS:.0f} s; "
                f"see {table.log_path(StreamJob.name)}"
            )
        time.sleep(5)


def ensure_model(settings: Settings) -> str:
    """Return the champion's version, training and registering a model when there is none."""
    from mlflow import MlflowClient

    from sf311.credentials import use_mlflow
    from sf311.model.registry import champion_version
    from sf311.submit import spark_submit_command, spark_submit_env

    client = MlflowClient(use_mlflow(settings))
    version = champion_version(client, settings.model_name)
    if version is not None:
        _say(f"  model     reusing champion {settings.model_name} v{version}")
        return version
    log = process_table(settings).log_path("train")
    _say(f"  model     training on silver.cases (spark-submit jobs/train.py; log {log})")
    with log.open("ab") as out:
        done = subprocess.run(
            spark_submit_command(settings, "train"),
            env=spark_submit_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise DemoError(f"training failed (exit {done.returncode}); see {log}")
    version = champion_version(client, settings.model_name)
    if version is None:
        raise DemoError("training finished without a champion: see the MLflow run")
    return version


def layer_counts(settings: Settings) -> dict[str, int]:
    """Return the rows of bronze, silver and quarantine (Delta) counted by Spark."""
    from delta.tables import DeltaTable

    from sf311.lakehouse import bronze, silver
    from sf311.spark import build_spark

    # The JVM inherits stderr at launch: send its start-up chatter to a log, not the summary.
    log = process_table(settings).log_path("demo-spark")
    saved = os.dup(2)
    with log.open("ab") as out:
        os.dup2(out.fileno(), 2)
        try:
            spark = build_spark(settings, "sf311-demo-counts")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    try:
        counts = {}
        for table in (bronze.TABLE, silver.TABLE, silver.QUARANTINE_TABLE):
            path = settings.table_path(table)
            # No poison message yet means no quarantine table yet.
            exists = DeltaTable.isDeltaTable(spark, path)
            counts[table] = spark.read.format("delta").load(path).count() if exists else 0
        return counts
    finally:
        spark.stop()


def predict_newest_open_case(settings: Settings) -> str:
    """Return a line with the API's prediction for the newest open case in the warehouse."""
    import psycopg
    from psycopg.rows import dict_row

    from sf311.model.columns import INPUT_COLUMNS

    with psycopg.connect(settings.analyst_dsn.get_secret_value(), row_factory=dict_row) as conn:
        case = conn.execute(
            f"SELECT service_request_id, {', '.join(INPUT_COLUMNS)} FROM cases "
            "WHERE closed_date IS NULL ORDER BY requested_datetime DESC LIMIT 1"
        ).fetchone()
    if case is None:
        return "prediction: no open case in the warehouse"
    case_id = case.pop("service_request_id")
    body = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in case.items()}
    answer = requests.post(f"{settings.api_url.rstrip('/')}/predict", json=body, timeout=10)
    answer.raise_for_status()
    p = answer.json()
    return (
        f"prediction for open case {case_id} ({case['service_name']}, {case['neighborhood']}): "
        f"{p['predicted_hours']:.1f} h to close, 80 % interval "
        f"{p['lower_hours']:.1f}-{p['upper_hours']:.1f} h (model v{p['model_version']})"
    )


def backtest_line(path: Path = BACKTEST_RESULTS) -> str:
    """Return the summary's line with the model code's backtest figures on the real sample."""
    missing = (
        "backtest on the real sample: no backtest figures: "
        "run .venv/bin/python -m bench.model_quality"
    )
    try:
        doc = json.loads(path.read_text())
        figures = [
            f"{f['name']} {float(f['value']):.3g}"
            for f in doc["figures"]
            if any(k in f["name"] for k in BACKTEST_FIGURES) and "distance" not in f["name"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return missing
    if not figures:
        return missing
    when = str(doc.get("when", ""))[:10]
    return f"backtest on the real sample ({path.name}, {when}): " + ", ".join(
        figures[:BACKTEST_SHOWN]
    )


def summary(
    settings: Settings, ingest: dict[str, int], messages: int, layers: dict[str, int]
) -> list[str]:
    """Return the one-screen summary: URLs, rows at each layer, freshness, model metrics."""
    b = pipeline.batches(settings.postgres_dsn.get_secret_value())
    model = requests.get(f"{settings.api_url.rstrip('/')}/model", timeout=10).json()
    metrics = model.get("metrics", {})
    cases = "live Socrata" if settings.socrata_live else "generated"
    airflow = Airflow(settings)
    lines = [
        "",
        "sf311 demo is running",
        f"  dashboard   http://127.0.0.1:{settings.dashboard_port}",
        f"  API         {settings.api_url.rstrip('/')}/docs",
        f"  Airflow     http://{airflow.http}  (admin / {airflow.admin_password()})",
        f"  MLflow      {settings.mlflow_tracking_uri}",
        "",
        "rows at each layer",
        f"  source (last ingest run)   read {ingest.get('read', 0):,}, produced "
        f"{ingest.get('produced', 0):,}, dead-lettered {ingest.get('dead_lettered', 0):,}",
        f"  Kafka {settings.kafka_topic:<20} {messages:,} messages",
    ]
    lines += [f"  {name:<26} {rows:,}" for name, rows in layers.items()]
    if b is not None:
        lines += [
            f"  Postgres cases             {b.cases:,}",
            "",
            f"freshness (last hour): {b.hour_batches} batches, Kafka -> Postgres lag p50 "
            f"{pipeline.fmt_seconds(b.hour_lag_p50)}, worst p95 "
            f"{pipeline.fmt_seconds(b.hour_lag_p95_max)}",
        ]
    lines += [
        f"model {settings.model_name} v{model.get('version')} on its holdout of {cases} cases: "
        + ", ".join(f"{k} {metrics[k]:.3g}" for k in SUMMARY_METRICS if k in metrics),
        backtest_line(),
        predict_newest_open_case(settings),
        "",
        "`make status` shows the services and the stream; `make down` stops everything.",
    ]
    return lines


def run_demo(settings: Settings) -> int:
    """Run every demo step, print progress and the summary; return an exit code."""
    settings = source_settings(settings)
    t0 = time.monotonic()
    try:
        _say("[1/7] stack")
        ensure_stack(settings)
        _say("[2/7] warehouse schema")
        from sf311.warehouse.migrate import migrate

        applied = migrate(settings.postgres_dsn.get_secret_value())
        _say("  applied " + ", ".join(applied) if applied else "  up to date")
        _say("[3/7] source")
        if settings.socrata_live:
            _say(f"  socrata   live: {settings.socrata_domain}, dataset {settings.socrata_dataset}")
        else:
            ensure_data(settings)
            _start_app(settings, SodaSource(settings))
        _say("[4/7] ingest through Airflow")
        ingest = ingest_through_airflow(settings)
        _say(f"  ingest    {ingest}")
        _say("[5/7] streaming job")
        stream_until_caught_up(settings)
        _say("[6/7] model")
        ensure_model(settings)
        _say("[7/7] API and dashboard")
        _start_app(settings, Api(settings))
        _start_app(settings, Dashboard(settings))
        layers = layer_counts(settings)
        # Read after the layers: a scheduled ingest run may have added messages meanwhile, and
        # no layer can then hold more than the topic.
        messages = sum(pipeline.topic_end_offsets(settings).values())
    except (StackError, DemoError, requests.RequestException) as err:
        _say(f"sf311 demo: {err}")
        return 1
    for line in summary(settings, ingest, messages, layers):
        _say(line)
    _say(f"(demo took {time.monotonic() - t0:.0f} s)")
    return 0
