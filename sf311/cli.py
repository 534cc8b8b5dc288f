"""The `sf311` command: one subcommand per pipeline step, each calling the library."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from sf311.errors import InputError, ServiceUnavailable, UserError
from sf311.logs import configure_logging
from sf311.settings import Settings, SettingsError, load_settings, settings_json, settings_problems

Command = Callable[[Settings, argparse.Namespace], int]


def _config(settings: Settings, args: argparse.Namespace) -> int:
    print(settings_json(settings))
    return 0


def _platform(action: str) -> Command:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from sf311.platform import stack

        return stack.run_action(settings, action, only=args.only)

    return run


def _stream(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.lakehouse.stream import run_job
    from sf311.model.predictions import CasePredictionSink, OverdueHistorySink

    return run_job(settings, once=args.once, extra_sinks=(CasePredictionSink, OverdueHistorySink))


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.lakehouse.replay import run_replay
    from sf311.model.predictions import CasePredictionSink, OverdueHistorySink

    result = run_replay(settings, extra_sinks=(CasePredictionSink, OverdueHistorySink))
    print(f"replayed from bronze: {result.summary()}")
    return 0


def _score(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.model.predictions import score_open_cases

    print(score_open_cases(settings).summary())
    return 0


def _db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.warehouse.migrate import migrate

    applied = migrate(
        settings.postgres_dsn.get_secret_value(), connect_timeout=settings.connect_timeout_seconds
    )
    print("applied: " + ", ".join(applied) if applied else "warehouse schema is up to date")
    return 0


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.ingest.run import ingest

    counts = ingest(settings, args.source, args.path, since=args.since, until=args.until)
    print(counts.summary())
    return 0


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.warehouse.reconcile import reconcile

    if args.days is not None:
        settings = settings.model_copy(update={"reconcile_window_days": args.days})
    print(reconcile(settings).summary())
    return 0


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.ingest.generate import write_cases

    end = {} if args.end is None else {"end": args.end}
    write_cases(args.out, rows=args.rows, seed=args.seed, days=args.days, **end)
    return 0


def _calibrate(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.ingest.calibration import CALIBRATION, write_calibration

    out = args.out or CALIBRATION
    cal = write_calibration(args.paths, out)
    print(f"{out}: {cal['rows']:,} rows, {len(cal['categories'])} categories")
    return 0


def _soda_server(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.ingest.soda_server import Faults, serve_file

    faults = Faults(
        fail_rate=args.fail_rate,
        fail_codes=tuple(int(c) for c in args.fail_codes.split(",")),
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        retry_after=args.retry_after,
        seed=args.seed,
    )
    token = settings.socrata_app_token.get_secret_value() if settings.socrata_app_token else None
    serve_file(args.path, settings.socrata_dataset, args.port, faults, app_token=token)
    return 0


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.model.job import train_and_register
    from sf311.spark import build_spark

    try:
        train_and_register(settings, build_spark(settings, "sf311-train"))
    except ValueError as err:
        print(f"sf311 train: {err}", file=sys.stderr)
        return 1
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.serving.api import serve

    return serve(settings)


def _dashboard(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.dashboard.serve import run

    return run(settings, host=args.host, port=args.port)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.demo import run_demo

    return run_demo(settings)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    """Return the argument parser and the function behind each subcommand."""
    parser = argparse.ArgumentParser(prog="sf311", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Command] = {}

    sub.add_parser("config", help="print the resolved settings as JSON, secrets masked")
    commands["config"] = _config

    for action, text in (
        ("up", "start the local stack and wait until it is healthy"),
        ("down", "stop every process that `up` started"),
        ("status", "health of each service of the local stack"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("--only", nargs="*", help="limit to these services")
        commands[action] = _platform(action)

    p = sub.add_parser("stream", help="run the Kafka -> bronze -> silver -> Postgres job")
    p.add_argument("--once", action="store_true", help="trigger(availableNow): stop at the end")
    commands["stream"] = _stream
    sub.add_parser(
        "replay",
        help="rebuild silver and Postgres cases from bronze (stop the stream job first)",
    )
    commands["replay"] = _replay

    db = sub.add_parser("db", help="warehouse database").add_subparsers(dest="db", required=True)
    db.add_parser("migrate", help="apply pending SQL migrations (re-runnable)")
    commands["db"] = _db_migrate

    p = sub.add_parser("ingest", help="send Socrata rows or a file's rows to Kafka")
    p.add_argument("--source", choices=("socrata", "file"), required=True)
    p.add_argument("path", nargs="?", type=Path, help="file to ingest (--source file)")
    p.add_argument("--since", type=datetime.fromisoformat, help="floating LA time or ISO instant")
    p.add_argument("--until", type=datetime.fromisoformat, help="exclusive upper bound")
    commands["ingest"] = _ingest

    p = sub.add_parser(
        "reconcile",
        help="compare Postgres cases with Socrata per day; re-extract missing, mark deleted",
    )
    p.add_argument("--days", type=int, help="days compared, ending today (default 90)")
    commands["reconcile"] = _reconcile

    p = sub.add_parser("generate", help="write seeded synthetic cases in the API's JSON form")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help=".json, .jsonl or .csv file; JSON lines on stdout")
    p.add_argument("--end", type=datetime.fromisoformat, help="newest case (LA local time)")
    p.add_argument("--days", type=int, help="span of the cases (default: ~3,000 a day)")
    commands["generate"] = _generate

    p = sub.add_parser("calibrate", help="recompute the generator's calibration from real files")
    p.add_argument("paths", type=Path, nargs="+", help="real case files (CSV/JSON, API names)")
    p.add_argument("--out", type=Path, help="default: sf311/ingest/calibration.json")
    commands["calibrate"] = _calibrate

    p = sub.add_parser("soda-server", help="serve a file as a SODA dataset on 127.0.0.1")
    p.add_argument("path", type=Path)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of requests that fail")
    p.add_argument("--fail-codes", default="429,500", help="statuses failures answer with")
    p.add_argument("--slow-rate", type=float, default=0.0, help="share of slow answers")
    p.add_argument("--slow-seconds", type=float, default=0.0)
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After of 429 answers")
    p.add_argument("--seed", type=int, default=0)
    commands["soda-server"] = _soda_server

    sub.add_parser("train", help="train on silver.cases, register in MLflow, maybe promote")
    commands["train"] = _train
    sub.add_parser("serve", help="serve the prediction API (follows the MLflow champion)")
    commands["serve"] = _serve
    sub.add_parser("score", help="rescore every open case into case_predictions with the champion")
    commands["score"] = _score

    p = sub.add_parser("dashboard", help="serve the Streamlit dashboard (analyst role + API)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default SF311_DASHBOARD_PORT)")
    commands["dashboard"] = _dashboard

    sub.add_parser("demo", help="run the whole pipeline on generated data (make demo)")
    commands["demo"] = _demo

    return parser, commands


_DSN_SETTINGS = ("postgres_dsn", "analyst_dsn", "mlflow_backend_dsn", "airflow_dsn")


def _dsn_setting(settings: Settings | None, host: str, port: str, user: str, db: str) -> str:
    """Return the SF311_ variable whose DSN reaches host:port as user (its database first)."""
    matches = []
    for name in _DSN_SETTINGS if settings else ():
        parts = urlsplit(getattr(settings, name).get_secret_value())
        if (parts.hostname, str(parts.port or 5432), parts.username) == (host, port, user):
            matches.append((parts.path.lstrip("/") != db, f"SF311_{name.upper()}"))
    return min(matches)[1] if matches else "the SF311_*_DSN setting"


def _postgres_error(err: Any, settings: Settings | None) -> UserError:
    """Return the UserError of a failed Postgres connection, naming host:port, user and setting."""
    reason = str(err).splitlines()[0].removeprefix("connection failed: ")
    reason = re.sub(r'^connection to server at "[^"]*", port \d+ failed: ', "", reason)
    pgconn = err.pgconn
    if pgconn is None or not pgconn.host:
        return ServiceUnavailable(f"Postgres failed: {reason}")
    host, port, user, db = (v.decode() for v in (pgconn.host, pgconn.port, pgconn.user, pgconn.db))
    where = f"Postgres at {host}:{port} (database {db}, user {user})"
    setting = _dsn_setting(settings, host, port, user, db)
    if "password authentication failed" in reason:
        return InputError(f"{where} refused the password: fix the password in {setting}")
    if "FATAL:" in reason:
        return InputError(f"{where} refused the connection ({reason}): fix {setting}")
    return ServiceUnavailable(
        f"{where} did not answer ({reason}): start it (`sf311 up`) or fix {setting}"
    )


def _registry_error(err: Any, settings: Settings | None) -> UserError:
    """Return the UserError of a schema registry failure: unreachable (exit 3) or a refusal."""
    import requests

    cause = err.__cause__
    if not isinstance(cause, requests.RequestException):
        return UserError(str(err))
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(cause))
    reason = "timed out" if isinstance(cause, requests.Timeout) else errno and errno.group(1)
    url = settings.schema_registry_url if settings else "its address"
    return ServiceUnavailable(
        f"schema registry at {url} did not answer ({reason or type(cause).__name__}): "
        "start it (`sf311 up`) or fix SF311_SCHEMA_REGISTRY_URL"
    )


def user_error(err: Exception, settings: Settings | None) -> UserError | None:
    """Return the UserError a known failure means, None for any other error (a bug)."""
    import psycopg
    from confluent_kafka import KafkaException

    from sf311.contract.registry import RegistryError
    from sf311.ingest import IngestError
    from sf311.platform.process import StackError
    from sf311.warehouse.migrate import MigrationError
    from sf311.warehouse.reconcile import ReconcileRefused

    if isinstance(err, UserError):
        return err
    if isinstance(err, SettingsError):
        return InputError(str(err))
    if isinstance(err, ValidationError) and err.title == Settings.__name__:
        return InputError(settings_problems(err))
    if isinstance(err, psycopg.OperationalError):
        return _postgres_error(err, settings)
    if isinstance(err, KafkaException):
        servers = settings.kafka_bootstrap_servers if settings else "its address"
        return ServiceUnavailable(
            f"Kafka at {servers}: {err.args[0].str()}: start it (`sf311 up`) or fix "
            "SF311_KAFKA_BOOTSTRAP_SERVERS"
        )
    if isinstance(err, RegistryError):
        return _registry_error(err, settings)
    if isinstance(err, IngestError | StackError | MigrationError | ReconcileRefused):
        return UserError(str(err))
    if isinstance(err, UnicodeDecodeError):
        return InputError(f"bytes that are not UTF-8 at byte {err.start}: save the file as UTF-8")
    if isinstance(err, OSError) and err.filename is not None:
        return InputError(f"{err.filename}: {err.strerror}: check the path")
    return None


def run_reported(prog: str, command: Callable[[Settings], int]) -> int:
    """Return command(settings)'s exit code; a known failure ends it as one line on stderr with
    its UserError's exit code, any other error keeps its traceback."""
    settings = None
    try:
        settings = load_settings()
        configure_logging(settings)
        return command(settings)
    except Exception as err:
        known = user_error(err, settings)
        if known is None:
            raise
        print(f"{prog}: {' '.join(str(known).split())}", file=sys.stderr)
        return known.exit_code


def main(argv: list[str] | None = None) -> int:
    """Run the sf311 command line and return its exit code."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    prog = " ".join(["sf311", args.command, *([args.db] if args.command == "db" else [])])
    return run_reported(prog, lambda settings: commands[args.command](settings, args))


if __name__ == "__main__":
    sys.exit(main())
