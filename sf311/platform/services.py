"""The services of the local stack: how each is prepared, started and health-checked."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
from psycopg import sql

from sf311.contract.registry import RegistryError, SchemaRegistry
from sf311.credentials import (
    MLFLOW_READER,
    generated_secret,
    mlflow_login,
    private_file,
    secrets_dir,
)
from sf311.platform.process import Launch, StackError, port_answers
from sf311.settings import PROJECT_ROOT, Settings

HTTP_TIMEOUT = 3.0


@dataclass(frozen=True)
class Endpoint:
    """A host and port a service listens on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def dsn_parts(dsn: str) -> tuple[str, int, str, str, str]:
    """Return host, port, user, password and database of a postgresql:// URL."""
    parts = urlsplit(dsn)
    return (
        parts.hostname or "127.0.0.1",
        parts.port or 5432,
        parts.username or "",
        parts.password or "",
        parts.path.lstrip("/"),
    )


def mlflow_auth_dsn(settings: Settings) -> str:
    """Return the DSN of MLflow's user store: the backend's database name plus `_auth`."""
    parts = urlsplit(settings.mlflow_backend_dsn.get_secret_value())
    return urlunsplit(parts._replace(path=f"{parts.path}_auth"))


def url_endpoint(url: str, default_port: int) -> Endpoint:
    """Return the host and port of an http(s) URL."""
    parts = urlsplit(url)
    return Endpoint(parts.hostname or "127.0.0.1", parts.port or default_port)


def http_ok(url: str) -> bool:
    """Return True when a GET of url answers 200 within HTTP_TIMEOUT."""
    try:
        return requests.get(url, timeout=HTTP_TIMEOUT).status_code == 200
    except requests.RequestException:
        return False


class Service:
    """A service of the stack; subclasses fill in the specifics."""

    name = ""
    health_timeout = 90.0
    # An optional service (the demo's apps) is left out of `status` while it is not running.
    optional = False
    stop_signal = signal.SIGTERM

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = settings.state_dir

    def endpoints(self) -> list[Endpoint]:
        """Return the addresses this service listens on."""
        return []

    def check_installed(self) -> None:
        """Raise StackError when a binary or download this service needs is missing."""

    def prepare(self) -> None:
        """Do the one-off, idempotent work before the first start (init, format, migrate)."""

    def launches(self) -> list[Launch]:
        """Return the processes that make up this service."""
        raise NotImplementedError

    def healthy(self) -> bool:
        """Return True when the service answers as it should."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Do the idempotent work that needs the running service (roles, topics)."""

    def describe(self) -> str:
        """Return a one-line address or detail for status output."""
        return ", ".join(str(e) for e in self.endpoints())


# The warehouse's server, sized for a backfill's bulk loads (an 8M backfill, bench/stream.py): with
# 1 GB of WAL between checkpoints it wrote about 27 GB of WAL, mostly full-page images, against
# 6.3 GB with these; with 256 MB of buffers its backends wrote 7.5M evicted pages themselves,
# and Postgres used 338 CPU-s, against 307 with 2 GB (which adds 1.9 GB to its peak memory).
SERVER_SETTINGS = (
    "shared_buffers=2GB",
    "max_wal_size=8GB",
    "checkpoint_timeout=15min",
    "wal_compression=lz4",
)


