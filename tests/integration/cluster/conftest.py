"""The Spark standalone cluster the tests of this folder submit to: one per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sf311.settings import Settings
from tests.support.spark_cluster import spark_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running master and two workers (1 core, 1 GB each) on loopback."""
    with spark_cluster(tmp_path_factory.mktemp("spark-cluster")) as settings:
        yield settings
