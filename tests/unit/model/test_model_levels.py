"""Rare and unseen levels: shrunk medians with fallbacks, pooling, Spark and Python agreeing."""

from __future__ import annotations

import math

import pytest

from sf311.model.levels import (
    CATEGORY_STAT,
    OTHER,
    SUBTYPE_STAT,
    apply_levels,
    fallbacks,
    fit_levels,
    levels_stage,
    pooled_name,
    stage_levels,
)

SCHEMA = "service_name string, service_subtype string, source string, label double"
# Category A: subtype a1 x4 at 1.0, a2 x2 at 3.0; category "O'B\\" (quote, backslash) x1.
ROWS = [("A", "a1", "Phone", 1.0)] * 4 + [("A", "a2", "Web", 3.0)] * 2
ROWS += [("O'B\\", "b", "Phone", 9.0)]


@pytest.fixture(scope="module")
def levels(spark):
    return fit_levels(spark.createDataFrame(ROWS, SCHEMA), ("service_name", "source"), 3, 2.0)


def test_medians_shrink_toward_the_parent_and_rare_levels_keep_none(levels) -> None:
    # Global median of 1,1,1,1,3,3,9 is 1; A (6 cases, median 1) shrinks toward it: 1.
    assert levels["global"] == 1.0
    assert levels["categories"] == {"A": 1.0}
    # a1: (4 * 1 + 2 * 1) / 6; a2 has 2 < 3 cases and the O'B\ category 1: none of their own.
    assert levels["subtypes"] == {"A > a1": 1.0}
    assert levels["kept"] == {"service_name": ["A"], "source": ["Phone"]}


def test_unseen_subtype_reads_its_category_and_unseen_category_the_global(levels) -> None:
    levels = {**levels, "categories": {"A": 2.0}, "subtypes": {"A > a1": 1.5}}
    row = apply_levels({"service_name": "A", "service_subtype": "new", "source": "Phone"}, levels)
    assert (row[SUBTYPE_STAT], row[CATEGORY_STAT]) == (2.0, 2.0)
    assert row[pooled_name("service_name")] == "A"
    other = {"service_name": "Z", "service_subtype": "a1", "source": "Fax"}
    row = apply_levels(other, levels)
    assert (row[SUBTYPE_STAT], row[CATEGORY_STAT]) == (1.0, 1.0)
    assert row[pooled_name("source")] == OTHER
    assert fallbacks(other, levels) == {
        "service_subtype": "global median",
        "service_name": "global median",
        "source": f"pooled level {OTHER}",
    }


def test_spark_stage_and_python_agree_and_the_stage_carries_its_spec(spark, levels) -> None:
    levels = {**levels, "categories": {"A": 2.0, "O'B\\": 0.1 + 0.2}, "subtypes": {"A > a1": 1.5}}
    stage = levels_stage(levels)
    assert stage_levels(stage) == levels
    probe = [("A", "a1", "Phone", 0.0), ("A", "zz", "Web", 0.0), ("O'B\\", "b", "*/", 0.0)]
    got = stage.transform(spark.createDataFrame(probe, SCHEMA)).collect()
    for spark_row, (name, subtype, source, _) in zip(got, probe, strict=True):
        py = apply_levels(
            {"service_name": name, "service_subtype": subtype, "source": source}, levels
        )
        for column in (SUBTYPE_STAT, CATEGORY_STAT, pooled_name("service_name")):
            assert spark_row[column] == py[column]
        assert spark_row[pooled_name("source")] == py[pooled_name("source")]
    assert math.isclose(got[2][CATEGORY_STAT], 0.30000000000000004, rel_tol=0, abs_tol=0)


def test_no_training_cases_is_a_clear_error(spark) -> None:
    with pytest.raises(ValueError, match="no labelled training cases"):
        fit_levels(spark.createDataFrame([], SCHEMA), ("source",), 3, 2.0)
