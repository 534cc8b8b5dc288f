-- The open rule in one place: view open_case_rows, the open cases with their own columns. The
-- keeper scores them from it (the model reads agency_responsible and the raw lat/long it was
-- trained on, which open_cases leaves out or nulls); open_cases and open_backlog read it too.
-- Its columns are those of `cases` now: a column added later is added here by a new migration.
CREATE VIEW open_case_rows AS
SELECT *
FROM cases
-- Not closed (a nulled, impossible closed_date still closed the case), not deleted at the source.
WHERE closed_date IS NULL
  AND NOT 'closed_date_invalid' = ANY (quality_flags)
  AND deleted_at IS NULL;

CREATE OR REPLACE VIEW open_cases AS
SELECT
    service_request_id,
    service_name AS category,
    service_subtype,
    neighborhood,
    supervisor_district,
    police_district,
    source,
    requested_datetime,
    CASE WHEN quality_flags && ARRAY['location_outside_sf', 'location_missing'] THEN NULL
         ELSE lat END AS lat,
    CASE WHEN quality_flags && ARRAY['location_outside_sf', 'location_missing'] THEN NULL
         ELSE long END AS long
FROM open_case_rows;

CREATE OR REPLACE VIEW open_backlog AS
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
FROM open_case_rows
GROUP BY 1, 2;

-- The keeper's upsert now locks the case rows it reads, so a case closed while its prediction
-- was written loses it in the closing transaction; rows that race left before go here, once.
DELETE FROM case_predictions p
WHERE NOT EXISTS (SELECT 1 FROM open_case_rows o WHERE o.service_request_id = p.service_request_id);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT SELECT ON open_case_rows TO analyst;
    END IF;
END
$$;
