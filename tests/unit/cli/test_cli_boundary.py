"""One boundary: known failures become one line and an exit code; bugs keep their traceback."""

from __future__ import annotations

import pytest

from sf311.cli import run_reported
from sf311.contract.registry import RegistryError
from sf311.errors import InputError, ServiceUnavailable, UserError
from sf311.ingest import IngestError
from sf311.settings import Settings


def _raise(err: Exception):
    def command(settings: Settings) -> int:
        raise err

    return command


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (InputError("x.csv: line 3:\nbad"), 2),
        (ServiceUnavailable("Kafka at h:1 did not answer"), 3),
        (UserError("refused"), 1),
        (IngestError("120 record(s) not acknowledged"), 1),
        (RegistryError("schema registry refused sf311.cases-value: HTTP 409"), 1),
        (FileNotFoundError(2, "No such file or directory", "out/x.csv"), 2),
    ],
)
def test_known_failures_are_one_line_with_their_exit_code(capsys, err: Exception, code: int):
    assert run_reported("sf311 test", _raise(err)) == code
    out, line = capsys.readouterr()
    assert out == "" and line.startswith("sf311 test: ") and line.count("\n") == 1


def test_an_unreachable_registry_exits_3_naming_its_setting(capsys) -> None:
    import requests

    try:
        requests.get("http://127.0.0.1:9/", timeout=2)
    except requests.ConnectionError as cause:
        err = RegistryError("schema registry at http://127.0.0.1:9 unreachable")
        err.__cause__ = cause
    assert run_reported("sf311 test", _raise(err)) == 3
    line = capsys.readouterr().err
    assert "(Connection refused)" in line and "SF311_SCHEMA_REGISTRY_URL" in line


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(KeyError):
        run_reported("sf311 test", _raise(KeyError("service_request_id")))
    with pytest.raises(OSError):
        # An OSError of no file is no user's path: a bug or a socket, not "check the path".
        run_reported("sf311 test", _raise(OSError("socket closed")))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ingest", "--source", "file"], "takes a PATH"),
        (["ingest", "--source", "file", "x.csv", "--since", "2023-11-28"], "no --since"),
        (["ingest", "--source", "socrata", "x.csv"], "takes no PATH"),
    ],
)
def test_contradictory_arguments_exit_2_before_any_service(sf311, argv, message) -> None:
    code, _, err = sf311(*argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_bad_timestamps_are_refused_by_the_parser() -> None:
    from sf311.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["ingest", "--source", "socrata", "--since", "last tuesday"])
    assert exit_.value.code == 2
