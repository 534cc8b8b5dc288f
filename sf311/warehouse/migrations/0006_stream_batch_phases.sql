-- The streaming job loads Postgres first and writes Delta afterwards, then completes its ledger
-- row with the seconds of every phase of the batch and the time the last sink finished.
ALTER TABLE stream_batches ADD COLUMN IF NOT EXISTS phase_seconds jsonb;
ALTER TABLE stream_batches ADD COLUMN IF NOT EXISTS finished_at timestamptz;

COMMENT ON COLUMN stream_batches.phase_seconds IS
    'Seconds per phase of the batch (decode, curate, postgres, bronze, quarantine, silver, ...).';
COMMENT ON COLUMN stream_batches.finished_at IS
    'When the batch''s last sink (silver.cases) committed; committed_at is the Postgres commit.';
