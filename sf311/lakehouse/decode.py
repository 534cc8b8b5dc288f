"""Confluent-framed Avro -> the reader-shaped `case` struct, one column per Kafka message.

A Confluent frame is a magic byte 0, a 4-byte big-endian schema id, then the Avro body written
with that schema. Spark's `from_avro` knows nothing of the frame, so the frame is split here and
each body is decoded with the writer schema of its id, resolved to the reader schema (Avro
schema resolution), so records written by older and newer schema versions land in one shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import requests
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro

from sf311.ingest.records import latest_schema_path

MAGIC_BYTE = 0
HEADER_BYTES = 5

# Why a message could not become a `case` struct; silver quarantines it under this reason.
NOT_FRAMED = "not_confluent_framed"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
UNDECODABLE = "undecodable_avro"


class RegistryError(RuntimeError):
    """The schema registry could not answer; the batch must fail and be retried, not quarantined."""


class SchemaRegistry:
    """Writer schemas by id from a Confluent-compatible registry, cached for the process."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._cache: dict[int, str | None] = {}

    def writer_schema(self, schema_id: int) -> str | None:
        """Return the schema text registered under an id, or None when the id is unknown."""
        if schema_id not in self._cache:
            try:
                resp = requests.get(f"{self.url}/schemas/ids/{schema_id}", timeout=self.timeout)
            except requests.RequestException as err:
                raise RegistryError(f"schema registry at {self.url} unreachable: {err}") from err
            if resp.status_code == 404:
                # An id is never reused, so "unknown" is stable and safe to cache.
                self._cache[schema_id] = None
            elif resp.ok:
                self._cache[schema_id] = resp.json()["schema"]
            else:
                raise RegistryError(
                    f"schema registry answered {resp.status_code} for id {schema_id}: "
                    f"{resp.text[:200]}"
                )
        return self._cache[schema_id]

    def known(self) -> dict[int, str]:
        """Return {id: schema text} of the ids looked up so far that the registry knows."""
        # list() copies in one step: the job's two queries share this cache across threads.
        return {i: s for i, s in list(self._cache.items()) if s is not None}

    def writer_schemas(self, schema_ids: Iterable[int]) -> dict[int, str]:
        """Return {id: schema text} for the ids the registry knows; unknown ids are left out."""
        found = {i: self.writer_schema(i) for i in schema_ids}
        return {i: s for i, s in found.items() if s is not None}


def reader_schema(schemas_dir: Path, name: str = "case") -> str:
    """Return the compact JSON text of the newest contract version, the shape silver reads."""
    return json.dumps(json.loads(latest_schema_path(schemas_dir, name).read_text()))


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
    schema_id = F.conv(F.hex(F.substring(value, 2, 4)), 16, 10).cast("long")
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
        F.when(sid.isNull(), F.lit(NOT_FRAMED))
        .when(~known, F.lit(UNKNOWN_SCHEMA_ID))
        .when(F.col("_raw").isNull() | _all_null(F.col("_raw"), names), F.lit(UNDECODABLE))
    )
    return (
        decoded.withColumn("decode_error", error)
        .withColumn("case", F.when(F.col("decode_error").isNull(), F.col("_raw")))
        .drop("_raw")
    )
