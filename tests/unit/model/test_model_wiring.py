"""The training job's doors: spark-submit argv, the job module, the CLI subcommands."""

from __future__ import annotations

import importlib.util

from sf311.cli import build_parser
from sf311.submit import job_file, spark_submit_command

JOB = job_file("train")


def test_spark_submit_runs_the_train_job_with_project_conf(settings) -> None:
    cmd = spark_submit_command(settings, "train")
    assert cmd[0] == str(settings.spark_submit)
    assert cmd[-1] == str(JOB) and JOB.name == "train.py" and JOB.is_file()
    assert cmd[cmd.index("--master") + 1] == settings.spark_master
    assert cmd[cmd.index("--properties-file") + 1].endswith("spark-defaults.conf")


def test_train_job_module_imports() -> None:
    spec = importlib.util.spec_from_file_location("sf311_train_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)


def test_cli_has_train_and_serve() -> None:
    parser, commands = build_parser()
    assert {"train", "serve"} <= set(commands)
    assert parser.parse_args(["serve"]).command == "serve"
