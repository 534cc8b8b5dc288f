"""Files -> Kafka through the real broker and registry: exact counts, keys, dead letters."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import fastavro
import pytest
import requests

from sf311.contract.schema import latest_schema_path, load_schema
from sf311.ingest.records import decode
from sf311.ingest.run import ingest_file

pytestmark = pytest.mark.integration


def expected_ids(
    path: Path, id_column: str, time_column: str, time_format: str
) -> tuple[set[int], int]:
    """Ids of rows with a positive integer id and a parseable time, read with the csv module."""
    good, bad = set(), 0
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                datetime.strptime(row[time_column], time_format)
                ok = row[id_column].isdigit() and int(row[id_column]) > 0
            except ValueError:
                ok = False
            if ok:
                good.add(int(row[id_column]))
            else:
                bad += 1
    return good, bad


@pytest.mark.parametrize(
    ("name", "id_column", "time_column", "time_format"),
    [
        (
            "cases_10k_2008_2019.csv",
            "service_request_id",
            "requested_datetime",
            "%Y-%m-%dT%H:%M:%S.%f",
        ),
        ("export_northbeach_2018_2019.csv", "CaseID", "Opened", "%m/%d/%Y %I:%M:%S %p"),
        (
            "api_raw_2023-11-28.csv",
            "service_request_id",
            "requested_datetime",
            "%Y-%m-%dT%H:%M:%S.%f",
        ),
    ],
)
def test_real_files_reach_the_topic_with_exact_counts(
    shared_data: Path,
    fresh,
    read_topic,
    name: str,
    id_column: str,
    time_column: str,
    time_format: str,
) -> None:
    path = shared_data / name
    good, bad = expected_ids(path, id_column, time_column, time_format)
    with open(path, newline="") as fh:
        rows = sum(1 for _ in csv.DictReader(fh))

    counts = ingest_file(fresh, path, progress=False)

    assert (counts.read, counts.produced, counts.dead_lettered) == (rows, len(good), bad)
    assert counts.produced + counts.dead_lettered == counts.read
    messages = read_topic(fresh.kafka_topic)
    assert len(messages) == len(good)
    assert {int(key) for key, _ in messages} == good


def test_bad_rows_go_to_the_dead_letter_topic_with_their_reason(
    tmp_path: Path, fresh, read_topic
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "service_request_id,requested_datetime,lat,long\n"
        "101,2023-11-28T01:31:07.000,37.78,-122.41\n"
        ",2023-11-28T01:31:07.000,37.78,-122.41\n"
        "102,never,37.78,-122.41\n"
        "103,2023-11-28T02:00:00.000,0,0\n"
    )
    counts = ingest_file(fresh, path, progress=False)
    assert (counts.read, counts.produced, counts.dead_lettered) == (4, 2, 2)
    dead = [json.loads(value) for _, value in read_topic(fresh.kafka_dlq_topic)]
    assert sorted(d["reason"] for d in dead) == [
        "missing service_request_id",
        "unparseable requested_datetime: 'never'",
    ]
    assert {d["record"]["lat"] for d in dead} == {"37.78"}


def test_messages_are_confluent_avro_under_the_registered_id(
    tmp_path: Path, fresh, read_topic, settings
) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(
        json.dumps({"service_request_id": "55", "requested_datetime": "2023-07-01T12:00:00.000"})
    )
    ingest_file(fresh, path, progress=False)
    ((key, value),) = read_topic(fresh.kafka_topic)
    schema_id = int.from_bytes(value[1:5], "big")
    subject = fresh.case_subject
    registered = requests.get(
        f"{settings.schema_registry_url}/subjects/{subject}/versions/latest", timeout=10
    ).json()
    assert registered["id"] == schema_id
    writer = fastavro.parse_schema(json.loads(registered["schema"]))
    record = decode(value, {schema_id: writer})
    assert key == b"55" and record["service_request_id"] == 55
    assert record["requested_datetime"].isoformat() == "2023-07-01T19:00:00+00:00"
    assert load_schema(latest_schema_path(settings.schemas_dir))["name"] == "Case"


def test_a_file_in_many_blocks_reaches_the_topic_whole(
    tmp_path: Path, fresh, read_topic, monkeypatch
) -> None:
    import sf311.ingest.run as run
    from sf311.ingest.generate import write_cases

    path = tmp_path / "cases.jsonl"
    write_cases(path, rows=5000, seed=4)
    with path.open("a") as fh:
        fh.write(json.dumps({"service_request_id": "77", "requested_datetime": "later"}) + "\n")
    # Blocks are encoded in a background thread while the one before is produced.
    monkeypatch.setattr(run, "BATCH_ROWS", 300)
    counts = ingest_file(fresh, path, progress=False)
    assert (counts.read, counts.produced, counts.dead_lettered) == (5001, 5000, 1)
    keys = [int(k) for k, _ in read_topic(fresh.kafka_topic)]
    assert sorted(keys) == list(range(16_000_001, 16_005_001))
    (dead,) = read_topic(fresh.kafka_dlq_topic)
    assert json.loads(dead[1])["reason"] == "unparseable requested_datetime: 'later'"
