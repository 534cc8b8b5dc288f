"""Confluent-framed Avro -> the reader-shaped `case` struct: each body is decoded with the writer
schema of its id and resolved to the reader schema, so every version lands in one shape."""

from __future__ import annotations

import json
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro

from sf311.contract.frame import HEADER_BYTES, MAGIC_BYTE

# Why a message could not become a `case` struct; silver quarantines it under this reason.
NOT_FRAMED = "not_confluent_framed"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
UNDECODABLE = "undecodable_avro"


def tombstone() -> Column:
    """Return True for a Kafka tombstone: a key and no value, the source's deletion of the case
    the key names (sent by `sf311 reconcile`); it decodes to no case and no error."""
    return F.col("value").isNull() & F.col("key").isNotNull()


def reader_field_names(reader_schema: str) -> list[str]:
    """Return the field names of a record schema, in order."""
    return [f["name"] for f in json.loads(reader_schema)["fields"]]


def frame(messages: DataFrame) -> DataFrame:
    """Return the Kafka rows with `schema_id` (null when unframed) and the Avro `payload`."""
    value = F.col("value")
    framed = (
        value.isNotNull()
        & (F.length(value) >= HEADER_BYTES)
        & (F.hex(F.substring(value, 1, 1)) == F.lit(f"{MAGIC_BYTE:02X}"))
    )
    schema_id = F.conv(F.hex(F.substring(value, 2, HEADER_BYTES - 1)), 16, 10).cast("long")
    return messages.withColumn("schema_id", F.when(framed, schema_id)).withColumn(
        "payload", F.when(framed, F.expr(f"substring(value, {HEADER_BYTES + 1})"))
    )


def _all_null(struct: Column, names: list[str]) -> Column:
    return F.coalesce(*[struct[n].isNotNull() for n in names], F.lit(False)) == F.lit(False)


def decode(framed: DataFrame, writer_schemas: Mapping[int, str], reader_schema: str) -> DataFrame:
    """Return framed rows with `case` (reader-shaped struct or null) and `decode_error`."""
    names = reader_field_names(reader_schema)
    options = {"avroSchema": reader_schema, "mode": "PERMISSIVE"}
    sid = F.col("schema_id")
    branches = [
        F.when(sid == F.lit(i), from_avro(F.col("payload"), writer, options))
        for i, writer in sorted(writer_schemas.items())
    ]
    if branches:
        raw = F.coalesce(*branches) if len(branches) > 1 else branches[0]
    else:
        reader_type = from_avro(F.col("payload"), reader_schema, options)
        raw = F.when(F.lit(False), reader_type)
    known = sid.isin(list(writer_schemas)) if writer_schemas else F.lit(False)
    decoded = framed.withColumn("_raw", raw)
    # PERMISSIVE from_avro turns a body it cannot read into a struct whose fields are all null.
    error = (
        F.when(tombstone(), F.lit(None).cast("string"))
        .when(sid.isNull(), F.lit(NOT_FRAMED))
        .when(~known, F.lit(UNKNOWN_SCHEMA_ID))
        .when(F.col("_raw").isNull() | _all_null(F.col("_raw"), names), F.lit(UNDECODABLE))
    )
    return (
        decoded.withColumn("decode_error", error)
        .withColumn("case", F.when(F.col("decode_error").isNull(), F.col("_raw")))
        .drop("_raw")
    )
