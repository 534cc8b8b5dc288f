"""One typed settings object for every address, path and credential (env prefix SF311_)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sf311.contract.schema import SCHEMAS_DIR

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPARK_MASTER = re.compile(r"local(\[(\d+|\*)(,\d+)?\])?|spark://\S+|yarn|k8s://\S+")
# What Spark's trigger(processingTime=...) takes: "[interval] N unit [N unit ...]", a fraction
# only of seconds, no months or years (Spark refuses them for triggers).
_INTERVAL_PART = (
    r"\+?(\d+\s+(weeks?|days?|hours?|minutes?|milliseconds?|microseconds?)|\d+(\.\d+)?\s+seconds?)"
)
PROCESSING_TIME = re.compile(
    rf"\s*(interval\s+)?{_INTERVAL_PART}(\s+{_INTERVAL_PART})*\s*", re.IGNORECASE
)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def is_available_now(trigger: str) -> bool:
    """Return whether a trigger setting asks for trigger(availableNow=True), in any spelling."""
    return trigger.replace("_", "").replace(" ", "").lower() == "availablenow"


class Settings(BaseSettings):
    """Resolved configuration; built once at an entry point and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="SF311_", env_file=".env", extra="ignore", frozen=True
    )

    # Where the local stack keeps data, logs, pids and downloaded jars.
    state_dir: Path = PROJECT_ROOT / "var"
    conf_dir: Path = PROJECT_ROOT / "conf"
    # Every sf311 process logs to stderr: "json" lines for collectors, "logfmt" for people.
    log_format: Literal["json", "logfmt"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Spark: local[2] here, spark://host:7077, yarn or k8s://... on a cluster.
    spark_master: str = "local[2]"
    spark_jars_dir: Path | None = None
    lake_path: str | None = None
    checkpoint_path: str | None = None
    # A short trigger keeps freshness (Kafka -> Postgres) within seconds at a steady rate.
    stream_trigger: str = "1 second"
    # The lake query (bronze, silver) pays a fixed cost per batch: fewer, larger batches leave
    # the cores to the warehouse query. availableNow in stream_trigger makes a bounded run: the
    # lake query alone, loading Postgres too, in batches of stream_lake_max_offsets_per_trigger.
    stream_lake_trigger: str = "30 seconds"
    # Streaming job: "availableNow" as stream_trigger (or `sf311 stream --once`) runs to the end.
    stream_max_offsets_per_trigger: int = Field(200_000, ge=1)
    # A lake batch's fixed cost (Delta commits, MERGE planning) calls for large batches, and
    # silver's MERGE reads all of silver in each (8M backfill: 1M batches 732 s, 2M 656 s); the
    # warehouse query collects its batches to the driver, hence its smaller limit.
    stream_lake_max_offsets_per_trigger: int = Field(2_000_000, ge=1)
    stream_starting_offsets: str = "earliest"
    # How long the streaming job waits for each of Postgres, Kafka and the schema registry
    # when it cannot reach it, at start or during a batch, before it fails with a one-line error.
    stream_pg_retry_seconds: float = Field(600.0, ge=0)
    stream_kafka_retry_seconds: float = Field(60.0, ge=0)
    stream_registry_retry_seconds: float = Field(60.0, ge=0)
    # `sf311 status` exits 4 when a query of the stream is further behind the topic than this.
    status_max_lag: int = Field(100_000, ge=0)
    # The lake query compacts its tables every this many micro-batches (0: never).
    stream_compact_every: int = Field(50, ge=0)
    # While the job streams, gold is refreshed beside the lake query's batches at most this
    # often: each refresh recomputes the backlog back to the oldest day a change touches.
    stream_gold_seconds: float = Field(60.0, ge=0)
    spark_submit: Path = PROJECT_ROOT / ".venv" / "bin" / "spark-submit"
    # Python of Spark's Python workers, on the driver and on every executor; unset: the Python
    # beside spark_submit for spark-submit jobs, the driver's own in-process. On a cluster each
    # node needs the project installed at this path.
    spark_python: Path | None = None
    # `make cluster-up`: a standalone master and workers on 127.0.0.1 from pyspark's own jars;
    # jobs use it with SF311_SPARK_MASTER=spark://127.0.0.1:<spark_cluster_port>.
    spark_cluster_port: int = Field(7077, ge=1, le=65535)
    spark_cluster_ui_port: int = Field(8090, ge=1, le=65535)
    spark_cluster_workers: int = Field(2, ge=1)
    spark_worker_cores: int = Field(1, ge=1)
    # At least spark.executor.memory (1g by default): a worker runs one executor per job.
    spark_worker_memory: str = Field("1g", pattern=r"^\d+[mg]$")
    # An S3-compatible object store for s3a:// lake and checkpoint paths (unset: AWS itself).
    # Its keys come only from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # Path-style URLs (http://host/bucket/key): what MinIO, moto and most on-premise stores want.
    s3_path_style_access: bool = False

    # Kafka and the Confluent-compatible schema registry.
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_topic: str = "sf311.cases"
    kafka_dlq_topic: str = "sf311.cases.dlq"
    kafka_partitions: int = Field(2, ge=1)
    schema_registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    schemas_dir: Path = SCHEMAS_DIR
    registry_management_port: int = Field(9001, ge=1, le=65535)
    registry_java_home: Path | None = None

    # How long a command waits for Kafka, the schema registry or Postgres to answer before it
    # stops with a one-line error (libpq counts whole seconds, at least 2).
    connect_timeout_seconds: int = Field(15, ge=2, le=600)

    # PostgreSQL: the warehouse owner, the read-only analyst, the local superuser.
    postgres_dsn: SecretStr = SecretStr("postgresql://sf311:sf311@127.0.0.1:5432/sf311")
    analyst_dsn: SecretStr = SecretStr("postgresql://analyst:analyst@127.0.0.1:5432/sf311")
    postgres_bin_dir: Path = Path("/usr/lib/postgresql/15/bin")

    # MLflow tracking server (backend store in Postgres, artifacts under state_dir).
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    mlflow_backend_dsn: SecretStr = SecretStr("postgresql://sf311:sf311@127.0.0.1:5432/mlflow")
    # This process's MLflow login (basic auth). The stack's `sf311` user, its admin, alone
    # registers models and moves the champion alias; the API logs in as the read-only
    # sf311-reader. Unset password: the one `sf311 up` generated in state_dir/secrets (0600).
    mlflow_username: str = "sf311"
    mlflow_password: SecretStr | None = None
    model_name: str = "sf311-resolution"
    # The API checks the champion alias this often and swaps in a new version without restart.
    model_poll_seconds: float = Field(30.0, gt=0)
    # `sf311 train` holds out the newest cases (this many days) and trains on the rest.
    model_test_days: int = Field(90, ge=1)
    model_train_days: int = Field(3 * 365, ge=30)
    # The rolling-origin backtest's results, which GET /model reports beside the champion.
    model_backtest_file: Path = PROJECT_ROOT / "bench" / "results" / "model_quality.json"
    # The API recomputes its 80 % interval this often from the newest cases closed in the
    # warehouse (analyst role), off the request path; 0 (default) keeps the training-time
    # interval: the online rules missed 78-82 % in most replays (issue 19).
    model_online_seconds: float = Field(0.0, ge=0)
    model_online_window: int = Field(100, ge=1)
    model_online_min_cases: int = Field(30, ge=1)
    model_online_max_age_days: float | None = Field(None, gt=0)
    # Central share of the window's residuals spanned, where the adaptive level starts.
    model_online_level: float = Field(0.8, gt=0, lt=1)
    # Only cases requested after the model's training data (the validation chose False).
    model_online_out_of_sample: bool = False
    # "closures": a share of the newest closures' residuals; "requests": the newest requests at
    # least model_online_min_age_days old, open ones right-censored (Kaplan-Meier).
    model_online_method: Literal["closures", "requests"] = "closures"
    model_online_min_age_days: float = Field(0.0, ge=0)
    # Adaptive level (closures only; 0 is off): each outcome revealed among the last
    # model_online_adaptive_horizon requests moves the level by this step (ACI). Chosen on the
    # validation blocks with the window and level above.
    model_online_adaptive_gamma: float = Field(0.01, ge=0, lt=1)
    model_online_adaptive_horizon: int = Field(200, ge=1)

    # Airflow 3 in its own virtualenv.
    airflow_venv: Path = PROJECT_ROOT / ".venv-airflow"
    airflow_port: int = Field(8080, ge=1, le=65535)
    airflow_dsn: SecretStr = SecretStr("postgresql://sf311:sf311@127.0.0.1:5432/airflow")
    airflow_parallelism: int = Field(4, ge=1)

    # Socrata (SODA) source.
    socrata_domain: str = "data.sfgov.org"
    socrata_dataset: str = "vw6y-z8j6"
    socrata_app_token: SecretStr | None = None
    socrata_scheme: Literal["https", "http"] = "https"
    socrata_page_size: int = Field(50_000, ge=1, le=50_000)
    socrata_overlap_seconds: int = Field(3600, ge=0)
    socrata_timeout_seconds: float = Field(30.0, gt=0)
    socrata_max_attempts: int = Field(6, ge=1)
    socrata_backoff_seconds: float = Field(1.0, ge=0)
    socrata_backoff_max_seconds: float = Field(60.0, ge=0)
    ingest_schedule: str = "*/15 * * * *"
    # `sf311 reconcile`: the San Francisco days compared with the source, ending today.
    reconcile_window_days: int = Field(90, ge=1, le=3660)
    # A run that would mark more than this share of the window's cases deleted marks none and
    # fails: a source answering short (an outage, a rewrite in progress) is no deletion.
    reconcile_max_deleted_share: float = Field(0.05, ge=0, le=1)
    # `make demo`: generated cases served by a local SODA server, unless socrata_live pulls
    # the last demo_days from the real Socrata domain (needs internet).
    socrata_live: bool = False
    demo_rows: int = Field(100_000, ge=1_000)
    demo_days: int = Field(365, ge=30)
    demo_live_days: int = Field(7, ge=1)
    demo_soda_port: int = Field(8765, ge=1, le=65535)
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    kafka_linger_ms: int = Field(50, ge=0)

    # Prediction API and dashboard.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_url: str = "http://127.0.0.1:8000"
    dashboard_port: int = Field(8501, ge=1, le=65535)
    # Basemap of the dashboard's maps: a folium tiles name or URL template; "none" draws no
    # basemap (the data layers still show), for browsers that reach only loopback.
    dashboard_tiles: str = "OpenStreetMap"
    # OPS: the stream's case_predictions sink checks the MLflow champion this often and, when
    # it changed, rescores every open case, this many cases per slice.
    predictions_check_seconds: float = Field(30.0, gt=0)
    predictions_slice_rows: int = Field(20_000, ge=1)
    # OPS: while the stream runs, the open cases' statuses are recorded in overdue_history
    # this often (the day's last record stands for the day).
    overdue_history_seconds: float = Field(300.0, gt=0)

    @field_validator("spark_master")
    @classmethod
    def _known_master(cls, value: str) -> str:
        if not SPARK_MASTER.fullmatch(value):
            raise ValueError("must be local[N], spark://HOST:PORT, yarn or k8s://URL")
        return value

    @field_validator("stream_trigger", "stream_lake_trigger")
    @classmethod
    def _spark_trigger(cls, value: str) -> str:
        if not (is_available_now(value) or PROCESSING_TIME.fullmatch(value)):
            raise ValueError(
                "must be a processing time such as '1 second', '30 seconds' or '1 minute 30 "
                "seconds' (weeks to microseconds, no months or years), or availableNow"
            )
        return value

    @field_validator("postgres_dsn", "analyst_dsn", "mlflow_backend_dsn", "airflow_dsn")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError("must look like postgresql://USER:PASSWORD@HOST:PORT/DB")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("must be HOST:PORT[,HOST:PORT...]")
        return value

    # Plain properties: a model_copy(update=...) must not keep a root computed from old paths.
    @property
    def jars_dir(self) -> Path:
        """Return the folder of Spark's extra jars."""
        return self.spark_jars_dir or self.state_dir / "jars" / "spark"

    @property
    def case_subject(self) -> str:
        """Return the registry subject of the case topic's values (TopicNameStrategy)."""
        return f"{self.kafka_topic}-value"

    @property
    def lake_root(self) -> str:
        """Return the root of the Delta tables (a local folder or an object-store URL)."""
        return self.lake_path or str(self.state_dir / "lake")

    @property
    def checkpoint_root(self) -> str:
        """Return the root of the streaming checkpoints."""
        return self.checkpoint_path or str(self.state_dir / "checkpoints")

    def table_path(self, name: str) -> str:
        """Return the storage path of a lakehouse table such as 'silver.cases'."""
        layer, _, table = name.partition(".")
        return f"{self.lake_root.rstrip('/')}/{layer}/{table}"

    def object_store_conf(self) -> dict[str, str]:
        """Return the spark.hadoop.fs.s3a.* properties, empty when nothing is on s3a."""
        if (
            not any(p.startswith("s3a://") for p in (self.lake_root, self.checkpoint_root))
            and not self.s3_endpoint
        ):
            return {}
        s3a = "spark.hadoop.fs.s3a."
        conf = {
            # Keys from the environment only: never in a file, a setting or a command line.
            f"{s3a}aws.credentials.provider": (
                "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
            ),
            f"{s3a}path.style.access": str(self.s3_path_style_access).lower(),
        }
        if self.s3_endpoint:
            conf[f"{s3a}endpoint"] = self.s3_endpoint
            conf[f"{s3a}connection.ssl.enabled"] = str(
                self.s3_endpoint.startswith("https://")
            ).lower()
        if self.s3_region:
            conf[f"{s3a}endpoint.region"] = self.s3_region
        return conf

    def as_env(self) -> dict[str, str]:
        """Return SF311_* variables that rebuild these settings in a child process."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"SF311_{name.upper()}"] = str(value)
        return env

    def masked(self) -> dict[str, Any]:
        """Return the settings as JSON-ready values with secrets masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = _mask_url(value.get_secret_value())
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def _mask_url(secret: str) -> str:
    parts = urlsplit(secret)
    if parts.password:
        return secret.replace(f":{parts.password}@", ":***@", 1)
    return "***" if secret else ""


def load_settings(**overrides: Any) -> Settings:
    """Return Settings from the environment, or raise SettingsError naming the bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(settings_problems(err)) from None


def settings_problems(err: ValidationError) -> str:
    """Return one line naming each bad SF311_ variable of a Settings validation error."""
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        problems.append(f"SF311_{field.upper()}: {e['msg'].removeprefix('Value error, ')}")
    return "bad setting: " + "; ".join(problems)


def settings_json(settings: Settings) -> str:
    """Return the resolved settings as indented JSON, secrets masked."""
    return json.dumps(settings.masked(), indent=2, sort_keys=True)
