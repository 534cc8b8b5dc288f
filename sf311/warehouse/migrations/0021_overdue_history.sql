-- Overdue, at-risk and on-time open cases per San Francisco day and category, as last recorded
-- that day: case_predictions holds only the present, so the trend of overdue cases is kept by
-- recording it (sf311.warehouse.predictions.record_statuses, every
-- SF311_OVERDUE_HISTORY_SECONDS while the stream runs). Days before the first record, or when
-- nothing ran, have no row; a day's row is its last record, not its end.
CREATE TABLE overdue_history (
    day         date        NOT NULL,
    category    text,
    overdue     integer     NOT NULL,
    at_risk     integer     NOT NULL,
    on_time     integer     NOT NULL,
    recorded_at timestamptz NOT NULL,
    UNIQUE NULLS NOT DISTINCT (day, category)
);

COMMENT ON TABLE overdue_history IS
    'Open scored cases by status (view open_case_status) per San Francisco day and category, '
    'as last recorded that day while the stream ran.';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT SELECT ON overdue_history TO analyst;
    END IF;
END
$$;
