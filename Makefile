# The one command set of sf311. Everything lands under var/ (git-ignored) unless SF311_STATE_DIR says otherwise.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.9
STATE := $(or $(SF311_STATE_DIR),$(CURDIR)/var)
JARS := $(STATE)/jars
VENV := .venv
AIRFLOW_VENV := .venv-airflow
SF311 := $(VENV)/bin/sf311
PYTEST := $(VENV)/bin/pytest
MVN := mvn -B -q
DAG_TEST_ENV := AIRFLOW_HOME=$(STATE)/airflow-tests AIRFLOW__CORE__LOAD_EXAMPLES=False
UV = $(shell command -v uv || echo $(HOME)/.local/bin/uv)

.PHONY: help setup system-packages up down status cluster-up cluster-down test test-unit test-integration test-dags lint demo bench bench-full dashboard

help:
	@echo "make demo    run the whole pipeline on the embedded default"
	@echo "make test    setup, start the stack, run every test, stop the stack"
	@echo "make setup | up | down | status | lint | bench"
	@echo "make cluster-up | cluster-down   a Spark standalone master and workers on 127.0.0.1"

## setup: Debian packages, both Python environments, the JVM jars. A second run downloads nothing.
setup: system-packages $(VENV)/.installed $(AIRFLOW_VENV)/.installed \
	$(JARS)/spark/.installed $(JARS)/kafka/.installed $(JARS)/registry/.installed

system-packages:
	@[ -x /usr/lib/postgresql/15/bin/postgres ] && [ -x /usr/bin/chromium ] && command -v java >/dev/null \
	  && command -v mvn >/dev/null && command -v docker-compose >/dev/null || { \
	  echo "setup: installing Debian packages (postgresql, a JDK, maven, chromium, docker-compose)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    postgresql openjdk-17-jdk-headless maven chromium docker-compose; }
	@command -v uv >/dev/null || [ -x $(HOME)/.local/bin/uv ] || { \
	  echo "setup: installing uv $(UV_VERSION)"; $(PYTHON) -m pip install -q --user uv==$(UV_VERSION); }

$(VENV)/.installed: conf/requirements.lock pyproject.toml
	@echo "setup: main Python environment ($(VENV))"
	@[ -x $(VENV)/bin/python ] || $(UV) venv -q -p $(PYTHON) $(VENV)
	$(UV) pip sync -q -p $(VENV)/bin/python conf/requirements.lock
	$(UV) pip install -q -p $(VENV)/bin/python --no-deps -e .
	@touch $@

$(AIRFLOW_VENV)/.installed: conf/airflow-constraints.txt pyproject.toml
	@echo "setup: Airflow environment ($(AIRFLOW_VENV))"
	@[ -x $(AIRFLOW_VENV)/bin/python ] || $(UV) venv -q -p $(PYTHON) $(AIRFLOW_VENV)
	$(UV) pip sync -q -p $(AIRFLOW_VENV)/bin/python conf/airflow-constraints.txt
	$(UV) pip install -q -p $(AIRFLOW_VENV)/bin/python --no-deps -e .
	@touch $@

$(JARS)/spark/.installed: conf/maven/spark-jars.pom.xml conf/maven/s3a-jars.pom.xml
	@echo "setup: Spark jars (Delta, Kafka source, Avro, JDBC, s3a) -> $(JARS)/spark"
	@rm -rf $(JARS)/spark
	$(MVN) -f $< dependency:copy-dependencies -DoutputDirectory=$(JARS)/spark
	$(MVN) -f conf/maven/s3a-jars.pom.xml dependency:copy-dependencies -DoutputDirectory=$(JARS)/spark
	@touch $@

$(JARS)/kafka/.installed: conf/maven/kafka-broker.pom.xml
	@echo "setup: Kafka broker -> $(JARS)/kafka"
	@rm -rf $(JARS)/kafka
	$(MVN) -f $< dependency:copy-dependencies -DoutputDirectory=$(JARS)/kafka
	@touch $@

$(JARS)/registry/.installed: conf/maven/registry.pom.xml
	@echo "setup: schema registry (Apicurio) -> $(JARS)/registry"
	@rm -rf $(JARS)/registry
	$(MVN) -f $< dependency:unpack -Dout=$(JARS)/registry
	@touch $@

up: setup
	$(SF311) up

down:
	@[ -x $(SF311) ] && $(SF311) down || true

status:
	$(SF311) status

## cluster-up: a Spark standalone master and SF311_SPARK_CLUSTER_WORKERS workers on loopback
## (pyspark's own jars); jobs use it with SF311_SPARK_MASTER=spark://127.0.0.1:7077.
cluster-up: setup
	$(SF311) up --only spark

cluster-down:
	@[ -x $(SF311) ] && $(SF311) down --only spark || true

## test: the unit tests, then the integration tests against the real stack, then the DAG tests
## in the Airflow environment. The stack is stopped afterwards whatever the outcome.
test: setup
	@$(SF311) up && rc=0 || rc=$$?; \
	if [ $$rc -eq 0 ]; then \
	  $(PYTEST) --durations=15 tests/unit tests/integration || rc=$$?; \
	  $(DAG_TEST_ENV) $(AIRFLOW_VENV)/bin/python -m pytest tests/dags || rc=$$?; \
	fi; \
	$(SF311) down; exit $$rc

test-unit:
	$(PYTEST) tests/unit

test-integration:
	$(PYTEST) tests/integration

test-dags:
	$(DAG_TEST_ENV) $(AIRFLOW_VENV)/bin/python -m pytest tests/dags

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

dashboard:
	$(SF311) dashboard

## demo: the whole pipeline on generated cases (SF311_DEMO_ROWS, default 100k); a rerun reuses
## what exists. SF311_SOCRATA_LIVE=1 pulls the last days from the real Socrata API instead.
demo: setup
	$(SF311) demo

## bench: every benchmark at its default size, then bench/results/summary.md. BENCH_SCALE sets
## the sizes of the stream's scale curve; `make bench-full` runs the 8M one.
BENCH_SCALE ?= 100000,1000000
BENCHES := ingest stream train serve model_quality dashboard
bench: setup
	@$(SF311) up
	@set -e; for b in $(BENCHES); do \
	  echo "== bench/$$b.py"; \
	  if [ $$b = stream ]; then $(VENV)/bin/python -m bench.stream --scale $(BENCH_SCALE); \
	  else $(VENV)/bin/python -m bench.$$b; fi; \
	done
	$(VENV)/bin/python -m bench.summary

## bench-full: the city's scale, about 40 minutes: 8M generated cases over 18 years streamed into a
## kept database BENCH_DB (after 100k and 1M, for the scale curve) with a bench champion scoring
## the open cases, then every open case rescored after a model change, then the dashboard in
## Chromium and the README's queries on it. Run it on a quiet machine.
BENCH_DB ?= sf311_bench_full
bench-full: setup
	@$(SF311) up
	$(VENV)/bin/python -m bench.score --register-only
	$(VENV)/bin/python -m bench.stream --full --scale 100000,1000000,8000000 \
	  --database $(BENCH_DB) --model-name sf311-bench --steady-seconds 0
	$(VENV)/bin/python -m bench.score --database $(BENCH_DB)
	$(VENV)/bin/python -m bench.dashboard --database $(BENCH_DB)
	$(VENV)/bin/python -m bench.summary
