"""The case schema files (schemas/case.vN.avsc) and the column lists derived from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
CASE = "case"


def schema_versions(schemas_dir: Path = SCHEMAS_DIR, name: str = CASE) -> list[Path]:
    """Return the versions of a schema, oldest first (case.v1.avsc, case.v2.avsc, ...)."""
    return sorted(
        Path(schemas_dir).glob(f"{name}.v*.avsc"), key=lambda p: int(p.stem.rsplit(".v", 1)[1])
    )


def latest_schema_path(schemas_dir: Path = SCHEMAS_DIR, name: str = CASE) -> Path:
    """Return the newest version of a schema, e.g. schemas/case.v3.avsc."""
    versions = schema_versions(schemas_dir, name)
    if not versions:
        raise FileNotFoundError(f"no {name}.v*.avsc in {schemas_dir}")
    return versions[-1]


def load_schema(path: Path) -> dict[str, Any]:
    """Return the Avro schema in an .avsc file as a dict."""
    return json.loads(Path(path).read_text())


def reader_schema(schemas_dir: Path = SCHEMAS_DIR, name: str = CASE) -> str:
    """Return the compact JSON text of the newest version, the shape every reader decodes to."""
    return json.dumps(load_schema(latest_schema_path(schemas_dir, name)))


def field_kind(avro_type: Any) -> str:
    """Return a field's Avro type as 'long', 'timestamp', '?string' ('?' = union with null)."""
    prefix = ""
    if isinstance(avro_type, list):
        if len(avro_type) != 2 or avro_type[0] != "null":
            return repr(avro_type)
        prefix, avro_type = "?", avro_type[1]
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis" and avro_type["type"] == "long":
            return prefix + "timestamp"
        avro_type = avro_type.get("type")
    return prefix + str(avro_type)


def layout(schema: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Return a record schema's (field name, field_kind) pairs, in order."""
    return tuple((f["name"], field_kind(f["type"])) for f in schema.get("fields", []))


# The newest case schema's fields, in order: the columns of silver and of Postgres `cases`.
CASE_LAYOUT = layout(load_schema(latest_schema_path()))
CASE_FIELDS: tuple[str, ...] = tuple(name for name, _ in CASE_LAYOUT)
# Source columns named otherwise than their field.
SOURCE_NAMES = {
    "neighborhood": "neighborhoods_sffind_boundaries",
    "source_updated_at": ":updated_at",
}