class Postgres(Service):
    """PostgreSQL: its own cluster, the project databases, the owner and analyst roles."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: roll back open transactions, then exit

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.host, self.port, self.owner, self.owner_pw, self.db = dsn_parts(
            settings.postgres_dsn.get_secret_value()
        )
        self.data_dir = self.state / "postgres" / "data"
        self.socket_dir = self.state / "run" / "pg"
        self.bin = settings.postgres_bin_dir
        self.os_user = "postgres" if os.geteuid() == 0 else None

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(self.host, self.port)]

    def check_installed(self) -> None:
        for tool in ("initdb", "postgres"):
            if not (self.bin / tool).exists():
                raise StackError(
                    f"postgres: {self.bin / tool} not found: run `make setup` "
                    "(apt-get install postgresql) or set SF311_POSTGRES_BIN_DIR"
                )

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.os_user:
            shutil.chown(path, self.os_user, self.os_user)

    def prepare(self) -> None:
        self._own(self.data_dir.parent)
        self._own(self.socket_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._own(self.data_dir)
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            check=True,
            capture_output=True,
            user=self.os_user,
        )

    def launches(self) -> list[Launch]:
        return [
            Launch(
                self.name,
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.socket_dir),
                    "-c",
                    f"listen_addresses={self.host}",
                    "-c",
                    "max_connections=200",
                    *[arg for setting in SERVER_SETTINGS for arg in ("-c", setting)],
                ],
                user=self.os_user,
                stop_signal=self.stop_signal,
            )
        ]

    def superuser(self, dbname: str = "postgres") -> psycopg.Connection:
        """Return an autocommit superuser connection over the cluster's unix socket."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=3,
        )

    def healthy(self) -> bool:
        try:
            with self.superuser() as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def databases(self) -> list[str]:
        """Return the databases the stack needs: warehouse, registry, MLflow (runs and users)
        and Airflow."""
        names = [self.db, "registry"]
        for dsn in (self.settings.mlflow_backend_dsn, self.settings.airflow_dsn):
            names.append(dsn_parts(dsn.get_secret_value())[4])
        names.append(dsn_parts(mlflow_auth_dsn(self.settings))[4])
        return list(dict.fromkeys(names))

    def after_start(self) -> None:
        _, _, analyst, analyst_pw, _ = dsn_parts(self.settings.analyst_dsn.get_secret_value())
        with self.superuser() as conn:
            for role, password in ((self.owner, self.owner_pw), (analyst, analyst_pw)):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
                verb = "ALTER" if exists.fetchone() else "CREATE"
                conn.execute(
                    sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                        sql.SQL(verb), sql.Identifier(role), sql.Literal(password)
                    )
                )
            for db in self.databases():
                if not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [db]
                ).fetchone():
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(db), sql.Identifier(self.owner)
                        )
                    )
            # Every role may connect to a new database (PUBLIC's CONNECT): the analyst reaches
            # the warehouse alone, the owner its own databases.
            for db in ["postgres", *self.databases()[1:]]:
                conn.execute(
                    sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC, {}").format(
                        sql.Identifier(db), sql.Identifier(analyst)
                    )
                )
        with self.superuser(self.db) as conn:
            ident = {
                "db": sql.Identifier(self.db),
                "owner": sql.Identifier(self.owner),
                "analyst": sql.Identifier(analyst),
            }
            for stmt in (
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                "GRANT CONNECT ON DATABASE {db} TO {analyst}",
                "GRANT USAGE ON SCHEMA public TO {analyst}",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {analyst}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
                "GRANT SELECT ON TABLES TO {analyst}",
                "ALTER ROLE {analyst} SET default_transaction_read_only = on",
                # Compiling a query costs ~0.1 s, more than the dashboard's queries take.
                "ALTER ROLE {analyst} SET jit = off",
            ):
                conn.execute(sql.SQL(stmt).format(**ident))


class Kafka(Service):
    """Apache Kafka 4.x, KRaft, one combined broker and controller."""

    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        first = settings.kafka_bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        self.broker = Endpoint(host, int(port))
        self.controller = Endpoint(host, settings.kafka_controller_port)
        self.home = self.state / "kafka"
        self.libs = self.state / "jars" / "kafka"

    def endpoints(self) -> list[Endpoint]:
        return [self.broker, self.controller]

    def check_installed(self) -> None:
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise StackError(f"kafka: no broker jars in {self.libs}: run `make setup`")
        if not shutil.which("java"):
            raise StackError("kafka: `java` not on PATH: install a JDK 17+ (make setup does)")

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            "-Xms256m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={self.settings.conf_dir / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.state / 'logs' / 'kafka'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": str(self.controller),
            "listeners": f"PLAINTEXT://{self.broker},CONTROLLER://{self.controller}",
            "advertised.listeners": f"PLAINTEXT://{self.broker},CONTROLLER://{self.controller}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(self.settings.kafka_partitions),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "-1",
        }
        (self.home / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in props.items())
        )
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = (
            subprocess.run(
                self._java("kafka.tools.StorageTool", "random-uuid"),
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-g",
                "-t",
                cluster_id,
                "-c",
                str(self.home / "server.properties"),
            ),
            check=True,
            capture_output=True,
        )

    def launches(self) -> list[Launch]:
        return [Launch(self.name, self._java("kafka.Kafka", str(self.home / "server.properties")))]

    def healthy(self) -> bool:
        if not port_answers(self.broker.host, self.broker.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap_servers})
        try:
            return bool(admin.list_topics(timeout=3).brokers)
        except Exception:  # noqa: BLE001 - any client error means "not ready yet"
            return False

    def after_start(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap_servers})
        existing = admin.list_topics(timeout=10).topics
        wanted = [
            NewTopic(topic, num_partitions=self.settings.kafka_partitions, replication_factor=1)
            for topic in (self.settings.kafka_topic, self.settings.kafka_dlq_topic)
            if topic not in existing
        ]
        for topic, future in (admin.create_topics(wanted) if wanted else {}).items():
            try:
                future.result(timeout=30)
            except Exception as err:
                raise StackError(f"kafka: cannot create topic {topic}: {err}") from err


