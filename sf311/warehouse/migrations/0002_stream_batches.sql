-- Ledger and metrics of the streaming job: one row per committed micro-batch. The row is written
-- in the same transaction as the batch's upsert, so a replayed batch finds it and changes nothing.
CREATE TABLE stream_batches (
    query_id          text NOT NULL,
    batch_id          bigint NOT NULL,
    rows_in           integer NOT NULL,
    rows_valid        integer NOT NULL,
    rows_quarantined  integer NOT NULL,
    rows_curated      integer NOT NULL,
    rows_upserted     integer NOT NULL,
    kafka_ts_min      timestamptz,
    kafka_ts_max      timestamptz,
    lag_p50_seconds   double precision,
    lag_p95_seconds   double precision,
    bronze_seconds    double precision,
    silver_seconds    double precision,
    started_at        timestamptz NOT NULL,
    committed_at      timestamptz NOT NULL,
    PRIMARY KEY (query_id, batch_id)
);

COMMENT ON TABLE stream_batches IS
    'One row per streaming micro-batch loaded into cases: its rows and its lag from Kafka to commit.';
COMMENT ON COLUMN stream_batches.lag_p50_seconds IS
    'Median of (commit time - Kafka timestamp) over the messages of the batch.';
COMMENT ON COLUMN stream_batches.lag_p95_seconds IS
    '95th percentile of (commit time - Kafka timestamp) over the messages of the batch.';

CREATE INDEX stream_batches_committed_idx ON stream_batches (committed_at);

-- Freshness for the dashboard and `make status`: the last hour of batches and the latest one.
CREATE VIEW stream_freshness AS
SELECT
    max(committed_at)                                               AS last_commit,
    now() - max(committed_at)                                       AS since_last_commit,
    count(*)                                                        AS batches_last_hour,
    coalesce(sum(rows_in), 0)                                       AS rows_last_hour,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_p50_seconds)    AS lag_p50_seconds,
    max(lag_p95_seconds)                                            AS lag_p95_seconds_max
FROM stream_batches
WHERE committed_at > now() - interval '1 hour';
