-- One row per `sf311 reconcile` run: which San Francisco days it compared with the source, how
-- many differed, and what it did about them. A run that fails or refuses keeps its row, status
-- and error, so `sf311 status` shows the last outcome whatever it was.
CREATE TABLE reconcile_runs (
    run_id             bigserial PRIMARY KEY,
    window_start       date NOT NULL,
    window_end         date NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    status             text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'refused')),
    days_compared      integer,
    days_differing     integer,
    differing_days     date[],
    ids_missing_here   integer,
    ids_reextracted    integer,
    ids_marked_deleted integer,
    ids_restored       integer,
    error              text
);

COMMENT ON TABLE reconcile_runs IS
    'sf311 reconcile runs: per San Francisco day in [window_start, window_end], the count and id '
    'sum of cases here against the source; for days that differ, ids missing here re-extracted '
    'to Kafka, ids gone from the source marked cases.deleted_at, ids back at the source cleared.';
COMMENT ON COLUMN reconcile_runs.ids_reextracted IS
    'Cases sent to Kafka again: those missing here and those back at the source.';
COMMENT ON COLUMN reconcile_runs.status IS
    'refused: more cases would have been marked deleted than reconcile_max_deleted_share allows; '
    'none were.';

CREATE INDEX reconcile_runs_started_idx ON reconcile_runs (started_at DESC);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT SELECT ON reconcile_runs TO analyst;
    END IF;
END
$$;
