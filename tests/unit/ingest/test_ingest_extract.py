"""The sodapy extractor against the SODA server on loopback: paging, retries, failures."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
import requests
import urllib3

from sf311.ingest.extract import (
    ExtractError,
    FastJsonAdapter,
    PageRows,
    get_page,
    iter_pages,
    keyset_where,
    socrata_client,
    start_position,
    to_floating,
)
from sf311.ingest.soda_server import Faults
from sf311.ingest.watermark import Watermark


def make_rows(n: int) -> list[dict]:
    """n rows, many sharing an updated_datetime so that the id breaks ties across pages."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "service_request_id": str(1000 + (i * 7919) % n),
                "requested_datetime": "2023-11-01T00:00:00.000",
                "updated_datetime": f"2023-11-{1 + i % 5:02d}T10:00:0{i % 3}.000",
                "service_name": "Graffiti",
            }
        )
    return rows


def keyed(rows: list[dict]) -> list[tuple[str, int]]:
    return [(r["updated_datetime"], int(r["service_request_id"])) for r in rows]


def extract_all(settings, start=None, until=None, page_size=7) -> tuple[list[dict], int]:
    with socrata_client(settings) as client:
        pages = list(iter_pages(client, settings, start, until, page_size))
    return [row for page in pages for row in page.rows], len(pages)


def test_keyset_paging_returns_every_row_once_in_order(soda) -> None:
    rows = make_rows(100)
    _, settings = soda(rows)
    got, pages = extract_all(settings, page_size=7)
    assert keyed(got) == sorted(keyed(rows))
    assert pages == 15  # 14 full pages of 7, then a short one


def test_faults_on_a_fifth_of_requests_change_nothing(soda) -> None:
    rows = make_rows(300)
    server, settings = soda(
        rows, Faults(fail_rate=0.2, fail_codes=(429, 500), retry_after=0, seed=7)
    )
    got, _ = extract_all(settings, page_size=10)
    assert sorted(keyed(got)) == sorted(keyed(rows))
    assert len(got) == len(rows)
    assert server.statuses[429] > 0 and server.statuses[500] > 0


def test_slow_answers_time_out_and_are_retried(soda) -> None:
    rows = make_rows(20)
    server, settings = soda(
        rows, Faults(slow_rate=0.3, slow_seconds=3, seed=3), socrata_timeout_seconds=1
    )
    got, _ = extract_all(settings, page_size=5)
    assert sorted(keyed(got)) == sorted(keyed(rows))
    assert server.slow_answers > 0


def test_bounded_attempts_then_a_clear_failure(soda) -> None:
    server, settings = soda(
        make_rows(5), Faults(fail_rate=1.0, fail_codes=(503,)), socrata_max_attempts=3
    )
    with pytest.raises(ExtractError, match="failed after 3 attempts; last error: HTTP 503"):
        extract_all(settings)
    assert server.statuses[503] == 3


def test_client_errors_are_not_retried(soda) -> None:
    server, settings = soda(make_rows(5))
    with socrata_client(settings) as client, pytest.raises(ExtractError, match="400"):
        get_page(client, settings, {"where": "service_request_id >"})
    assert server.statuses[400] == 1


def test_retry_after_is_honoured_and_backoff_grows(soda) -> None:
    _, settings = soda(
        make_rows(5),
        Faults(fail_rate=1.0, fail_codes=(429,), retry_after=3),
        socrata_max_attempts=4,
        socrata_backoff_seconds=0.5,
        socrata_backoff_max_seconds=10,
    )
    waits: list[float] = []
    with socrata_client(settings) as client, pytest.raises(ExtractError):
        get_page(client, settings, {"limit": 1}, sleep=waits.append, rng=random.Random(1))
    assert len(waits) == 3
    assert all(w >= 3 for w in waits)


def test_backoff_is_jittered_exponential_and_capped(soda) -> None:
    _, settings = soda(
        make_rows(5),
        Faults(fail_rate=1.0, fail_codes=(500,)),
        socrata_max_attempts=6,
        socrata_backoff_seconds=1.0,
        socrata_backoff_max_seconds=4.0,
    )
    waits: list[float] = []
    with socrata_client(settings) as client, pytest.raises(ExtractError):
        get_page(client, settings, {"limit": 1}, sleep=waits.append, rng=random.Random(2))
    caps = [1, 2, 4, 4, 4]
    assert len(waits) == 5
    assert all(0 <= w <= cap for w, cap in zip(waits, caps, strict=True))
    assert len(set(waits)) == 5


def test_app_token_is_sent(soda) -> None:
    rows = make_rows(5)
    server, settings = soda(rows, app_token="tok-123", socrata_app_token="tok-123")
    assert len(extract_all(settings)[0]) == 5
    _, anonymous = soda(rows, app_token="tok-123")
    with pytest.raises(ExtractError, match="403"):
        extract_all(anonymous)


