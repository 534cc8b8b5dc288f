"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sf311.settings import Settings, load_settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sf311"


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """Undo a test's configure_logging: its handler holds that test's captured stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings from the environment, as the entry points build them."""
    return load_settings()


@pytest.fixture(scope="session")
def spark(settings: Settings) -> Iterator:
    """One local[2] SparkSession with Delta for the whole test session."""
    from sf311.spark import build_spark

    session = build_spark(
        settings.model_copy(update={"spark_master": "local[2]"}),
        app_name="sf311-tests",
        extra={"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real SF 311 samples in ../shared/data/sf311; skips where that folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real SF 311 samples not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA
