"""The lake's table creation: a table is created once, whatever a killed or concurrent writer
left behind."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyspark.sql.types import DateType, LongType, StructField, StructType

from sf311.lakehouse.tables import create_if_missing

SCHEMA = StructType([StructField("id", LongType()), StructField("ingest_date", DateType())])
PROPERTIES = {"delta.dataSkippingStatsColumns": "id"}


def _detail(spark, path: Path):
    return spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()


def test_a_log_folder_without_a_commit_is_created_over(spark, tmp_path: Path) -> None:
    # What a writer killed between the log folder's creation and its first commit leaves.
    path = tmp_path / "table"
    (path / "_delta_log" / "_staged_commits").mkdir(parents=True)
    (path / "_delta_log" / ".00000000000000000000.json.5f1c.tmp").write_text('{"commitInfo"')
    create_if_missing(spark, SCHEMA, str(path), PROPERTIES, ["ingest_date"])
    detail = _detail(spark, path)
    assert detail.partitionColumns == ["ingest_date"]
    assert detail.properties == PROPERTIES
    assert (path / "_delta_log" / "00000000000000000000.json").is_file()
    assert spark.read.format("delta").load(str(path)).schema.names == ["id", "ingest_date"]


def test_concurrent_creates_leave_one_table(spark, tmp_path: Path) -> None:
    path = tmp_path / "table"
    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(create_if_missing, spark, SCHEMA, str(path), PROPERTIES)
                     for _ in range(4)]:  # fmt: skip
            done.result()
    assert _detail(spark, path).properties == PROPERTIES
    assert spark.read.format("delta").load(str(path)).count() == 0
