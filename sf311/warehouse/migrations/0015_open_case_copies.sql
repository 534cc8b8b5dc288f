-- The Backlog page and the overdue views read case_predictions alone: each row carries the
-- columns of its case they filter and show, so no query joins 450k predictions with `cases`
-- (3.4 s at 8M cases, 2026-12-03). Two rules keep the copies exact:
-- a prediction is written only for an open case, with that case's columns (the keeper's upsert
-- reads view open_cases), and every UPDATE of `cases` refreshes the copies of the cases it
-- touched and deletes the predictions of those no longer open, in the same transaction.

-- Open as in open_backlog: not closed (a nulled, impossible closed_date still closed the case),
-- not deleted at the source; lat/long null where a location flag is set.
CREATE VIEW open_cases AS
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
FROM cases
WHERE closed_date IS NULL
  AND NOT 'closed_date_invalid' = ANY (quality_flags)
  AND deleted_at IS NULL;

ALTER TABLE case_predictions
    ADD COLUMN category text,
    ADD COLUMN service_subtype text,
    ADD COLUMN neighborhood text,
    ADD COLUMN supervisor_district integer,
    ADD COLUMN police_district text,
    ADD COLUMN source text,
    ADD COLUMN requested_datetime timestamptz,
    ADD COLUMN lat double precision,
    ADD COLUMN long double precision;

DELETE FROM case_predictions p
WHERE NOT EXISTS (SELECT 1 FROM open_cases o WHERE o.service_request_id = p.service_request_id);
UPDATE case_predictions p
SET (category, service_subtype, neighborhood, supervisor_district, police_district, source,
     requested_datetime, lat, long) =
    (o.category, o.service_subtype, o.neighborhood, o.supervisor_district, o.police_district,
     o.source, o.requested_datetime, o.lat, o.long)
FROM open_cases o
WHERE o.service_request_id = p.service_request_id;
ALTER TABLE case_predictions ALTER COLUMN requested_datetime SET NOT NULL;

COMMENT ON TABLE case_predictions IS
    'Open cases only: requested_datetime + the champion''s predicted hours and 80 % interval, '
    'with the case''s columns as view open_cases shows them (kept by trigger on cases).';

-- Statement-level, over the rows the statement changed: one join per upsert, not one per row.
CREATE FUNCTION case_predictions_follow_cases() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM case_predictions p
    USING changed n
    WHERE p.service_request_id = n.service_request_id
      AND NOT EXISTS (SELECT 1 FROM open_cases o
                      WHERE o.service_request_id = n.service_request_id);
    UPDATE case_predictions p
    SET (category, service_subtype, neighborhood, supervisor_district, police_district, source,
         requested_datetime, lat, long) =
        (o.category, o.service_subtype, o.neighborhood, o.supervisor_district,
         o.police_district, o.source, o.requested_datetime, o.lat, o.long)
    FROM changed n
    JOIN open_cases o USING (service_request_id)
    WHERE p.service_request_id = n.service_request_id
      AND (p.category, p.service_subtype, p.neighborhood, p.supervisor_district,
           p.police_district, p.source, p.requested_datetime, p.lat, p.long)
          IS DISTINCT FROM
          (o.category, o.service_subtype, o.neighborhood, o.supervisor_district,
           o.police_district, o.source, o.requested_datetime, o.lat, o.long);
    RETURN NULL;
END
$$;

-- Also fires for the upsert's ON CONFLICT DO UPDATE rows.
CREATE TRIGGER case_predictions_follow_cases
AFTER UPDATE ON cases
REFERENCING NEW TABLE AS changed
FOR EACH STATEMENT EXECUTE FUNCTION case_predictions_follow_cases();

CREATE OR REPLACE VIEW open_case_status AS
SELECT
    service_request_id,
    category,
    service_subtype,
    neighborhood,
    supervisor_district,
    police_district,
    source,
    requested_datetime,
    lat,
    long,
    extract(epoch FROM now() - requested_datetime) / 3600 AS age_hours,
    predicted_close_at,
    lower_at,
    upper_at,
    extract(epoch FROM now() - upper_at) / 3600 AS hours_late,
    CASE WHEN now() > upper_at THEN 'overdue'
         WHEN upper_at < now() + interval '24 hours' THEN 'at_risk'
         ELSE 'on_time' END AS status,
    model_version,
    scored_at
FROM case_predictions;

-- Each side counted apart, then summed: `open` counts every open case, scored or not.
CREATE OR REPLACE VIEW overdue_by_category_neighborhood AS
SELECT category, neighborhood, sum(overdue)::integer AS overdue,
    sum(at_risk)::integer AS at_risk, sum(open)::integer AS open
FROM (
    SELECT category, neighborhood, 0 AS overdue, 0 AS at_risk, count(*) AS open
    FROM open_cases GROUP BY 1, 2
    UNION ALL
    SELECT category, neighborhood, count(*) FILTER (WHERE status = 'overdue'),
        count(*) FILTER (WHERE status = 'at_risk'), 0
    FROM open_case_status GROUP BY 1, 2
) counts
GROUP BY 1, 2;

-- Open cases by category and neighborhood read from the index alone (open_backlog too).
CREATE INDEX cases_open_groups_idx ON cases (service_name, neighborhood)
    INCLUDE (requested_datetime, quality_flags)
    WHERE closed_date IS NULL AND deleted_at IS NULL;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT SELECT ON open_cases TO analyst;
    END IF;
END
$$;
