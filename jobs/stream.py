"""spark-submit entry point of the streaming job: `spark-submit jobs/stream.py [--once]`."""

from __future__ import annotations

import argparse
import sys

from sf311.cli import run_reported
from sf311.lakehouse.stream import run_job
from sf311.model.predictions import CasePredictionSink, OverdueHistorySink


def main(argv: list[str] | None = None) -> int:
    """Run the Kafka -> bronze -> silver -> Postgres (cases, case_predictions) job and return
    its exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="trigger(availableNow): run to the end")
    args = parser.parse_args(argv)
    sinks = (CasePredictionSink, OverdueHistorySink)
    return run_reported(
        "sf311 stream", lambda settings: run_job(settings, once=args.once, extra_sinks=sinks)
    )


if __name__ == "__main__":
    sys.exit(main())
