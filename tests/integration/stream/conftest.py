"""Fixtures of the stream integration tests: each test gets its own topic, schema and lake."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from stream_support import StreamEnv, drop_env, make_env, with_search_path

from sf311.settings import Settings
from sf311.warehouse.migrate import load_migrations, migrate


@pytest.fixture
def stream_env(settings: Settings, tmp_path: Path) -> Iterator[StreamEnv]:
    """A StreamEnv on the shared stack, removed afterwards."""
    env, schema = make_env(
        settings,
        tmp_path,
        stream_max_offsets_per_trigger=1000,
        stream_lake_max_offsets_per_trigger=1000,
        stream_trigger="1 second",
        stream_lake_trigger="1 second",
    )
    yield env
    drop_env(settings, env, schema)


@pytest.fixture
def schema_dsn(settings: Settings) -> Iterator[str]:
    """A DSN scoped to a fresh, migrated schema of the warehouse, dropped afterwards."""
    schema = f"test_stream_wh_{uuid.uuid4().hex[:8]}"
    owner = settings.postgres_dsn.get_secret_value()
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO analyst")
    dsn = with_search_path(owner, schema)
    assert len(migrate(dsn)) == len(load_migrations())
    yield dsn
    with psycopg.connect(owner, autocommit=True) as conn:
        # Migration 0013 puts its gold tables in a schema beside it (as drop_env knows).
        conn.execute(f"DROP SCHEMA {schema}, {schema}_gold CASCADE")


@pytest.fixture
def analyst_dsn(settings: Settings, schema_dsn: str) -> str:
    """The analyst's DSN scoped to the schema of schema_dsn."""
    schema = schema_dsn.rsplit("search_path%3D", 1)[1]
    return with_search_path(settings.analyst_dsn.get_secret_value(), schema)
