"""Where the streaming query keeps its checkpoint; no pyspark here, so `sf311 status` reads it."""

from __future__ import annotations

from sf311.settings import Settings

QUERY_NAME = "sf311_cases"


def checkpoint_location(settings: Settings, query_name: str = QUERY_NAME) -> str:
    """Return the checkpoint folder of one streaming query."""
    return f"{settings.checkpoint_root.rstrip('/')}/{query_name}"
