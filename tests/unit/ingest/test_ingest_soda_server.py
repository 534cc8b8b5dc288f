"""The SODA-compatible server: SoQL subset, paging parameters, errors, file loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sf311.ingest.soda_server import Dataset, SoqlError

ROWS = [
    {"service_request_id": "3", "updated_datetime": "2023-11-28T05:00:00.000", "source": "Web"},
    {"service_request_id": "10", "updated_datetime": "2023-11-28T05:00:00.000", "source": "Phone"},
    {"service_request_id": "2", "updated_datetime": "2023-11-27T23:59:59.000", "source": "Phone"},
    {"service_request_id": "7", "updated_datetime": "2023-11-28T06:30:00.500"},
]


def ids(body: bytes) -> list[str]:
    return [row["service_request_id"] for row in json.loads(body)]


@pytest.fixture
def dataset() -> Dataset:
    return Dataset(ROWS)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["3", "10", "2", "7"]),
        ({"$order": "service_request_id"}, ["2", "3", "7", "10"]),  # numbers, not text
        ({"$order": "service_request_id DESC"}, ["10", "7", "3", "2"]),
        ({"$order": "updated_datetime, service_request_id"}, ["2", "3", "10", "7"]),
        ({"$order": "updated_datetime DESC, service_request_id"}, ["7", "3", "10", "2"]),
        ({"$order": "source, service_request_id"}, ["2", "10", "3", "7"]),  # nulls last
        ({"$order": "service_request_id", "$limit": "2", "$offset": "1"}, ["3", "7"]),
        ({"$where": "service_request_id > 3", "$order": "service_request_id"}, ["7", "10"]),
        ({"$where": "updated_datetime >= '2023-11-28T05:00:00'"}, ["3", "10", "7"]),
        ({"$where": "source = 'Phone' AND NOT service_request_id = 2"}, ["10"]),
        ({"$where": "source IS NULL"}, ["7"]),
        ({"$where": "source IS NOT NULL AND source != 'Web'"}, ["10", "2"]),
        ({"$where": "service_request_id IN (2, 7)"}, ["2", "7"]),
        ({"$where": "service_request_id BETWEEN 3 AND 7"}, ["3", "7"]),
        (
            {
                "$where": "(updated_datetime > '2023-11-28T05:00:00.000' OR "
                "(updated_datetime = '2023-11-28T05:00:00.000' AND service_request_id > 3))",
                "$order": "updated_datetime, service_request_id",
            },
            ["10", "7"],
        ),
    ],
)
def test_soql_subset(dataset: Dataset, params: dict, expected: list[str]) -> None:
    assert ids(dataset.query(params)) == expected


def test_select_keeps_only_named_columns(dataset: Dataset) -> None:
    body = dataset.query({"$select": "service_request_id, source", "$order": "service_request_id"})
    assert json.loads(body)[0] == {"service_request_id": "2", "source": "Phone"}
    assert json.loads(body)[2] == {"service_request_id": "7"}


@pytest.mark.parametrize(
    "params",
    [
        {"$where": "service_request_id >"},
        {"$where": "service_request_id > 'abc'"},
        {"$where": "updated_datetime > 'yesterday'"},
        {"$where": "(source = 'Web'"},
        {"$limit": "50001"},
        {"$order": "source sideways"},
    ],
)
def test_malformed_queries_are_refused(dataset: Dataset, params: dict) -> None:
    with pytest.raises(SoqlError):
        dataset.query(params)


def test_export_files_are_served_with_api_names_and_iso_times(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        '"CaseID","Opened","Closed","Updated","Category","Latitude","Longitude"\n'
        '"11064745","06/29/2019 09:48:00 PM","","06/30/2019 08:43:04 AM","Street",'
        '"37.79","-122.40"\n'
    )
    rows = json.loads(Dataset.from_file(path).query({}))
    assert rows == [
        {
            "service_request_id": "11064745",
            "requested_datetime": "2019-06-29T21:48:00.000",
            "updated_datetime": "2019-06-30T08:43:04.000",
            "service_name": "Street",
            "lat": "37.79",
            "long": "-122.40",
        }
    ]


def test_http_answers(soda) -> None:
    import requests

    server, _ = soda(ROWS)
    base = f"http://{server.domain}/resource"
    assert requests.get(f"{base}/other-0000.json", timeout=5).status_code == 404
    bad = requests.get(f"{base}/test-0001.json", params={"$where": "x >"}, timeout=5)
    assert bad.status_code == 400 and "malformed" in bad.json()["message"]
    ok = requests.get(f"{base}/test-0001.json", params={"$limit": "1"}, timeout=5)
    assert ok.headers["Content-Type"].startswith("application/json") and len(ok.json()) == 1
