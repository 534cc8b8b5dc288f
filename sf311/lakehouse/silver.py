"""silver.cases (one row per case, newest version wins) and silver.cases_quarantine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType, TimestampType

from sf311.contract import quality
from sf311.contract.city import SF_LAT, SF_LONG
from sf311.contract.schema import CASE_FIELDS
from sf311.lakehouse.decode import tombstone
from sf311.lakehouse.tables import append_once, create_if_missing, stats_columns

TABLE = "silver.cases"
QUARANTINE_TABLE = "silver.cases_quarantine"

# Why a message cannot be a case; anything else is a case, flagged (quality.FLAGS) if need be.
MISSING_ID = "missing_id"
BAD_REQUESTED = "bad_requested_datetime"
# A tombstone is no case either: it marks the case its key names deleted, never quarantined.
DELETION = "deletion"

KAFKA_COLUMNS = ["kafka_partition", "kafka_offset", "kafka_timestamp", "schema_id"]
LINEAGE_COLUMNS = ["batch_id", "ingested_at"]

QUARANTINE_COLUMNS = [
    "reason",
    "service_request_id",
    "schema_id",
    "key",
    "value",
    "topic",
    "partition",
    "offset",
    "kafka_timestamp",
    "batch_id",
    "ingested_at",
    "ingest_date",
]


# MERGE skips files by id; readers filter by time.
PROPERTIES = {
    **stats_columns(
        "service_request_id", "requested_datetime", "updated_datetime", "closed_date",
        "kafka_timestamp", "batch_id",
    ),
    # Updates then mark replaced rows in a deletion vector instead of rewriting files.
    "delta.enableDeletionVectors": "true",
    # The gold sink reads which cases each batch changed (sf311/lakehouse/gold_tables.py).
    "delta.enableChangeDataFeed": "true",
}  # fmt: skip
QUARANTINE_PROPERTIES = stats_columns(
    "reason", "service_request_id", "schema_id", "partition", "offset", "kafka_timestamp",
    "batch_id",
)  # fmt: skip


@dataclass(frozen=True)
class Rules:
    """Validation thresholds: the earliest plausible instant and how far ahead of as_of."""

    earliest: datetime = datetime(2000, 1, 1)
    max_ahead: timedelta = timedelta(days=1)


def _bad_instant(col: Column, earliest: datetime, latest: datetime) -> Column:
    return (col < F.lit(earliest)) | (col > F.lit(latest))


def _between(col: Column, bounds: tuple[float, float]) -> Column:
    return col.between(F.lit(bounds[0]), F.lit(bounds[1]))


def flags(case: Column, earliest: datetime, latest: datetime) -> Column:
    """Return the quality_flags array of a decoded case struct, in quality.FLAGS order."""
    requested, closed = case["requested_datetime"], case["closed_date"]
    lat, lon = case["lat"], case["long"]
    closed_bad = closed.isNotNull() & _bad_instant(closed, earliest, latest)
    absent = lat.isNull() | lon.isNull() | (lat == 0) | (lon == 0)
    # Coordinates the ingest already nulled for lying outside the city keep that finding.
    outside = (case["location_issue"] == F.lit(quality.OUT_OF_BOUNDS_ISSUE)) | (
        ~absent & ~(_between(lat, SF_LAT) & _between(lon, SF_LONG))
    )
    name = case["service_name"]
    conditions = {
        quality.CLOSED_BEFORE_OPENED: ~closed_bad & (closed < requested),
        quality.CLOSED_DATE_INVALID: closed_bad,
        quality.UPDATED_DATETIME_INVALID: _bad_instant(case["updated_datetime"], earliest, latest),
        quality.LOCATION_OUTSIDE_SF: F.coalesce(outside, F.lit(False)),
        quality.LOCATION_MISSING: absent & ~F.coalesce(outside, F.lit(False)),
        quality.CATEGORY_UNKNOWN: name.isNull() | (F.trim(name) == ""),
    }
    # A concat of one-element or empty arrays, not array_compact: that is a lambda function,
    # which Spark evaluates without generated code (11 % of Spark's samples in a profile of an
    # 8M backfill).
    none = F.array().cast("array<string>")
    found = F.concat(
        *[F.when(conditions[f], F.array(F.lit(f))).otherwise(none) for f in quality.FLAGS]
    )
    return found.cast("array<string>")


# validate()'s column of lower-cased status_notes, dropped before it returns.
LOWERED_NOTES = "_status_notes_lowered"


def validate(bronze: DataFrame, as_of: datetime, rules: Rules = Rules()) -> DataFrame:
    """Return bronze rows with `reason` (null for a case, else why it cannot be one), and the
    `quality_flags` and `closure_kind` of each case."""
    case = F.col("case")
    latest = as_of + rules.max_ahead
    requested = case["requested_datetime"]
    reason = (
        F.when(F.col("decode_error").isNotNull(), F.col("decode_error"))
        .when(tombstone() & (key_id() > 0), F.lit(DELETION))
        .when(tombstone(), F.lit(MISSING_ID))
        .when(case["service_request_id"].isNull(), F.lit(MISSING_ID))
        .when(case["service_request_id"] <= 0, F.lit(MISSING_ID))
        .when(requested.isNull(), F.lit(BAD_REQUESTED))
        .when(_bad_instant(requested, rules.earliest, latest), F.lit(BAD_REQUESTED))
    )
    notes, closed = case["status_notes"], case["closed_date"].isNotNull()
    # Computed here, before the batch is cached, so both of its readers share them; the notes
    # lower-cased once, in a column of their own, which closure_kind reads for every keyword.
    return (
        bronze.withColumn(LOWERED_NOTES, F.lower(notes))
        .withColumns(
            {
                "reason": reason,
                "quality_flags": F.when(reason.isNull(), flags(case, rules.earliest, latest)),
                "closure_kind": F.when(
                    reason.isNull(), closure_kind(notes, closed, F.col(LOWERED_NOTES))
                ),
            }
        )
        .drop(LOWERED_NOTES)
    )


def closure_kind(notes: Column, closed: Column, lowered: Column | None = None) -> Column:
    """Return the closure kind of status_notes by quality.CLOSURE_RULE, as closure_kind() does.

    lowered, the notes lower-cased in a column of their own, spares lower-casing them once per
    keyword: Spark evaluates each condition of the chain anew."""
    lower = F.lower(notes) if lowered is None else lowered
    kind = F.when(~closed | notes.isNull(), F.lit(quality.UNKNOWN))
    for name, pattern in quality.CLOSURE_RULE:
        mentioned = F.lit(False)
        for word in quality.CLOSURE_KEYWORDS[name]:
            mentioned |= lower.contains(word)
        kind = kind.when(mentioned & notes.rlike(pattern), F.lit(name))
    return kind.otherwise(F.lit(quality.UNKNOWN))


def rejected() -> Column:
    """Return True for a validated row the quarantine takes: a reason, and not a deletion."""
    return F.col("reason").isNotNull() & (F.col("reason") != F.lit(DELETION))


def quarantine_rows(validated: DataFrame) -> DataFrame:
    """Return the rejected rows in the silver.cases_quarantine shape, raw bytes kept."""
    return (
        validated.where(rejected())
        .withColumn("service_request_id", F.col("case.service_request_id"))
        .select(*QUARANTINE_COLUMNS)
    )


def flatten(validated: DataFrame) -> DataFrame:
    """Return every validated row flattened to the silver shape plus `reason`: flagged values
    nulled, the version instant completed and resolution_hours derived (null fields for
    rejected rows; a tombstone's only field is the service_request_id of its key)."""
    flat = validated.select(
        "case.*",
        F.when(F.col("reason") == F.lit(DELETION), key_id()).alias("_deleted_id"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        "kafka_timestamp",
        "schema_id",
        *LINEAGE_COLUMNS,
        "reason",
        "quality_flags",
        "closure_kind",
    )
    flagged = F.col("quality_flags")

    def unless(voiding: tuple[str, ...], name: str) -> Column:
        voided = F.lit(False)
        for flag in voiding:
            voided |= F.array_contains(flagged, F.lit(flag))
        return F.when(~voided, F.col(name))

    # The impossible value is nulled; its raw value stays in bronze.
    flat = flat.withColumns(
        {
            "service_request_id": F.coalesce("service_request_id", "_deleted_id"),
            "closed_date": unless((quality.CLOSED_DATE_INVALID,), "closed_date"),
            "updated_datetime": unless((quality.UPDATED_DATETIME_INVALID,), "updated_datetime"),
            "lat": unless(quality.LOCATION_FLAGS, "lat"),
            "long": unless(quality.LOCATION_FLAGS, "long"),
        }
    ).drop("_deleted_id")
    # Never updated: last changed when closed, else when opened; keeps newest-wins guards total.
    flat = flat.withColumn(
        "updated_datetime",
        F.coalesce("updated_datetime", "closed_date", "requested_datetime"),
    )
    seconds = F.col("closed_date").cast("double") - F.col("requested_datetime").cast("double")
    return flat.withColumn(
        "resolution_hours",
        F.when(
            F.col("closed_date").isNotNull()
            & ~F.array_contains(flagged, F.lit(quality.CLOSED_BEFORE_OPENED)),
            seconds / 3600.0,
        ),
    )


def curated_rows(validated: DataFrame, superseded: pa.Table | None = None) -> DataFrame:
    """Return valid cases flattened, with resolution_hours, one row per id (newest wins), not
    deleted (deleted_at null: a version is the source holding the case).

    superseded, the (kafka_partition, kafka_offset) of the versions that lose (found by the
    driver in a batch it collected anyway), spares the window's shuffle of whole rows: 6 of a
    2M-case append's 18 s."""
    valid = flatten(validated).where(F.col("reason").isNull()).drop("reason")
    if superseded is not None:
        newest_rows = valid
        if superseded.num_rows:
            losers = F.broadcast(validated.sparkSession.createDataFrame(superseded))
            newest_rows = valid.join(losers, ["kafka_partition", "kafka_offset"], "left_anti")
    else:
        # Same id -> same Kafka partition (key = id), so the offset breaks ties in arrival order.
        newest = Window.partitionBy("service_request_id").orderBy(
            F.col("updated_datetime").desc(), F.col("kafka_offset").desc()
        )
        ranked = valid.withColumn("_n", F.row_number().over(newest))
        newest_rows = ranked.where("_n = 1").drop("_n")
    fields = [c for c in CASE_FIELDS if c in newest_rows.columns]
    return newest_rows.withColumns(
        {"case_hash": case_hash(fields), "deleted_at": F.lit(None).cast("timestamp")}
    )


# Fields per presence mask: a long's bits.
MASK_BITS = 62


def case_hash(fields: Sequence[str]) -> Column:
    """Return a 64-bit hash of a flattened row's case fields, those of CASE_FIELDS it has: silver
    stores it so that its MERGE tells a changed version from a redelivered one by one narrow
    column instead of reading every field of the table."""
    # xxhash64 skips nulls; the masks of present fields tell (x, null) from (null, x), and a
    # field added to the schema, null (or absent) in old versions, changes neither masks nor hash.
    masks = []
    for k in range(0, len(CASE_FIELDS), MASK_BITS):
        chunk = enumerate(CASE_FIELDS[k : k + MASK_BITS])
        bits = [F.when(F.col(c).isNotNull(), 1 << i).otherwise(0) for i, c in chunk if c in fields]
        masks.append(sum(bits, F.lit(0)).cast("long"))
    return F.xxhash64(*masks, *[F.col(c) for c in CASE_FIELDS if c in fields])


def key_id() -> Column:
    """Return the service_request_id a Kafka key names (the id's decimal digits), else null."""
    return F.col("key").cast("string").try_cast("long")


def deletions(validated: DataFrame) -> DataFrame:
    """Return (service_request_id, deleted_at) of the cases validated rows' tombstones delete:
    per id its newest tombstone's Kafka time, unless a version of the case arrived after it."""
    marks = (
        validated.where(F.col("reason") == F.lit(DELETION))
        .groupBy(key_id().alias("service_request_id"))
        .agg(F.max("kafka_timestamp").alias("deleted_at"))
    )
    seen = (
        validated.where(F.col("reason").isNull())
        .groupBy(F.col("case.service_request_id").alias("service_request_id"))
        .agg(F.max("kafka_timestamp").alias("_seen"))
    )
    return (
        marks.join(seen, "service_request_id", "left")
        .where(F.col("_seen").isNull() | (F.col("_seen") < F.col("deleted_at")))
        .drop("_seen")
    )


def with_deletions(curated: DataFrame, deleted: DataFrame) -> DataFrame:
    """Return curated rows with deleted_at set where a tombstone (deletions) came after their
    version, as mark_deleted leaves them: how a replay rebuilds silver's marks."""
    marks = deleted.withColumnRenamed("deleted_at", "_deleted_at")
    return (
        curated.join(marks, "service_request_id", "left")
        .withColumn(
            "deleted_at",
            F.when(F.col("_deleted_at") > F.col("kafka_timestamp"), F.col("_deleted_at")),
        )
        .select(*curated.columns)
    )


def live(cases: DataFrame) -> DataFrame:
    """Return the cases of silver.cases the source still holds (a table written before
    deleted_at existed holds no deletion)."""
    return cases.where(F.col("deleted_at").isNull()) if "deleted_at" in cases.columns else cases


def newest_id(spark: SparkSession, path: str) -> int | None:
    """Return the highest service_request_id in silver.cases, or None when it holds none."""
    return spark.read.format("delta").load(path).agg(F.max("service_request_id")).first()[0]


# A version replaces the stored one if it is newer or, at the same updated_datetime, arrived later
# and differs (the source changed it silently: case_hash), or if it arrived after the stored
# case's deletion and is no older (the source holds the case again: reconcile re-extracted it).
# A row stored before case_hash existed has none: its same-instant redelivery rewrites it alike.
NEWER = (
    "s.updated_datetime > t.updated_datetime OR (s.updated_datetime = t.updated_datetime"
    " AND s.kafka_timestamp > t.kafka_timestamp AND NOT (s.case_hash <=> t.case_hash))"
    " OR (t.deleted_at IS NOT NULL AND s.kafka_timestamp > t.deleted_at"
    " AND s.updated_datetime >= t.updated_datetime)"
)
# The column mark_deleted sets, added to a table written before it existed.
DELETED_AT = StructType([StructField("deleted_at", TimestampType())])


def add_new_columns(spark: SparkSession, path: str, schema: StructType) -> None:
    """Add to the Delta table at path the top-level columns of schema it lacks, by ALTER TABLE
    (nullable, at the end)."""
    # NEWER names every case field on the table's side, which must exist before the MERGE: a
    # MERGE's schema evolution adds columns for its assignments only, not for its conditions.
    present = set(spark.read.format("delta").load(path).columns)
    missing = [f for f in schema.fields if f.name not in present]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")


def _updates(columns: list[str]) -> dict[str, str]:
    # A version replaces every column; a deletion stays unless the version arrived after it.
    sets = {c: f"s.`{c}`" for c in columns if c != "deleted_at"}
    sets["deleted_at"] = (
        "CASE WHEN s.kafka_timestamp > t.deleted_at THEN NULL ELSE t.deleted_at END"
    )
    return sets


def _merge(table: DeltaTable, rows: DataFrame, id_range: tuple[int, int]) -> None:
    # The id range lets Delta skip files by their min/max statistics.
    condition = (
        "t.service_request_id = s.service_request_id"
        f" AND t.service_request_id BETWEEN {int(id_range[0])} AND {int(id_range[1])}"
    )
    # Only matched rows: an inner join, which broadcasts the batch's rows at every step and reads
    # the narrow columns NEWER names, where an insert clause made Delta shuffle whole files.
    (
        table.alias("t")
        .merge(F.broadcast(rows).alias("s"), condition)
        .withSchemaEvolution()
        .whenMatchedUpdate(condition=NEWER, set=_updates(rows.columns))
        .execute()
    )


def stored_ids(spark: SparkSession, path: str, rows: DataFrame, top: int) -> tuple[pa.Table, int]:
    """Return the service_request_ids of rows at or below top that silver.cases at path holds,
    found by a scan of its id column alone, and how many of rows' ids are at or below top."""
    key = "service_request_id"
    candidates = rows.where(F.col(key) <= F.lit(top)).select(key).toArrow()
    if candidates.num_rows == 0:
        return candidates, 0
    low, high = pc.min_max(candidates[key]).values()
    stored = spark.read.format("delta").load(path).select(key)
    # The id range lets Delta skip files by their min/max statistics.
    stored = stored.where(F.col(key).between(F.lit(low.as_py()), F.lit(high.as_py())))
    held = stored.join(F.broadcast(spark.createDataFrame(candidates)), key).toArrow()
    return held, candidates.num_rows


def merge_silver(
    spark: SparkSession,
    rows: DataFrame,
    path: str,
    app_id: str,
    batch_id: int,
    id_range: tuple[int, int] | None = None,
    validated: DataFrame | None = None,
) -> str:
    """Upsert curated rows into silver.cases where the source is newer; return the action:
    append, merge, append+merge or empty.

    Cases silver lacks are appended, which costs a fraction of a MERGE; only the cases it holds
    are merged (those above its highest id need no lookup). The append is idempotent through
    txnAppId/txnVersion and the MERGE through its newer-wins guard; a batch replayed after its
    append committed finds its new cases stored, so it merges them all.
    id_range, the (min, max) service_request_id of rows, spares a Spark job when known;
    validated, the batch rows were curated from, lets the MERGE curate only the cases it merges:
    curated_rows' window over the whole batch again took 7 of a 2M-case batch's 23 s of MERGE."""
    if not DeltaTable.isDeltaTable(spark, path):
        create_if_missing(spark, rows.schema, path, PROPERTIES)
        append_once(rows, path, app_id, batch_id, merge_schema=True)
        return "append"
    if id_range is None:
        bounds = rows.agg(F.min("service_request_id"), F.max("service_request_id")).first()
        id_range = (bounds[0], bounds[1])
    if id_range[0] is None:
        return "empty"
    top = newest_id(spark, path)
    if top is None or id_range[0] > top:
        append_once(rows, path, app_id, batch_id, merge_schema=True)
        return "append"
    add_new_columns(spark, path, rows.schema)
    stored, candidates = stored_ids(spark, path, rows, top)
    if stored.num_rows == 0:
        append_once(rows, path, app_id, batch_id, merge_schema=True)
        return "append"
    held = F.broadcast(spark.createDataFrame(stored))
    actions = []
    if id_range[1] > top or stored.num_rows < candidates:
        fresh = rows.join(held, "service_request_id", "left_anti")
        append_once(fresh, path, app_id, batch_id, merge_schema=True)
        actions.append("append")
    if validated is None:
        merged = rows.join(held, "service_request_id", "left_semi")
    else:
        ids = F.col("case.service_request_id") == held["service_request_id"]
        merged = curated_rows(validated.join(held, ids, "left_semi"))
    low, high = pc.min_max(stored["service_request_id"]).values()
    table = DeltaTable.forPath(spark, path)
    _merge(table, merged, (low.as_py(), high.as_py()))
    return "+".join([*actions, "merge"])


def mark_deleted(spark: SparkSession, path: str, deleted: DataFrame) -> None:
    """Set deleted_at of the cases of silver.cases at path that deletions (deleted) name and
    whose stored version arrived before the tombstone; a case already marked keeps its first
    mark, and a tombstone of a case silver lacks changes nothing, so a redone batch is harmless."""
    add_new_columns(spark, path, DELETED_AT)
    low, high = deleted.agg(F.min("service_request_id"), F.max("service_request_id")).first()
    if low is None:
        return
    # The id range lets Delta skip files by their min/max statistics.
    condition = (
        "t.service_request_id = s.service_request_id"
        f" AND t.service_request_id BETWEEN {int(low)} AND {int(high)}"
    )
    (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(F.broadcast(deleted).alias("s"), condition)
        .whenMatchedUpdate(
            condition="t.deleted_at IS NULL AND s.deleted_at > t.kafka_timestamp",
            set={"deleted_at": "s.deleted_at"},
        )
        .execute()
    )  # fmt: skip


def append_quarantine(rows: DataFrame, path: str, app_id: str, batch_id: int) -> None:
    """Append one batch's rejected rows; Delta skips it when (app_id, batch_id) committed."""
    create_if_missing(rows.sparkSession, rows.schema, path, QUARANTINE_PROPERTIES, ["ingest_date"])
    append_once(rows, path, app_id, batch_id, ["ingest_date"])


def overwrite_silver(spark: SparkSession, rows: DataFrame, path: str) -> None:
    """Replace silver.cases with rows in one atomic commit, creating the table if missing."""
    create_if_missing(spark, rows.schema, path, PROPERTIES)
    # A table written before a column was added (quality_flags, closure_kind) gains it here.
    rows.write.format("delta").mode("overwrite").option("mergeSchema", "true").save(path)


def overwrite_quarantine(rows: DataFrame, path: str) -> None:
    """Replace silver.cases_quarantine with rows in one atomic commit."""
    create_if_missing(rows.sparkSession, rows.schema, path, QUARANTINE_PROPERTIES, ["ingest_date"])
    rows.write.format("delta").mode("overwrite").partitionBy("ingest_date").save(path)
