"""The demo's applications on top of the stack (SODA source, streaming job, prediction API,
dashboard), managed processes like the services: `sf311 status` shows them, `down` stops them."""

from __future__ import annotations

from pathlib import Path

from sf311.credentials import MLFLOW_READER
from sf311.platform.process import Launch, process_table
from sf311.platform.services import Endpoint, Service, http_ok, url_endpoint
from sf311.settings import PROJECT_ROOT, Settings
from sf311.submit import spark_submit_command, spark_submit_env


class App(Service):
    """A process of the application layer: started by name or by the demo, never by `up`."""

    optional = True


SF311 = PROJECT_ROOT / ".venv" / "bin" / "sf311"


class SodaSource(App):
    """A SODA-compatible server on loopback serving the demo's generated cases file."""

    name = "soda"
    health_timeout = 180.0  # it indexes the whole file before it listens

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.path = demo_file(settings)
        self.http = Endpoint("127.0.0.1", settings.demo_soda_port)

    def endpoints(self) -> list[Endpoint]:
        return [self.http]

    def launches(self) -> list[Launch]:
        return [
            Launch(
                self.name,
                [str(SF311), "soda-server", str(self.path), "--port", str(self.http.port)],
                env=self.settings.as_env(),
            )
        ]

    def healthy(self) -> bool:
        return http_ok(f"http://{self.http}/resource/{self.settings.socrata_dataset}.json?$limit=1")


class StreamJob(App):
    """The streaming job, submitted with spark-submit, triggered every `stream_trigger`."""

    name = "stream"
    health_timeout = 120.0

    def launches(self) -> list[Launch]:
        return [
            Launch(
                self.name,
                spark_submit_command(self.settings, "stream"),
                env={**spark_submit_env(self.settings), **self.settings.as_env()},
                cwd=self.state,
            )
        ]

    def healthy(self) -> bool:
        # A live driver is the health a supervisor can see; `sf311 status` adds lag and freshness.
        return process_table(self.settings).get(self.name) is not None

    def describe(self) -> str:
        return f"spark-submit jobs/stream.py on {self.settings.spark_master}"


class Api(App):
    """The prediction API (`sf311 serve`)."""

    name = "api"
    health_timeout = 120.0

    def endpoints(self) -> list[Endpoint]:
        return [url_endpoint(self.settings.api_url, self.settings.api_port)]

    def launches(self) -> list[Launch]:
        # It only reads the registry: MLflow's read-only user, with the password the stack
        # generated for it.
        env = {**self.settings.as_env(), "SF311_MLFLOW_USERNAME": MLFLOW_READER}
        env.pop("SF311_MLFLOW_PASSWORD", None)
        return [Launch(self.name, [str(SF311), "serve"], env=env)]

    def healthy(self) -> bool:
        return http_ok(f"{self.settings.api_url.rstrip('/')}/health")


class Dashboard(App):
    """The Streamlit dashboard (`sf311 dashboard`)."""

    name = "dashboard"
    health_timeout = 120.0

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("127.0.0.1", self.settings.dashboard_port)]

    def launches(self) -> list[Launch]:
        return [Launch(self.name, [str(SF311), "dashboard"], env=self.settings.as_env())]

    def healthy(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.settings.dashboard_port}/_stcore/health")


def demo_file(settings: Settings) -> Path:
    """Return the generated cases file the demo's SODA source serves."""
    return settings.state_dir / "demo" / f"cases_{settings.demo_rows}.jsonl"


def app_services(settings: Settings) -> list[Service]:
    """Return the application processes in start order (`up` starts them only by name)."""
    return [cls(settings) for cls in (SodaSource, StreamJob, Api, Dashboard)]
