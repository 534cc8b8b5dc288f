"""Features: Spark and Python agree, local time is San Francisco's, nothing leaks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pyspark.sql import types as T

from sf311.model.columns import FEATURES
from sf311.model.features import (
    MISSING,
    NO_COORDINATE,
    label_counts,
    labelled,
    local_time_parts,
    record_features,
    with_features,
)

SCHEMA = T.StructType(
    [
        T.StructField("service_request_id", T.LongType()),
        T.StructField("requested_datetime", T.TimestampType()),
        T.StructField("closed_date", T.TimestampType()),
        T.StructField("updated_datetime", T.TimestampType()),
        T.StructField("status_notes", T.StringType()),
        T.StructField("service_name", T.StringType()),
        T.StructField("service_subtype", T.StringType()),
        T.StructField("agency_responsible", T.StringType()),
        T.StructField("neighborhood", T.StringType()),
        T.StructField("supervisor_district", T.IntegerType()),
        T.StructField("police_district", T.StringType()),
        T.StructField("source", T.StringType()),
        T.StructField("lat", T.DoubleType()),
        T.StructField("long", T.DoubleType()),
    ]
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def case(i, requested, closed=None, **kw):
    base = dict(
        service_request_id=i,
        requested_datetime=requested,
        closed_date=closed,
        updated_datetime=closed,
        status_notes="done",
        service_name="Graffiti",
        service_subtype="Graffiti on Sign",
        agency_responsible="DPW Ops Queue",
        neighborhood="Mission",
        supervisor_district=9,
        police_district="MISSION",
        source="Phone",
        lat=37.76,
        long=-122.42,
    )
    base.update(kw)
    return base


ROWS = [
    # 2019-01-01 08:00 UTC is midnight of Tuesday 1 January in San Francisco (PST).
    case(1, utc(2019, 1, 1, 8, 0), utc(2019, 1, 1, 9, 0)),
    # Just after the spring-forward jump: 03:30 PDT on Sunday 10 March 2019.
    case(2, utc(2019, 3, 10, 10, 30), utc(2019, 3, 10, 9, 0), source=None),
    # The repeated autumn hour: 01:30 PDT, then 01:30 PST, on Sunday 4 November 2018.
    case(3, utc(2018, 11, 4, 8, 30), None, lat=None, long=None, supervisor_district=None),
    case(4, utc(2018, 11, 4, 9, 30), utc(2021, 1, 1), service_subtype="  ", neighborhood=None),
]


def test_local_time_parts_follow_los_angeles_daylight_saving() -> None:
    assert local_time_parts(utc(2019, 1, 1, 8, 0)) == (0.0, 1.0, 1.0)
    assert local_time_parts(utc(2019, 3, 10, 10, 30)) == (3.0, 6.0, 3.0)
    assert local_time_parts(utc(2018, 11, 4, 8, 30)) == (1.0, 6.0, 11.0)
    assert local_time_parts(utc(2018, 11, 4, 9, 30)) == (1.0, 6.0, 11.0)
    # Naive values are UTC instants, as silver.cases stores them.
    assert local_time_parts(datetime(2019, 1, 1, 8, 0)) == (0.0, 1.0, 1.0)


def test_record_features_clean_missing_values() -> None:
    row = record_features(ROWS[2])
    assert row["lat"] == row["long"] == NO_COORDINATE
    assert row["supervisor_district"] == MISSING
    assert record_features(ROWS[3])["service_subtype"] == MISSING
    assert record_features(ROWS[0])["supervisor_district"] == "9"
    assert record_features({**ROWS[0], "supervisor_district": 9.0})["supervisor_district"] == "9"


def test_spark_and_python_features_agree(spark) -> None:
    df = spark.createDataFrame([tuple(r[f.name] for f in SCHEMA) for r in ROWS], SCHEMA)
    got = {
        r["service_request_id"]: {f: r[f] for f in FEATURES}
        for r in with_features(df).select("service_request_id", *FEATURES).collect()
    }
    for row in ROWS:
        assert got[row["service_request_id"]] == record_features(row)


def test_features_ignore_everything_known_after_the_request(spark) -> None:
    forbidden = {"closed_date", "updated_datetime", "status_notes", "status_description"}
    assert not forbidden & set(FEATURES)
    early = case(1, utc(2019, 1, 1, 8, 0), utc(2019, 1, 1, 9, 0))
    late = {**early, "closed_date": utc(2020, 5, 5), "updated_datetime": utc(2020, 5, 6)}
    late["status_notes"] = "Case transferred"
    assert record_features(early) == record_features(late)
    df = spark.createDataFrame([tuple(r[f.name] for f in SCHEMA) for r in (early, late)], SCHEMA)
    first, second = with_features(df).select(*FEATURES).collect()
    assert first == second


def test_label_excludes_and_counts_open_negative_and_too_long(spark) -> None:
    df = spark.createDataFrame([tuple(r[f.name] for f in SCHEMA) for r in ROWS], SCHEMA)
    assert label_counts(df) == {"ok": 1, "negative": 1, "open": 1, "too_long": 1}
    (row,) = labelled(df).select("service_request_id", "hours", "label").collect()
    assert row["service_request_id"] == 1
    assert row["hours"] == pytest.approx(1.0)
    assert row["label"] == pytest.approx(0.6931471805599453)


def test_closures_that_resolve_nothing_are_no_label(spark) -> None:
    t0 = utc(2019, 1, 1, 8, 0)
    notes = ["Case is a Duplicate", "Case Transferred", "Case is Invalid", "Case Resolved", None]
    rows = [case(10 + i, t0, utc(2019, 1, 1, 9, 0), status_notes=n) for i, n in enumerate(notes)]
    df = spark.createDataFrame([tuple(r[f.name] for f in SCHEMA) for r in rows], SCHEMA)
    # Without a closure_kind column (silver before the rule) the kind comes from the notes.
    expected = {"duplicate": 1, "transferred": 1, "cancelled_or_invalid": 1, "ok": 2}
    assert label_counts(df) == expected
    kinds = ["resolved", "resolved", "resolved", "duplicate", "unknown"]
    with_kind = spark.createDataFrame(
        [(r["service_request_id"], k) for r, k in zip(rows, kinds, strict=True)],
        "service_request_id long, closure_kind string",
    )
    assert label_counts(df.join(with_kind, "service_request_id")) == {"ok": 4, "duplicate": 1}
    assert sorted(r[0] for r in labelled(df).select("service_request_id").collect()) == [13, 14]