def test_start_and_until_bound_the_rows(soda) -> None:
    rows = make_rows(50)
    _, settings = soda(rows)
    start = Watermark(datetime(2023, 11, 2, 10, 0, 1), 1020)
    until = datetime(2023, 11, 4, 10, 0, 0)
    got, _ = extract_all(settings, start, until, page_size=4)
    expected = [
        k for k in sorted(keyed(rows))
        if ("2023-11-02T10:00:01.000", 1020) < k and k[0] < "2023-11-04T10:00:00.000"
    ]  # fmt: skip
    assert keyed(got) == expected and expected


def test_keyset_where_text() -> None:
    start = Watermark(datetime(2023, 11, 28, 5, 46, 59, 120000), 42)
    assert keyset_where(start, datetime(2023, 11, 29)) == (
        "(updated_datetime > '2023-11-28T05:46:59.120' OR (updated_datetime = "
        "'2023-11-28T05:46:59.120' AND service_request_id > 42)) "
        "AND updated_datetime < '2023-11-29T00:00:00.000'"
    )
    assert keyset_where(None, None) is None


def test_start_is_the_earlier_of_watermark_and_since_minus_overlap() -> None:
    stored = Watermark(datetime(2023, 11, 28, 5, 0), 42)
    since = datetime(2023, 11, 28, 6, 0)
    overlap = timedelta(minutes=10)
    assert start_position(stored, since, overlap) == Watermark(datetime(2023, 11, 28, 4, 50), 0)
    assert start_position(stored, None, timedelta(0)) == stored
    assert start_position(None, since, overlap) == Watermark(datetime(2023, 11, 28, 5, 50), 0)
    assert start_position(None, None, overlap) is None


def test_instants_become_floating_los_angeles_time() -> None:
    assert to_floating(datetime(2023, 7, 1, 12, 0, tzinfo=UTC)) == datetime(2023, 7, 1, 5, 0)
    assert to_floating(datetime(2023, 12, 1, 12, 0, tzinfo=UTC)) == datetime(2023, 12, 1, 4, 0)
    assert to_floating(datetime(2023, 12, 1, 12, 0)) == datetime(2023, 12, 1, 12, 0)


def test_sodapy_reaches_the_loopback_server_over_plain_http(soda) -> None:
    server, settings = soda(make_rows(3))
    url = f"http://{server.domain}/resource/test-0001.json"
    assert len(requests.get(url, timeout=5).json()) == 3
    with socrata_client(settings) as client:
        assert client.uri_prefix == "http://"


def adapter_response(body: bytes) -> requests.Response:
    raw = urllib3.HTTPResponse(
        body=io.BytesIO(body),
        headers={"Content-Type": "application/json;charset=utf-8"},
        status=200,
        preload_content=False,
    )
    request = requests.Request("GET", "http://127.0.0.1/resource/x.json").prepare()
    return FastJsonAdapter().build_response(request, raw)


def test_pages_decode_with_orjson_and_fall_back_to_requests_json() -> None:
    page = adapter_response(b'[{"a": "1", "b": {"c": [1, 2]}}]').json()
    assert isinstance(page, PageRows) and list(page) == [{"a": "1", "b": {"c": [1, 2]}}]
    assert adapter_response(b'[{"a": "1"}, {"a": 2}]').json() == [{"a": "1"}, {"a": 2}]
    (row,) = adapter_response(b'[{"lat": NaN}]').json()  # not strict JSON: requests decodes it
    assert row["lat"] != row["lat"]
    with pytest.raises(requests.exceptions.JSONDecodeError):
        adapter_response(b"<html>busy</html>").json()


def test_the_client_mounts_the_fast_json_adapter(soda) -> None:
    server, settings = soda(make_rows(3))
    with socrata_client(settings) as client:
        adapter = client.session.get_adapter(f"http://{server.domain}/resource/x.json")
        assert isinstance(adapter, FastJsonAdapter)
        assert len(client.get("test-0001")) == 3


def test_pages_read_in_pieces_equal_the_page_read_whole(monkeypatch) -> None:
    import sf311.ingest.extract as extract

    rows = [{**row, "status_notes": f"n{i}"} for i, row in enumerate(make_rows(60))]
    rows[50]["media_url"] = {"url": "http://x/1.jpg"}  # a column only the last piece has
    rows[20]["service_name"] = None  # null in one piece, a string elsewhere
    cut_in_string = [*rows[:3], {**rows[3], "status_notes": 'a "},{" b'}, *rows[4:]]
    monkeypatch.setattr(extract, "_PIECE_BYTES", 300)
    for some in (rows, cut_in_string):
        body = ("[" + ",\n ".join(json.dumps(row) for row in some) + "]").encode()
        assert len(extract._pieces(body)) > 5
        page = extract.read_page(body, list)
        assert page is not None and page.table.to_pylist() == [
            {**dict.fromkeys(page.table.column_names), **row} for row in some
        ]
        # Read in pieces (one chunk each) unless a cut fell inside a string: then whole.
        assert (page.table.column(0).num_chunks > 1) == (some is rows)
    mixed = body.replace(b'"n40"', b"40")  # a number where other pieces hold strings
    assert extract.read_page(mixed, list) is None
