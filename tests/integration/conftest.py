"""Integration tests talk to the real services of `make up`; they fail fast when one is down."""

from __future__ import annotations

import pytest

from sf311.credentials import use_mlflow
from sf311.platform.services import all_services
from sf311.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def stack_is_up(settings: Settings) -> None:
    """Stop the whole integration run with one clear message when the stack is not healthy."""
    down = [s.name for s in all_services(settings) if not s.healthy()]
    if down:
        pytest.exit(f"services not healthy: {down}; run `make up` first", returncode=3)


@pytest.fixture(scope="session", autouse=True)
def _mlflow_login(settings: Settings) -> None:
    """Log the run's MLflow clients in as the stack's writer, as the jobs and the demo are."""
    use_mlflow(settings)
