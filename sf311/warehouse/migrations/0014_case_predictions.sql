-- The champion's predicted close time of every open case, with its 80 % interval, kept by the
-- streaming job (sf311/model/predictions.py); a closed, deleted or vanished case has no row.
CREATE TABLE case_predictions (
    service_request_id bigint PRIMARY KEY REFERENCES cases ON DELETE CASCADE,
    model_version      text NOT NULL,
    predicted_close_at timestamptz NOT NULL,
    lower_at           timestamptz NOT NULL,
    upper_at           timestamptz NOT NULL,
    scored_at          timestamptz NOT NULL
);

COMMENT ON TABLE case_predictions IS
    'Open cases only: requested_datetime + the champion''s predicted hours and 80 % interval.';
COMMENT ON COLUMN case_predictions.scored_at IS 'When these values were last written.';

-- Overdue and at-risk cases are ranges of upper_at.
CREATE INDEX case_predictions_upper_idx ON case_predictions (upper_at);
-- A rescore walks the open cases in id order, a small share of the table.
CREATE INDEX cases_open_id_idx ON cases (service_request_id)
    WHERE closed_date IS NULL AND deleted_at IS NULL;

-- Open as in open_backlog: a nulled, impossible closed_date still closed the case.
CREATE VIEW open_case_status AS
SELECT
    c.service_request_id,
    c.service_name AS category,
    c.service_subtype,
    c.neighborhood,
    c.supervisor_district,
    c.police_district,
    c.source,
    c.requested_datetime,
    CASE WHEN c.quality_flags && ARRAY['location_outside_sf', 'location_missing'] THEN NULL
         ELSE c.lat END AS lat,
    CASE WHEN c.quality_flags && ARRAY['location_outside_sf', 'location_missing'] THEN NULL
         ELSE c.long END AS long,
    extract(epoch FROM now() - c.requested_datetime) / 3600 AS age_hours,
    p.predicted_close_at,
    p.lower_at,
    p.upper_at,
    extract(epoch FROM now() - p.upper_at) / 3600 AS hours_late,
    CASE WHEN now() > p.upper_at THEN 'overdue'
         WHEN p.upper_at < now() + interval '24 hours' THEN 'at_risk'
         ELSE 'on_time' END AS status,
    p.model_version,
    p.scored_at
FROM case_predictions p
JOIN cases c USING (service_request_id)
WHERE c.closed_date IS NULL
  AND NOT 'closed_date_invalid' = ANY (c.quality_flags)
  AND c.deleted_at IS NULL;

CREATE VIEW overdue_cases AS
SELECT
    service_request_id, category, service_subtype, neighborhood, supervisor_district,
    police_district, source, requested_datetime, lat, long, age_hours, predicted_close_at,
    lower_at, upper_at, hours_late
FROM open_case_status
WHERE status = 'overdue';

CREATE VIEW at_risk_cases AS
SELECT
    service_request_id, category, service_subtype, neighborhood, supervisor_district,
    police_district, source, requested_datetime, lat, long, age_hours, predicted_close_at,
    lower_at, upper_at, -hours_late AS hours_left
FROM open_case_status
WHERE status = 'at_risk';

-- `open` counts every open case of the group, scored or not (a case lands before it is scored).
CREATE VIEW overdue_by_category_neighborhood AS
SELECT
    c.service_name AS category,
    c.neighborhood,
    count(*) FILTER (WHERE s.status = 'overdue')::integer AS overdue,
    count(*) FILTER (WHERE s.status = 'at_risk')::integer AS at_risk,
    count(*)::integer AS open
FROM cases c
LEFT JOIN open_case_status s USING (service_request_id)
WHERE c.closed_date IS NULL
  AND NOT 'closed_date_invalid' = ANY (c.quality_flags)
  AND c.deleted_at IS NULL
GROUP BY 1, 2;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT SELECT ON case_predictions, open_case_status, overdue_cases, at_risk_cases,
            overdue_by_category_neighborhood TO analyst;
    END IF;
END
$$;
