"""Quality flags and closure kinds of curated cases: explicit rows through validate -> curate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from sf311.contract import quality
from sf311.lakehouse import bronze, decode, silver

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
IN_SF = {"lat": 37.8, "long": -122.41}


def ts(day: int, hour: int = 0) -> datetime:
    return datetime(2019, 3, day, hour, tzinfo=UTC)


def validate(messages, wire, records):
    values = [wire.frame(1, wire.v1, r) for r in records]
    decoded = decode.decode(decode.frame(messages(values)), {1: wire.v1_text}, wire.v1_text)
    return silver.validate(bronze.bronze_rows(decoded, 3, AS_OF), AS_OF)


def curate(spark, messages, wire, records):
    return silver.curated_rows(validate(messages, wire, records))


def test_impossible_values_are_flagged_and_nulled_not_quarantined(spark, messages, wire):
    records = [
        wire.case(1, **IN_SF, requested_datetime=ts(1), closed_date=ts(1, 6),
                  status_notes="Case Resolved"),
        wire.case(2, **IN_SF, requested_datetime=ts(5), closed_date=ts(4),
                  status_notes="Case Resolved"),
        wire.case(3, lat=95.0, long=-200.0),
        wire.case(4),
        wire.case(5, lat=0.0, long=0.0, service_name="  "),
        wire.case(6, **IN_SF, closed_date=AS_OF + timedelta(days=30),
                  updated_datetime=datetime(1990, 1, 1, tzinfo=UTC)),
        # Nulled by the ingest for lying outside the city, before the flag existed.
        wire.case(7, location_issue="out_of_bounds"),
    ]  # fmt: skip
    got = curate(spark, messages, wire, records).select(
        "service_request_id", "quality_flags", "lat", "long", "closed_date", "updated_datetime",
        "resolution_hours",
    )  # fmt: skip
    updated = ts(2, 17)
    expected = spark.createDataFrame(
        [
            (1, [], 37.8, -122.41, ts(1, 6), updated, 6.0),
            (2, ["closed_before_opened"], 37.8, -122.41, ts(4), updated, None),
            (3, ["location_outside_sf"], None, None, None, updated, None),
            (4, ["location_missing"], None, None, None, updated, None),
            (5, ["location_missing", "category_unknown"], None, None, None, updated, None),
            # Closed at an impossible instant, never updated plausibly: opened is the version.
            (
                6,
                ["closed_date_invalid", "updated_datetime_invalid"],
                37.8,
                -122.41,
                None,
                datetime(2019, 3, 1, 17, tzinfo=UTC),
                None,
            ),
            (7, ["location_outside_sf"], None, None, None, updated, None),
        ],  # fmt: skip
        "service_request_id long, quality_flags array<string>, lat double, long double, "
        "closed_date timestamp, updated_datetime timestamp, resolution_hours double",
    )
    assertDataFrameEqual(got, expected)


def test_closure_kind_is_read_from_the_notes_of_closed_cases(spark, messages, wire):
    notes = {
        1: "Case Resolved - Pickup completed.",
        2: "Case is a Duplicate",
        3: "Case Transferred",
        4: "Case is Invalid",
        5: "Cancelled",
        6: "Scheduled - Dispatched driver",
        7: None,
    }
    closed = [wire.case(i, closed_date=ts(3), status_notes=n) for i, n in notes.items()]
    still_open = wire.case(8, status_notes="Case Resolved")
    # Closed at an impossible instant: still a closure, of the kind its notes say.
    bad_close = wire.case(9, closed_date=AS_OF + timedelta(days=9), status_notes="Case Resolved")
    got = curate(spark, messages, wire, [*closed, still_open, bad_close])
    expected = spark.createDataFrame(
        [
            (1, "resolved"),
            (2, "duplicate"),
            (3, "transferred"),
            (4, "cancelled_or_invalid"),
            (5, "cancelled_or_invalid"),
            (6, "unknown"),
            (7, "unknown"),
            (8, "unknown"),
            (9, "resolved"),
        ],  # fmt: skip
        "service_request_id long, closure_kind string",
    )
    assertDataFrameEqual(got.select("service_request_id", "closure_kind"), expected)


def test_spark_and_python_read_the_closure_rule_alike(spark):
    notes = [
        "resolved: Maximo Service Request has been resolved", "Work Completed", "ADMIN CLOSED",
        "Administrative Closure - by Recology", "Unable to Locate", "Insufficient Information",
        "Case Resolved - DUPLICATE SERVICE REQUEST .", "Request is a duplicate and has been",
        "Case Transferred - Area was cleaned", "undone, completely open", "CANCELLATION",
        "Noise informational reports are closed", "Sign repaired or replaced", "", None,
    ]  # fmt: skip
    frame = spark.createDataFrame([(n,) for n in notes], "notes string")
    got = frame.select(silver.closure_kind(F.col("notes"), F.lit(True)).alias("kind")).collect()
    assert [r.kind for r in got] == [quality.closure_kind(n, closed=True) for n in notes]
    assert {r.kind for r in got} == set(quality.CLOSURE_KINDS)


def test_validation_is_generated_code_that_lower_cases_the_notes_once(spark, messages, wire):
    # A lambda function (array_compact, filter) is evaluated row by row without generated code:
    # in a profile of an 8M backfill array_compact took 11 % of Spark's samples; lower() once
    # per keyword, 6.8 %.
    case = wire.case(1, **IN_SF, requested_datetime=ts(1), closed_date=ts(1, 6),
                     status_notes="Case Resolved")  # fmt: skip
    validated = validate(messages, wire, [case])
    plan = validated._jdf.queryExecution().optimizedPlan().toString()
    assert "lambdafunction" not in plan
    assert plan.count("lower(") == 1
    assert validated.select("quality_flags", "closure_kind").first() == ([], quality.RESOLVED)


def test_the_validation_method_is_left_to_the_jit_though_over_hotspots_size_limit(
    spark, messages, wire
):
    # HotSpot interprets methods of over 8,000 bytes of bytecode unless told otherwise
    # (conf/spark-defaults.conf); interpreted, this one held 68 % of a profile of its stage.
    case = wire.case(1, **IN_SF, requested_datetime=ts(1), status_notes="Case Resolved")
    validated = validate(messages, wire, [case])
    jvm = spark._jvm
    stages = jvm.org.apache.spark.sql.execution.debug.package.codegenStringSeq(
        validated._jdf.queryExecution().executedPlan()
    )
    largest = max(stages.apply(i)._3().maxMethodCodeSize() for i in range(stages.size()))
    assert largest > 8000
    diagnostics = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    )
    assert diagnostics.getVMOption("DontCompileHugeMethods").getValue() == "false"
