#!/bin/bash
# First start of the compose Postgres: the same databases and roles `make up` creates. The
# analyst's password comes from the environment (.env), never from this file.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -v analyst_password="$ANALYST_PASSWORD" \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE analyst LOGIN PASSWORD :'analyst_password';
CREATE DATABASE registry OWNER sf311;
CREATE DATABASE mlflow OWNER sf311;
CREATE DATABASE airflow OWNER sf311;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE sf311 TO analyst;
-- The analyst reaches the warehouse alone, as with `make up`.
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE registry FROM PUBLIC;
REVOKE CONNECT ON DATABASE mlflow FROM PUBLIC;
REVOKE CONNECT ON DATABASE airflow FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO analyst;
ALTER DEFAULT PRIVILEGES FOR ROLE sf311 IN SCHEMA public GRANT SELECT ON TABLES TO analyst;
ALTER ROLE analyst SET default_transaction_read_only = on;
ALTER ROLE analyst SET jit = off;
SQL