def find_java(min_version: int, preferred: Path | None = None) -> Path:
    """Return a java binary of at least min_version, looking in JAVA_HOME-like folders."""
    candidates = [preferred] if preferred else []
    candidates += sorted(Path("/usr/lib/jvm").glob("*"), reverse=True)
    for home in candidates:
        release = home / "release"
        if not release.exists() or not (home / "bin" / "java").exists():
            continue
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                major = int(line.split("=", 1)[1].strip('"').split(".")[0])
                if major >= min_version:
                    return home / "bin" / "java"
    raise StackError(
        f"registry: needs Java {min_version}+ and none was found in /usr/lib/jvm: "
        "install one and set SF311_REGISTRY_JAVA_HOME to its folder"
    )


class Registry(Service):
    """Apicurio Registry, serving Confluent's schema-registry API, stored in Postgres."""

    name = "registry"
    health_timeout = 120.0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.http = url_endpoint(settings.schema_registry_url, 8081)
        self.management = Endpoint(self.http.host, settings.registry_management_port)
        self.home = self.state / "jars" / "registry"

    def endpoints(self) -> list[Endpoint]:
        return [self.http, self.management]

    def runner(self) -> Path:
        """Return the registry's runnable jar, wherever the archive version put it."""
        found = sorted(self.home.rglob("quarkus-run.jar"))
        if not found:
            raise StackError(f"registry: no quarkus-run.jar under {self.home}: run `make setup`")
        return found[0]

    def check_installed(self) -> None:
        self.runner()
        find_java(21, self.settings.registry_java_home)

    def launches(self) -> list[Launch]:
        host, port, user, password, _ = dsn_parts(self.settings.postgres_dsn.get_secret_value())
        env = {
            "QUARKUS_HTTP_HOST": self.http.host,
            "QUARKUS_HTTP_PORT": str(self.http.port),
            "QUARKUS_MANAGEMENT_HOST": self.management.host,
            "QUARKUS_MANAGEMENT_PORT": str(self.management.port),
            "APICURIO_STORAGE_KIND": "sql",
            "APICURIO_STORAGE_SQL_KIND": "postgresql",
            "APICURIO_DATASOURCE_URL": f"jdbc:postgresql://{host}:{port}/registry",
            "APICURIO_DATASOURCE_USERNAME": user,
            "APICURIO_DATASOURCE_PASSWORD": password,
        }
        java = find_java(21, self.settings.registry_java_home)
        return [
            Launch(
                self.name,
                [str(java), "-Xms128m", "-Xmx512m", "-jar", str(self.runner())],
                env=env,
                cwd=self.runner().parent,
            )
        ]

    def healthy(self) -> bool:
        return http_ok(f"{self.settings.schema_registry_url.rstrip('/')}/subjects")

    def after_start(self) -> None:
        # The case subject checks every version from the first one an ingest registers.
        try:
            SchemaRegistry(self.settings.schema_registry_url).set_compatibility(
                self.settings.case_subject
            )
        except RegistryError as err:
            raise StackError(f"registry: {err}") from err

    def describe(self) -> str:
        try:
            registry = SchemaRegistry(self.settings.schema_registry_url, timeout=2)
            level = registry.compatibility(self.settings.case_subject) or "not set"
        except RegistryError:
            level = "unknown"
        return f"{super().describe()}, {self.settings.case_subject} compatibility {level}"


