"""The `sf311` command: one subcommand per pipeline step, each calling the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sf311.logs import configure_logging
from sf311.settings import Settings, SettingsError, load_settings, settings_json

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

    return run_job(settings, once=args.once)


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.lakehouse.replay import run_replay

    print(f"replayed from bronze: {run_replay(settings).summary()}")
    return 0


def _db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.warehouse.migrate import migrate

    applied = migrate(settings.postgres_dsn.get_secret_value())
    print("applied: " + ", ".join(applied) if applied else "warehouse schema is up to date")
    return 0


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.contract.registry import RegistryError
    from sf311.ingest import IngestError
    from sf311.ingest.run import ingest

    try:
        counts = ingest(settings, args.source, args.path, since=args.since, until=args.until)
    except (IngestError, RegistryError, ValueError) as err:
        print(f"sf311 ingest: {err}", file=sys.stderr)
        return 1
    print(counts.summary())
    return 0


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.contract.registry import RegistryError
    from sf311.ingest import IngestError
    from sf311.warehouse.reconcile import ReconcileRefused, reconcile

    if args.days is not None:
        settings = settings.model_copy(update={"reconcile_window_days": args.days})
    try:
        counts = reconcile(settings)
    except (ReconcileRefused, IngestError, RegistryError) as err:
        print(f"sf311 reconcile: {err}", file=sys.stderr)
        return 1
    print(counts.summary())
    return 0


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    from sf311.ingest.generate import write_cases

    end = {} if args.end is None else {"end": args.end}
    write_cases(args.out, rows=args.rows, seed=args.seed, days=args.days, **end)
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

    train_and_register(settings, build_spark(settings, "sf311-train"))
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

    p = sub.add_parser("dashboard", help="serve the Streamlit dashboard (analyst role + API)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default SF311_DASHBOARD_PORT)")
    commands["dashboard"] = _dashboard

    sub.add_parser("demo", help="run the whole pipeline on generated data (make demo)")
    commands["demo"] = _demo

    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """Run the sf311 command line and return its exit code."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"sf311: {err}", file=sys.stderr)
        return 2
    configure_logging(settings)
    return commands[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
