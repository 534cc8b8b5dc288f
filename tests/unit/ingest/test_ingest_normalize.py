"""Normalization of raw rows: times, numbers, locations, drifting columns, dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from sf311.ingest.normalize import DeadLetter, normalize, parse_point, parse_timestamp


def ms(*args: int) -> int:
    """Epoch ms of a UTC wall time, written out by hand in each test."""
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


BASE = {
    "service_request_id": "17598709",
    "requested_datetime": "2023-11-28T01:31:07.000",
    "updated_datetime": "2023-11-28T05:46:59.000",
    "status_description": "Open",
    "service_name": "Street and Sidewalk Cleaning",
    "supervisor_district": "3",
    "neighborhoods_sffind_boundaries": "Northern Waterfront",
    "lat": "37.800961397623",
    "long": "-122.399447998146",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2008-07-01T09:35:16.000", ms(2008, 7, 1, 16, 35, 16)),  # PDT, UTC-7
        ("2023-11-28T01:31:07.000", ms(2023, 11, 28, 9, 31, 7)),  # PST, UTC-8
        ("2023-11-28T01:31:07.250", ms(2023, 11, 28, 9, 31, 7) + 250),
        ("2023-11-28T01:31:07", ms(2023, 11, 28, 9, 31, 7)),
        ("06/29/2019 09:48:00 PM", ms(2019, 6, 30, 4, 48, 0)),
        ("06/29/2019 12:05:00 AM", ms(2019, 6, 29, 7, 5, 0)),
        ("06/29/2019 12:05:00 PM", ms(2019, 6, 29, 19, 5, 0)),
        ("2019-06-29T21:48:00Z", ms(2019, 6, 29, 21, 48, 0)),
        ("2019-06-29T21:48:00+02:00", ms(2019, 6, 29, 19, 48, 0)),
        ("2019-06-29T21:48:00.12Z", ms(2019, 6, 29, 21, 48, 0) + 120),  # 23 characters, zoned
        # The repeated hour of the fall-back night takes the first (PDT) reading.
        ("2023-11-05T01:30:00.000", ms(2023, 11, 5, 8, 30, 0)),
        ("2023-11-05T02:30:00.000", ms(2023, 11, 5, 10, 30, 0)),
    ],
)
def test_timestamps_are_los_angeles_local_unless_zoned(text: str, expected: int) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2023-13-01T00:00:00",
        "13/29/2019 09:48:00 PM",
        "06/29/2019 13:48:00 PM",
        None,
        5,
    ],
)
def test_unparseable_timestamps_are_none(text: object) -> None:
    assert parse_timestamp(text) is None


def test_numbers_arriving_as_strings_are_typed() -> None:
    case = normalize({**BASE, "supervisor_district": "3.0", "bos_2012": "5"}, "socrata")
    assert case["service_request_id"] == 17598709
    assert case["supervisor_district"] == 3
    assert case["bos_2012"] == 5
    assert case["lat"] == pytest.approx(37.800961397623)
    assert case["long"] == pytest.approx(-122.399447998146)
    assert case["location_issue"] is None
    assert case["neighborhood"] == "Northern Waterfront"
    assert case["requested_datetime"] == ms(2023, 11, 28, 9, 31, 7)
    assert case["updated_datetime"] == ms(2023, 11, 28, 13, 46, 59)
    assert case["closed_date"] is None
    assert case["origin"] == "socrata"
    assert case["extra"] is None


def test_json_numbers_are_accepted() -> None:
    case = normalize({**BASE, "service_request_id": 17598709, "lat": 37.8, "long": -122.4}, "file")
    assert (case["service_request_id"], case["lat"], case["long"]) == (17598709, 37.8, -122.4)


@pytest.mark.parametrize(
    ("lat", "long", "issue"),
    [
        ("0.000000000000", "0.000000000000", "zero"),
        ("37.1", "-121.9", "out_of_bounds"),
        ("", "", "missing"),
    ],
)
def test_bad_locations_become_null_with_a_flag(lat: str, long: str, issue: str) -> None:
    case = normalize({**BASE, "lat": lat, "long": long}, "file")
    assert (case["lat"], case["long"], case["location_issue"]) == (None, None, issue)


@pytest.mark.parametrize(
    "point",
    [
        "POINT (-122.40359497 37.79829025)",
        "{'human_address': '{\"address\": \"\", \"city\": \"\"}', 'latitude': '37.79829025', "
        "'longitude': '-122.40359497'}",
        {"latitude": "37.79829025", "longitude": "-122.40359497", "human_address": ""},
        '{"type": "Point", "coordinates": [-122.40359497, 37.79829025]}',
        {"type": "Point", "coordinates": [-122.40359497, 37.79829025]},
    ],
)
def test_point_in_each_form_fills_missing_lat_long(point: object) -> None:
    assert parse_point(point) == pytest.approx((37.79829025, -122.40359497))
    raw = {k: v for k, v in BASE.items() if k not in ("lat", "long")}
    case = normalize({**raw, "point": point}, "socrata")
    assert (case["lat"], case["long"]) == pytest.approx((37.79829025, -122.40359497))
    assert case["location_issue"] is None


def test_point_geom_is_used_when_point_is_absent() -> None:
    raw = {k: v for k, v in BASE.items() if k not in ("lat", "long")}
    geom = {"type": "Point", "coordinates": [-122.41, 37.77]}
    case = normalize({**raw, "point_geom": geom}, "socrata")
    assert (case["lat"], case["long"]) == (37.77, -122.41)


def test_unknown_and_unparseable_columns_are_kept_in_extra() -> None:
    raw = {
        **BASE,
        ":@computed_region_6qbp_sg9q": "77",
        ":@computed_region_pigm_ib2e": "",
        "new_column": "x",
        "supervisor_district": "three",
        "closed_date": "not a time",
    }
    case = normalize(raw, "socrata")
    assert case["supervisor_district"] is None
    assert case["closed_date"] is None
    assert json.loads(case["extra"]) == {
        ":@computed_region_6qbp_sg9q": "77",
        "new_column": "x",
        "supervisor_district": "three",
        "closed_date": "not a time",
    }


def test_drifting_columns_are_tolerated() -> None:
    old_era = {k: v for k, v in BASE.items() if k != "supervisor_district"}
    new_era = {**BASE, "analysis_neighborhood": "North Beach", "data_as_of": "2023-11-28T06:00:00"}
    assert normalize(old_era, "file")["supervisor_district"] is None
    case = normalize(new_era, "socrata")
    assert case["analysis_neighborhood"] == "North Beach"
    assert case["data_as_of"] == ms(2023, 11, 28, 14, 0, 0)


def test_media_url_as_dict_or_text() -> None:
    url = "http://mobile311.sfgov.org/reports/11064680/photos"
    assert normalize({**BASE, "media_url": {"url": url}}, "socrata")["media_url"] == url
    assert normalize({**BASE, "media_url": url}, "file")["media_url"] == url
    assert normalize({**BASE, "media_url": ""}, "file")["media_url"] is None


def test_a_case_closing_before_it_opens_is_kept_as_reported() -> None:
    case = normalize({**BASE, "closed_date": "2023-11-27T01:00:00.000"}, "file")
    assert case["closed_date"] < case["requested_datetime"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"service_request_id": ""}, "missing service_request_id"),
        ({"service_request_id": None}, "missing service_request_id"),
        ({"service_request_id": "abc"}, "unparseable service_request_id: 'abc'"),
        ({"service_request_id": "-4"}, "unparseable service_request_id: '-4'"),
        ({"requested_datetime": ""}, "missing requested_datetime"),
        ({"requested_datetime": "soon"}, "unparseable requested_datetime: 'soon'"),
    ],
)
def test_rows_without_id_or_time_become_dead_letters(change: dict, reason: str) -> None:
    raw = {**BASE, **change}
    result = normalize(raw, "file")
    assert result == DeadLetter(reason, raw)


@pytest.mark.parametrize(
    ("fields", "kept"),
    [
        ({"lat": "95", "long": "-200"}, {"lat": "95", "long": "-200"}),
        ({"lat": "", "long": "", "point": "POINT (-200 95)"}, {"point": "POINT (-200 95)"}),
    ],
)
def test_coordinates_outside_the_city_keep_their_raw_values_in_extra(fields, kept) -> None:
    case = normalize({**BASE, **fields}, "file")
    assert (case["lat"], case["long"], case["location_issue"]) == (None, None, "out_of_bounds")
    assert json.loads(case["extra"]) == kept
