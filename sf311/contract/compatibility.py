"""Whether a new version of an Avro record schema may follow the previous one, field by field:
the rule the registry enforces on the case subject, checked here too to name the fields."""

from __future__ import annotations

import json
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from sf311.contract.schema import field_kind

# FULL = BACKWARD (a new reader reads old messages: replay from bronze) + FORWARD (the running
# stream's older reader reads new messages). BACKWARD alone would accept a removed field without
# default, which that running reader cannot decode.
LEVEL = "FULL"


def readable(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Return True when a reader of schema `reader` can read data written with `writer`."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=avro.schema.parse(json.dumps(reader)), writer=avro.schema.parse(json.dumps(writer))
    )
    return result.compatibility is SchemaCompatibilityType.compatible


def _alone(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    """Return a record of the schema's name holding only `field`."""
    return {k: v for k, v in schema.items() if k != "fields"} | {"fields": [field]}


def breaking_fields(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Return one phrase per field that keeps `new` from following `old` under FULL; [] if none."""
    old_fields = {f["name"]: f for f in old.get("fields", [])}
    new_fields = {f["name"]: f for f in new.get("fields", [])}
    found = []
    for name, field in new_fields.items():
        if name not in old_fields:
            if "default" not in field:
                found.append(f"field '{name}' added without a default")
            continue
        before = old_fields[name]
        was, now = _alone(old, before), _alone(old, field)
        if not (readable(now, was) and readable(was, now)):
            found.append(
                f"field '{name}' changed type from {field_kind(before['type'])} "
                f"to {field_kind(field['type'])}"
            )
    found += [
        f"field '{name}' removed though it has no default"
        for name, field in old_fields.items()
        if name not in new_fields and "default" not in field
    ]
    if not found and not (readable(new, old) and readable(old, new)):
        found.append("the record as a whole (its name, namespace or type)")
    return found
