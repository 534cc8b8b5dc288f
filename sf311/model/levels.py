"""Rare and unseen levels: pooled categoricals and hierarchical target statistics.

Fit on the training window only. A subtype is scored by its own median log duration shrunk
toward its category's, a category by its median shrunk toward the global one; a level with
fewer than `min_count` training cases keeps no statistic of its own, so an unseen or rare
subtype reads its category's, and an unseen or rare category the global one. Categoricals the
trees split on keep only levels with `min_count` cases; the others share one pooled level the
trees learn from, so an unseen value never takes an arbitrary branch. The same rule runs in
Spark (a SQLTransformer stage of the pipeline) and in Python (the JVM-free scorer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sf311.model.features import LABEL

OTHER = "(other)"
POOLED_SUFFIX = "_level"
SUBTYPE_STAT = "subtype_median"
CATEGORY_STAT = "category_median"
STATS: tuple[str, ...] = (SUBTYPE_STAT, CATEGORY_STAT)
CATEGORY, SUBTYPE = "service_name", "service_subtype"
# Category and subtype joined into one key; no real category contains it.
KEY_SEP = " > "
SPEC_OPEN, SPEC_CLOSE = "/* levels: ", " */"


def pooled_name(column: str) -> str:
    """Return the name of the pooled copy of a categorical column."""
    return column + POOLED_SUFFIX


def _shrunk(median: float, n: int, parent: float, prior: float) -> float:
    return (n * median + prior * parent) / (n + prior)


def fit_levels(
    train: DataFrame, pooled: Sequence[str], min_count: int, prior: float
) -> dict[str, Any]:
    """Return the levels spec fit on labelled training cases: kept levels of each pooled
    categorical, and the shrunk subtype and category medians with the global median."""
    if min_count < 1 or prior < 0:
        raise ValueError(f"min_count must be >= 1 and prior >= 0, got {min_count}, {prior}")
    overall = train.agg(F.percentile(LABEL, 0.5).alias("m"), F.count("*").alias("n")).first()
    if overall["n"] == 0:
        raise ValueError("no labelled training cases to fit level statistics on")
    glob = float(overall["m"])
    by_cat = train.groupBy(CATEGORY).agg(
        F.percentile(LABEL, 0.5).alias("m"), F.count("*").alias("n")
    )
    categories = {
        r[CATEGORY]: _shrunk(float(r["m"]), int(r["n"]), glob, prior)
        for r in by_cat.collect()
        if r["n"] >= min_count
    }
    by_sub = train.groupBy(CATEGORY, SUBTYPE).agg(
        F.percentile(LABEL, 0.5).alias("m"), F.count("*").alias("n")
    )
    subtypes = {
        r[CATEGORY] + KEY_SEP + r[SUBTYPE]: _shrunk(
            float(r["m"]), int(r["n"]), categories.get(r[CATEGORY], glob), prior
        )
        for r in by_sub.collect()
        if r["n"] >= min_count
    }
    kept = {}
    for column in pooled:
        rows = train.groupBy(column).count().where(F.col("count") >= min_count).collect()
        kept[column] = sorted(str(r[column]) for r in rows)
    return {
        "min_count": min_count,
        "prior": prior,
        "global": glob,
        "categories": categories,
        "subtypes": subtypes,
        "kept": kept,
    }


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _double(value: float) -> str:
    # A D suffix keeps the literal a double: a bare 1.5 is a DECIMAL in Spark SQL.
    return f"{float(value)!r}D"


def _lookup(table: Mapping[str, float], key: str) -> str:
    if not table:
        return "CAST(NULL AS DOUBLE)"
    pairs = ", ".join(f"{_literal(k)}, {_double(v)}" for k, v in sorted(table.items()))
    return f"map({pairs})[{key}]"


def levels_statement(levels: Mapping[str, Any]) -> str:
    """Return the SQLTransformer statement adding the pooled categoricals and the medians."""
    pooled = []
    for column, kept in levels["kept"].items():
        inside = ", ".join(_literal(v) for v in kept) or "NULL"
        pooled.append(
            f"CASE WHEN `{column}` IN ({inside}) THEN `{column}` ELSE {_literal(OTHER)} END"
            f" AS `{pooled_name(column)}`"
        )
    category = f"coalesce({_lookup(levels['categories'], CATEGORY)}, {_double(levels['global'])})"
    key = f"concat({CATEGORY}, {_literal(KEY_SEP)}, {SUBTYPE})"
    subtype = f"coalesce({_lookup(levels['subtypes'], key)}, {category})"
    columns = [*pooled, f"{category} AS {CATEGORY_STAT}", f"{subtype} AS {SUBTYPE_STAT}"]
    return f"SELECT *, {', '.join(columns)} FROM __THIS__"


def levels_stage(levels: Mapping[str, Any]) -> SQLTransformer:
    """Return the pipeline stage that applies a levels spec in Spark, the spec in a comment.

    The saved pipeline (MLflow, export) so carries the spec it was fit with."""
    # An escaped slash keeps the JSON valid and the comment unbroken.
    spec = json.dumps(levels, sort_keys=True).replace("*/", "*\\/")
    return SQLTransformer(statement=f"{levels_statement(levels)} {SPEC_OPEN}{spec}{SPEC_CLOSE}")


def stage_levels(stage: SQLTransformer) -> dict[str, Any]:
    """Return the levels spec a stage made by levels_stage was built from."""
    statement = stage.getStatement()
    if SPEC_OPEN not in statement:
        raise ValueError("the pipeline's first stage is not a levels stage")
    return json.loads(statement.split(SPEC_OPEN, 1)[1].rsplit(SPEC_CLOSE, 1)[0])


def apply_levels(row: Mapping[str, Any], levels: Mapping[str, Any]) -> dict[str, Any]:
    """Return a feature row with the pooled categoricals and medians added, as Spark does."""
    out = dict(row)
    for column, kept in levels["kept"].items():
        out[pooled_name(column)] = row[column] if row[column] in kept else OTHER
    category = levels["categories"].get(row[CATEGORY], levels["global"])
    out[CATEGORY_STAT] = category
    out[SUBTYPE_STAT] = levels["subtypes"].get(row[CATEGORY] + KEY_SEP + row[SUBTYPE], category)
    return out


def fallbacks(row: Mapping[str, Any], levels: Mapping[str, Any]) -> dict[str, str]:
    """Return, per input the training window saw too rarely, what the model scored it by."""
    out = {}
    category_known = row[CATEGORY] in levels["categories"]
    if row[CATEGORY] + KEY_SEP + row[SUBTYPE] not in levels["subtypes"]:
        out[SUBTYPE] = "category median" if category_known else "global median"
    if not category_known:
        out[CATEGORY] = "global median"
    for column, kept in levels["kept"].items():
        if row[column] not in kept and column not in out:
            out[column] = f"pooled level {OTHER}"
    return out
