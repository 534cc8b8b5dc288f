-- Cases with an impossible field are kept and flagged instead of quarantined (the field itself is
-- null), closures get a kind read from status_notes, and cases the source deleted are marked,
-- never removed. The analyst views leave out deleted cases and flagged values. Existing rows get
-- their flags and kinds from `sf311 replay`, which decodes bronze again.
ALTER TABLE cases ADD COLUMN IF NOT EXISTS quality_flags text[] NOT NULL DEFAULT '{}';
ALTER TABLE cases ADD COLUMN IF NOT EXISTS closure_kind text;
ALTER TABLE cases ADD COLUMN IF NOT EXISTS deleted_at timestamptz;

COMMENT ON COLUMN cases.quality_flags IS
    'What is wrong with the case as the source sent it (see sf311/contract/quality.py); the '
    'impossible field is null, its raw value stays in bronze.cases_raw.';
COMMENT ON COLUMN cases.closure_kind IS
    'resolved, duplicate, transferred, cancelled_or_invalid or unknown (open, or notes that say '
    'nothing), read from status_notes by sf311/contract/quality.py.';
COMMENT ON COLUMN cases.deleted_at IS 'When reconciliation found the case gone from the source.';
COMMENT ON COLUMN cases.resolution_hours IS
    'closed_date - requested_datetime in hours; null while open or when closed before opened.';

-- Views are dropped and made again: their filters and columns change.
DROP VIEW IF EXISTS open_backlog, daily_volume, resolution_times, recent_cases;

CREATE VIEW open_backlog AS
SELECT
    service_name AS category,
    CASE
        WHEN now() - requested_datetime < interval '1 day'   THEN '0-1 d'
        WHEN now() - requested_datetime < interval '7 days'  THEN '1-7 d'
        WHEN now() - requested_datetime < interval '30 days' THEN '7-30 d'
        WHEN now() - requested_datetime < interval '90 days' THEN '30-90 d'
        ELSE '90+ d'
    END AS age_bucket,
    count(*)                AS open_cases,
    min(requested_datetime) AS oldest_requested
FROM cases
-- A case whose closed_date was impossible (nulled) was still closed: it is no backlog.
WHERE closed_date IS NULL
  AND NOT 'closed_date_invalid' = ANY (quality_flags)
  AND deleted_at IS NULL
GROUP BY 1, 2;

CREATE VIEW daily_volume AS
SELECT
    (requested_datetime AT TIME ZONE 'America/Los_Angeles')::date AS day,
    service_name                                                  AS category,
    count(*)                                                      AS opened,
    count(*) FILTER (WHERE closed_date IS NOT NULL)               AS closed_so_far
FROM cases
WHERE deleted_at IS NULL
GROUP BY 1, 2;

-- Resolution is measured on resolved closures only: a duplicate or a transfer closes a case
-- without resolving it, and a case closed before it opened has no resolution time.
CREATE VIEW resolution_times AS
SELECT
    service_name                                                          AS category,
    neighborhood,
    count(*)                                                              AS closed_cases,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_hours)         AS p50_hours,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY resolution_hours)         AS p90_hours
FROM cases
WHERE resolution_hours >= 0
  AND closure_kind = 'resolved'
  AND NOT quality_flags && ARRAY['closed_before_opened', 'closed_date_invalid']
  AND deleted_at IS NULL
GROUP BY 1, 2;

CREATE VIEW recent_cases AS
SELECT
    service_request_id, requested_datetime, updated_datetime, closed_date, status_description,
    service_name AS category, service_subtype, neighborhood, address,
    CASE WHEN quality_flags && ARRAY['location_outside_sf', 'location_missing'] THEN NULL
         ELSE lat END AS lat,
    CASE WHEN quality_flags && ARRAY['location_outside_sf', 'location_missing'] THEN NULL
         ELSE long END AS long,
    source, closure_kind, quality_flags
FROM cases
WHERE deleted_at IS NULL
ORDER BY requested_datetime DESC
LIMIT 1000;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT SELECT ON open_backlog, daily_volume, resolution_times, recent_cases TO analyst;
    END IF;
END
$$;
