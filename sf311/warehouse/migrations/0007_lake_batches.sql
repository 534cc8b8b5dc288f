-- The streaming job runs two queries over the topic: one loads Postgres (its ledger is
-- stream_batches), the other writes bronze, the quarantine and silver. Their batches differ, so
-- the Delta writes get their own metrics table and stream_batches loses its Delta columns.
ALTER TABLE stream_batches DROP COLUMN IF EXISTS bronze_seconds;
ALTER TABLE stream_batches DROP COLUMN IF EXISTS silver_seconds;

COMMENT ON COLUMN stream_batches.phase_seconds IS
    'Seconds per phase of the batch: decode (Kafka to curated rows on the driver) and postgres.';
COMMENT ON COLUMN stream_batches.finished_at IS
    'When the batch function returned, after its commit.';

CREATE TABLE lake_batches (
    query_id          text NOT NULL,
    batch_id          bigint NOT NULL,
    rows_in           integer NOT NULL,
    rows_valid        integer NOT NULL,
    rows_quarantined  integer NOT NULL,
    kafka_ts_min      timestamptz,
    kafka_ts_max      timestamptz,
    lag_p50_seconds   double precision,
    lag_p95_seconds   double precision,
    silver_action     text NOT NULL,
    phase_seconds     jsonb NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    PRIMARY KEY (query_id, batch_id)
);

COMMENT ON TABLE lake_batches IS
    'One row per micro-batch written to bronze.cases_raw, silver.cases_quarantine and silver.cases.';
COMMENT ON COLUMN lake_batches.lag_p95_seconds IS
    '95th percentile of (silver commit time - Kafka timestamp) over the messages of the batch.';
COMMENT ON COLUMN lake_batches.phase_seconds IS
    'Seconds per phase: decode, bronze, quarantine, silver, compact.';

CREATE INDEX lake_batches_finished_idx ON lake_batches (finished_at);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT SELECT ON lake_batches TO analyst;
    END IF;
END
$$;
