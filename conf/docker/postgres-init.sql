-- First start of the compose Postgres: the same databases and roles `make up` creates.
CREATE ROLE analyst LOGIN PASSWORD 'analyst';
CREATE DATABASE registry OWNER sf311;
CREATE DATABASE mlflow OWNER sf311;
CREATE DATABASE airflow OWNER sf311;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE sf311 TO analyst;
GRANT USAGE ON SCHEMA public TO analyst;
ALTER DEFAULT PRIVILEGES FOR ROLE sf311 IN SCHEMA public GRANT SELECT ON TABLES TO analyst;
ALTER ROLE analyst SET default_transaction_read_only = on;
