"""Fixtures of the fault tests: one private stack for the folder, a fresh topic, schema and lake
per test on it, and a Spark UI the tests watch to kill the job inside a chosen phase."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sf311.settings import Settings
from tests.integration.stream.stream_support import StreamEnv, drop_env, make_env
from tests.support.private_stack import free_ports, private_stack


@pytest.fixture(scope="package")
def fault_stack(settings: Settings) -> Iterator[Settings]:
    """Return the settings of a private Postgres, Kafka and registry, stopped after the folder."""
    # Not pytest's tmp_path: its root is private to root, and Postgres runs as `postgres`.
    state = Path(tempfile.mkdtemp(prefix="sf311-faults-"))
    state.chmod(0o755)
    try:
        with private_stack(settings, state) as private:
            yield private
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def fault_env(fault_stack: Settings, tmp_path: Path) -> Iterator[StreamEnv]:
    """Return a fresh topic, warehouse schema and lake on the private stack; small batches."""
    ui_port = free_ports(1)[0]
    conf = tmp_path / "conf"
    conf.mkdir()
    defaults = (fault_stack.conf_dir / "spark-defaults.conf").read_text()
    (conf / "spark-defaults.conf").write_text(
        f"{defaults}\nspark.ui.enabled true\nspark.ui.port {ui_port}\n"
    )
    env, schema = make_env(
        fault_stack,
        tmp_path,
        kafka_bootstrap_servers=fault_stack.kafka_bootstrap_servers,
        schema_registry_url=fault_stack.schema_registry_url,
        state_dir=str(fault_stack.state_dir),
        stream_trigger="1 second",
        stream_lake_trigger="1 second",
        stream_max_offsets_per_trigger=300,
        stream_lake_max_offsets_per_trigger=1000,
        stream_pg_retry_seconds=600,
        stream_kafka_retry_seconds=300,
        stream_registry_retry_seconds=300,
    )
    # Only the job under test reads the copied conf, with its UI on loopback.
    env.env.update({"SF311_CONF_DIR": str(conf), "SPARK_LOCAL_IP": "127.0.0.1",
                    "SF311_FAULT_UI_PORT": str(ui_port)})  # fmt: skip
    yield env
    drop_env(fault_stack, env, schema)
