"""The `sf311 ingest` command refuses contradictory arguments before touching any service."""

from __future__ import annotations

import pytest

from sf311.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ingest", "--source", "file"], "takes a PATH"),
        (["ingest", "--source", "file", "x.csv", "--since", "2023-11-28"], "no --since"),
        (["ingest", "--source", "socrata", "x.csv"], "takes no PATH"),
    ],
)
def test_bad_combinations_exit_1_with_a_message(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_bad_timestamps_are_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        main(["ingest", "--source", "socrata", "--since", "last tuesday"])
