"""The Avro contracts in schemas/: documented, null defaults, each version BACKWARD compatible."""

from __future__ import annotations

import copy
import json
import re
from itertools import pairwise
from pathlib import Path

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def versions(name: str) -> list[Path]:
    paths = SCHEMAS.glob(f"{name}.v*.avsc")
    return sorted(paths, key=lambda p: int(re.search(r"\.v(\d+)\.avsc$", p.name).group(1)))


def backward_compatible(new: dict, old: dict) -> bool:
    """True when readers of the new version can read data written with the old one."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=avro.schema.parse(json.dumps(new)), writer=avro.schema.parse(json.dumps(old))
    )
    return result.compatibility is SchemaCompatibilityType.compatible


ALL = [p for name in ("case",) for p in versions(name)]


def test_there_is_a_case_schema() -> None:
    assert versions("case")[0].name == "case.v1.avsc"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_field_is_documented_and_nullable_fields_default_to_null(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["namespace"] and schema["doc"]
    for field in schema["fields"]:
        assert field.get("doc"), f"{field['name']} has no doc"
        if isinstance(field["type"], list) and "null" in field["type"]:
            assert field["type"][0] == "null", f"{field['name']}: null must be the first branch"
            assert "default" in field and field["default"] is None, field["name"]


@pytest.mark.parametrize(
    ("old", "new"),
    [pair for name in ("case",) for pair in pairwise(versions(name))],
    ids=lambda p: p.name,
)
def test_each_version_is_backward_compatible_with_the_previous(old: Path, new: Path) -> None:
    assert backward_compatible(json.loads(new.read_text()), json.loads(old.read_text()))


def test_the_checker_catches_a_field_added_without_default() -> None:
    old = json.loads(versions("case")[-1].read_text())
    with_default, without_default = copy.deepcopy(old), copy.deepcopy(old)
    with_default["fields"].append(
        {"name": "x", "type": ["null", "string"], "default": None, "doc": "x"}
    )
    without_default["fields"].append({"name": "x", "type": "string", "doc": "x"})
    assert backward_compatible(with_default, old)
    assert not backward_compatible(without_default, old)
