"""Source columns no schema names land in `extra` and are counted per column for the summary."""

from __future__ import annotations

import json

import fastavro
import pytest

from sf311.contract.schema import SCHEMAS_DIR, load_schema
from sf311.ingest.generate import CaseGenerator
from sf311.ingest.records import CaseEncoder, decode
from sf311.ingest.run import IngestCounts
from sf311.ingest.wire import BlockEncoder

V1 = load_schema(SCHEMAS_DIR / "case.v1.avsc")
V2 = load_schema(SCHEMAS_DIR / "case.v2.avsc")
BASE = {**CaseGenerator(seed=5).case(0, 1), "service_request_id": "1"}
ROWS = [
    {**BASE, "service_request_id": str(i), "bos_2032": str(i % 11)} if i % 3 else
    {**BASE, "service_request_id": str(i), "bos_2032": "", "data_as_of_v2": "x"}
    for i in range(1, 31)
]  # fmt: skip


@pytest.mark.parametrize("schema", [V2, V1], ids=["columnar", "reference"])
def test_each_path_counts_the_rows_holding_each_unknown_column(schema: dict) -> None:
    blocks = BlockEncoder(CaseEncoder(schema, 5), "file")
    (cases, dead) = blocks.rows(ROWS)
    lines = [json.dumps(r).encode() + b"\n" for r in ROWS]
    blocks.json_lines(lines, lambda i: json.loads(lines[i]))
    assert len(cases) == 30 and dead == []
    # bos_2032 is empty on every third row; data_as_of_v2 is on those rows only.
    region = next(k for k in BASE if k.startswith(":@computed_region"))
    assert blocks.unknown_columns == {"bos_2032": 2 * 20, "data_as_of_v2": 2 * 10, region: 2 * 30}
    assert (blocks.reference_rows == 0) == (schema is V2)
    record = decode(cases[1][1], {5: fastavro.parse_schema(schema)})
    assert json.loads(record["extra"]) == {"bos_2032": "2", region: BASE[region]}


def test_the_summary_names_unknown_columns_most_frequent_first() -> None:
    counts = IngestCounts(30, 30, 0, {"data_as_of_v2": 10, "bos_2032": 20})
    assert counts.summary() == (
        "read=30 produced=30 dead_lettered=0 unknown_columns=bos_2032:20,data_as_of_v2:10"
    )
    assert IngestCounts(1, 1, 0).summary() == "read=1 produced=1 dead_lettered=0"