class Mlflow(Service):
    """The MLflow tracking server behind its basic-auth app: runs, registry and users in
    Postgres, artifacts in the state folder."""

    name = "mlflow"
    # A first start creates the tables of two databases (runs, users): minutes on a busy machine.
    health_timeout = 240.0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.http = url_endpoint(settings.mlflow_tracking_uri, 5000)
        self.binary = Path(sys.executable).parent / "mlflow"
        self.auth_config = self.state / "mlflow" / "basic_auth.ini"

    def endpoints(self) -> list[Endpoint]:
        return [self.http]

    def check_installed(self) -> None:
        if not self.binary.exists():
            raise StackError(f"mlflow: {self.binary} not found: run `make setup`")

    def prepare(self) -> None:
        # Holds the owner's password: 0600, like every secret of the stack.
        auth_db = "postgresql+psycopg://" + mlflow_auth_dsn(self.settings).split("://", 1)[1]
        private_file(
            self.auth_config,
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {auth_db}\n"
            f"admin_username = {self.settings.mlflow_username}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # One worker: a cached login check cannot go stale in another; each uncached check
            # costs a deliberately slow password hash, and a model upload makes dozens.
            "auth_cache_ttl_seconds = 60\n",
        )

    def launches(self) -> list[Launch]:
        dsn = self.settings.mlflow_backend_dsn.get_secret_value()
        # Secrets through the environment, which only the owner can read, never argv.
        env = {
            "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://" + dsn.split("://", 1)[1],
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": mlflow_login(self.settings)[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": generated_secret(self.settings, "mlflow-flask-key"),
        }
        return [
            Launch(
                self.name,
                [
                    str(self.binary),
                    "server",
                    "--app-name",
                    "basic-auth",
                    "--artifacts-destination",
                    str(self.state / "mlflow" / "artifacts"),
                    "--host",
                    self.http.host,
                    "--port",
                    str(self.http.port),
                    "--workers",
                    "1",
                ],
                env=env,
            )
        ]

    def healthy(self) -> bool:
        return http_ok(f"{self.settings.mlflow_tracking_uri.rstrip('/')}/health")

    def after_start(self) -> None:
        base = f"{self.settings.mlflow_tracking_uri.rstrip('/')}/api/2.0/mlflow/users"
        admin = mlflow_login(self.settings)
        reader = {
            "username": MLFLOW_READER,
            "password": generated_secret(self.settings, f"mlflow-{MLFLOW_READER}"),
        }
        try:
            known = requests.get(
                f"{base}/get", params={"username": MLFLOW_READER}, auth=admin, timeout=60
            )
            # An existing reader gets the password of the secrets folder, which may be new.
            answer = (
                requests.patch(f"{base}/update-password", json=reader, auth=admin, timeout=60)
                if known.ok
                else requests.post(f"{base}/create", json=reader, auth=admin, timeout=60)
            )
        except requests.RequestException as err:
            raise StackError(f"mlflow: cannot set up user {MLFLOW_READER}: {err}") from err
        if not (known.ok or known.status_code == 404) or not answer.ok:
            raise StackError(
                f"mlflow: cannot set up user {MLFLOW_READER} (HTTP {known.status_code}, "
                f"{answer.status_code}): does {admin[0]}'s password in "
                f"{secrets_dir(self.settings)} match MLflow's user store? see README, Security"
            )


