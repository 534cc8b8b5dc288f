"""The case schema files: versions in numeric order, the newest read, layouts and column names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sf311.contract.schema import (
    CASE_FIELDS,
    SOURCE_NAMES,
    field_kind,
    latest_schema_path,
    layout,
    load_schema,
    reader_schema,
    schema_versions,
)

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def test_newest_schema_version_wins(tmp_path: Path) -> None:
    for version in (1, 2, 10):
        (tmp_path / f"case.v{version}.avsc").write_text("{}")
    assert latest_schema_path(tmp_path).name == "case.v10.avsc"
    assert [p.name for p in schema_versions(tmp_path)] == [
        "case.v1.avsc",
        "case.v2.avsc",
        "case.v10.avsc",
    ]


def test_no_version_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "other.v1.avsc").write_text("{}")
    with pytest.raises(FileNotFoundError, match="case.v"):
        latest_schema_path(tmp_path)


def test_reader_schema_is_the_newest_version_as_compact_json(tmp_path: Path) -> None:
    (tmp_path / "case.v1.avsc").write_text('{"type": "record", "name": "A", "fields": []}')
    (tmp_path / "case.v10.avsc").write_text('{"type": "record", "name": "B", "fields": []}')
    (tmp_path / "case.v2.avsc").write_text('{"type": "record", "name": "C", "fields": []}')
    assert json.loads(reader_schema(tmp_path)) == {"type": "record", "name": "B", "fields": []}


@pytest.mark.parametrize(
    ("avro_type", "kind"),
    [
        ("long", "long"),
        (["null", "string"], "?string"),
        ({"type": "long", "logicalType": "timestamp-millis"}, "timestamp"),
        (["null", {"type": "long", "logicalType": "timestamp-millis"}], "?timestamp"),
        ({"type": "int", "logicalType": "date"}, "int"),
        (["string", "null"], "['string', 'null']"),
    ],
)
def test_field_kinds(avro_type: object, kind: str) -> None:
    assert field_kind(avro_type) == kind


def test_case_fields_are_the_newest_schema_in_order() -> None:
    schema = load_schema(latest_schema_path(SCHEMAS))
    assert CASE_FIELDS == tuple(f["name"] for f in schema["fields"])
    assert layout(schema)[:2] == (
        ("service_request_id", "long"),
        ("requested_datetime", "timestamp"),
    )
    assert {"extra", "origin", "source_updated_at"} <= set(CASE_FIELDS)
    assert set(SOURCE_NAMES) <= set(CASE_FIELDS)
