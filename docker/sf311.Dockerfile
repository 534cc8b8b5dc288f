# The sf311 image: Python 3.11, Java 17, pyspark with the project's jars, the project installed.
# Target `app` runs the streaming job, the API and the dashboard; target `airflow` adds Airflow's
# own environment (it pins its own FastAPI and SQLAlchemy), so every DAG can spark-submit a job.
# Build from the repository root: docker build -f docker/sf311.Dockerfile --target app .

# The jars come from Maven Central through the same poms `make setup` uses.
FROM maven:3.9-eclipse-temurin-17 AS jars
COPY conf/maven/ /build/
RUN mvn -B -q -f /build/spark-jars.pom.xml dependency:copy-dependencies -DoutputDirectory=/jars \
 && mvn -B -q -f /build/s3a-jars.pom.xml dependency:copy-dependencies -DoutputDirectory=/jars

FROM python:3.11-slim-bookworm AS app
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    SF311_SPARK_JARS_DIR=/opt/jars/spark \
    SF311_SPARK_SUBMIT=/opt/venv/bin/spark-submit \
    SF311_STATE_DIR=/data \
    PYTHONUNBUFFERED=1
COPY --from=jars /jars/ /opt/jars/spark/
WORKDIR /app
COPY conf/requirements.lock conf/requirements.lock
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -q --no-cache-dir -r conf/requirements.lock
# Editable, so that Settings finds conf/, schemas/ and jobs/ under /app as in a checkout.
COPY . .
RUN /opt/venv/bin/pip install -q --no-cache-dir --no-deps -e . \
 && mkdir -p /data

FROM app AS airflow
ENV AIRFLOW_HOME=/data/airflow \
    SF311_AIRFLOW_VENV=/opt/airflow-venv \
    AIRFLOW__CORE__DAGS_FOLDER=/app/dags
RUN python -m venv /opt/airflow-venv \
 && /opt/airflow-venv/bin/pip install -q --no-cache-dir -r conf/airflow-constraints.txt \
 && /opt/airflow-venv/bin/pip install -q --no-cache-dir --no-deps -e .
ENV PATH=/opt/airflow-venv/bin:$PATH