class Airflow(Service):
    """Airflow 3: api-server, scheduler and dag-processor, LocalExecutor, metadata in Postgres."""

    name = "airflow"
    health_timeout = 150.0
    components = ("api-server", "scheduler", "dag-processor")
    # The scheduler's log server binds every interface, with no setting for its host (Airflow
    # 3.3); the api-server reads task logs from the shared log folder instead.
    component_args = {"scheduler": ("--skip-serve-logs",)}

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.home = self.state / "airflow"
        self.http = Endpoint("127.0.0.1", settings.airflow_port)
        self.binary = settings.airflow_venv / "bin" / "airflow"

    def endpoints(self) -> list[Endpoint]:
        return [self.http]

    def check_installed(self) -> None:
        if not self.binary.exists():
            raise StackError(f"airflow: {self.binary} not found: run `make setup`")

    def _secret(self) -> str:
        path = self.home / "jwt_secret"
        if not path.exists():
            private_file(path, secrets.token_urlsafe(32))
        return path.read_text().strip()

    @property
    def password_file(self) -> Path:
        """Return the file of the simple auth manager's passwords (user -> password)."""
        return self.home / "simple_auth_manager_passwords.json.generated"

    def _admin_password(self) -> None:
        # Ours, not Airflow's: Airflow would log the password it generates and leave the file
        # world-readable. One that others could read has leaked, so it is replaced.
        path = self.password_file
        if path.exists() and not path.stat().st_mode & 0o077:
            return
        private_file(path, json.dumps({"admin": secrets.token_urlsafe(16)}) + "\n")

    def env(self) -> dict[str, str]:
        """Return the environment every Airflow process of the stack runs with."""
        dsn = self.settings.airflow_dsn.get_secret_value()
        return {
            **self.settings.as_env(),
            "PATH": f"{self.binary.parent}:{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.settings.airflow_parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{self.http}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://"
            + dsn.split("://", 1)[1],
            "AIRFLOW__API__HOST": self.http.host,
            "AIRFLOW__API__PORT": str(self.http.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret(),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        self._admin_password()
        done = subprocess.run(
            [str(self.binary), "db", "migrate"],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise StackError(f"airflow: `airflow db migrate` failed:\n{tail}")

    def launches(self) -> list[Launch]:
        return [
            Launch(
                f"airflow-{c}",
                [str(self.binary), c, *self.component_args.get(c, ())],
                env=self.env(),
            )
            for c in self.components
        ]

    def healthy(self) -> bool:
        try:
            answer = requests.get(f"http://{self.http}/api/v2/monitor/health", timeout=HTTP_TIMEOUT)
        except requests.RequestException:
            return False
        if answer.status_code != 200:
            return False
        report = answer.json()
        return all(
            report.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )

    def admin_password(self) -> str:
        """Return the generated password of the `admin` user of Airflow's simple auth manager."""
        return json.loads(self.password_file.read_text())["admin"]


def spark_home() -> Path:
    """Return the Spark distribution inside the installed pyspark package (jars, bin/)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("spark: pyspark is not installed in this environment: run `make setup`")
    return Path(spec.submodule_search_locations[0])


class SparkCluster(Service):
    """A Spark standalone cluster on loopback: a master and spark_cluster_workers workers, each
    its own JVM from pyspark's distribution; started by name only (`sf311 up --only spark`)."""

    name = "spark"
    optional = True
    health_timeout = 60.0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.master = Endpoint("127.0.0.1", settings.spark_cluster_port)
        self.ui = Endpoint("127.0.0.1", settings.spark_cluster_ui_port)
        self.worker_uis = [
            Endpoint("127.0.0.1", settings.spark_cluster_ui_port + n)
            for n in range(1, settings.spark_cluster_workers + 1)
        ]
        self.home = self.state / "spark"

    @property
    def url(self) -> str:
        """Return the master URL jobs take as SF311_SPARK_MASTER."""
        return f"spark://{self.master}"

    def endpoints(self) -> list[Endpoint]:
        return [self.master, self.ui, *self.worker_uis]

    def check_installed(self) -> None:
        if not (spark_home() / "bin" / "spark-class").exists():
            raise StackError(f"spark: no bin/spark-class in {spark_home()}: run `make setup`")
        if not shutil.which("java"):
            raise StackError("spark: `java` not on PATH: install a JDK 17+ (make setup does)")

    def prepare(self) -> None:
        for n in range(1, len(self.worker_uis) + 1):
            (self.home / f"worker-{n}").mkdir(parents=True, exist_ok=True)

    def _launch(self, name: str, *args: str) -> Launch:
        env = {
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": self.master.host,
            # Heap of the master and worker daemons themselves, not of the executors.
            "SPARK_DAEMON_MEMORY": "256m",
            # No REST submission server: it would take a fixed port (6066) nobody here uses.
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
            # Each job copies the jars into a worker's work folder: drop those of old jobs.
            "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true "
            "-Dspark.worker.cleanup.appDataTtl=86400",
        }
        argv = [str(spark_home() / "bin" / "spark-class"), *args]
        return Launch(name, argv, env=env, cwd=self.home)

    def launches(self) -> list[Launch]:
        master = self._launch(
            "spark-master", "org.apache.spark.deploy.master.Master",
            "--host", self.master.host, "--port", str(self.master.port),
            "--webui-port", str(self.ui.port),
        )  # fmt: skip
        workers = [self._worker(n, ui) for n, ui in enumerate(self.worker_uis, start=1)]
        return [master, *workers]

    def _worker(self, n: int, ui: Endpoint) -> Launch:
        return self._launch(
            f"spark-worker-{n}", "org.apache.spark.deploy.worker.Worker", self.url,
            "--host", ui.host, "--cores", str(self.settings.spark_worker_cores),
            "--memory", self.settings.spark_worker_memory, "--webui-port", str(ui.port),
            "--work-dir", str(self.home / f"worker-{n}"),
        )  # fmt: skip

    def alive_workers(self) -> int:
        """Return how many workers the master lists as alive (0 when it does not answer)."""
        try:
            answer = requests.get(f"http://{self.ui}/json/", timeout=HTTP_TIMEOUT)
            return int(answer.json().get("aliveworkers", 0)) if answer.ok else 0
        except (requests.RequestException, ValueError):
            return 0

    def healthy(self) -> bool:
        return self.alive_workers() >= len(self.worker_uis)

    def describe(self) -> str:
        return (
            f"{self.url} (UI http://{self.ui}), {len(self.worker_uis)} workers x "
            f"{self.settings.spark_worker_cores} core, {self.settings.spark_worker_memory}"
        )


def cluster_services(settings: Settings) -> list[Service]:
    """Return the optional services `up` starts only by name (the Spark cluster)."""
    return [SparkCluster(settings)]


def all_services(settings: Settings) -> list[Service]:
    """Return every service of the local stack in start order."""
    return [cls(settings) for cls in (Postgres, Kafka, Registry, Mlflow, Airflow)]
