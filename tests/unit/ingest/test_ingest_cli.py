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


def test_an_unreachable_registry_exits_1_with_one_line(monkeypatch, tmp_path, capsys) -> None:
    import sf311.ingest.run as run

    monkeypatch.setattr(run, "ensure_topics", lambda settings, topics: None)
    monkeypatch.setenv("SF311_SCHEMA_REGISTRY_URL", "http://127.0.0.1:9/apis/ccompat/v7")
    (tmp_path / "x.jsonl").write_text("{}\n")
    assert main(["ingest", "--source", "file", str(tmp_path / "x.jsonl")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("sf311 ingest: schema registry at http://127.0.0.1:9/") and "\n" not in err
    )
