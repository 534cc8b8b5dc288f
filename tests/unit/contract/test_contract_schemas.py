"""The Avro contracts in schemas/: documented, null defaults, each version FULL compatible
(BACKWARD and FORWARD) with the one before."""

from __future__ import annotations

import copy
import json
import re
from itertools import pairwise
from pathlib import Path

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from sf311.contract.compatibility import breaking_fields

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def versions(name: str) -> list[Path]:
    paths = SCHEMAS.glob(f"{name}.v*.avsc")
    return sorted(paths, key=lambda p: int(re.search(r"\.v(\d+)\.avsc$", p.name).group(1)))


def compatible(reader: dict, writer: dict) -> bool:
    """True when readers of `reader` can read data written with `writer` (Apache Avro's check)."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=avro.schema.parse(json.dumps(reader)), writer=avro.schema.parse(json.dumps(writer))
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


def test_there_are_versions_to_compare() -> None:
    # A lone version would leave the pairwise check below with nothing to check.
    assert len(versions("case")) >= 2, "schemas/ holds a single case version"


@pytest.mark.parametrize(
    ("old", "new"),
    [pair for name in ("case",) for pair in pairwise(versions(name))],
    ids=lambda p: p.name,
)
def test_each_version_is_fully_compatible_with_the_previous(old: Path, new: Path) -> None:
    before, after = json.loads(old.read_text()), json.loads(new.read_text())
    # BACKWARD: replay decodes old messages with the new reader; FORWARD: a running stream's
    # old reader decodes new messages.
    assert compatible(reader=after, writer=before)
    assert compatible(reader=before, writer=after)
    assert breaking_fields(after, before) == []


def _newest_with(change) -> tuple[dict, dict]:
    old = json.loads(versions("case")[-1].read_text())
    new = copy.deepcopy(old)
    change(new["fields"])
    return new, old


def test_the_checks_catch_a_field_added_without_default() -> None:
    with_default, old = _newest_with(
        lambda f: f.append({"name": "x", "type": ["null", "string"], "default": None, "doc": "x"})
    )
    without_default, _ = _newest_with(lambda f: f.append({"name": "x", "type": "string"}))
    assert compatible(with_default, old) and breaking_fields(with_default, old) == []
    assert not compatible(without_default, old)
    assert breaking_fields(without_default, old) == ["field 'x' added without a default"]


def test_the_checks_catch_a_removed_required_field_and_a_type_change() -> None:
    removed, old = _newest_with(lambda f: f.pop(0))
    assert not compatible(reader=old, writer=removed)
    assert breaking_fields(removed, old) == [
        "field 'service_request_id' removed though it has no default"
    ]

    def retype(fields: list) -> None:
        fields[1]["type"] = "string"

    retyped, _ = _newest_with(retype)
    assert not compatible(retyped, old)
    assert breaking_fields(retyped, old) == [
        "field 'requested_datetime' changed type from timestamp to string"
    ]
