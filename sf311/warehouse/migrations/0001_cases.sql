-- The warehouse copy of silver.cases: one row per case, the newest version wins.
CREATE TABLE cases (
    service_request_id    bigint PRIMARY KEY,
    requested_datetime    timestamptz NOT NULL,
    updated_datetime      timestamptz NOT NULL,
    closed_date           timestamptz,
    status_description    text,
    status_notes          text,
    agency_responsible    text,
    service_name          text,
    service_subtype       text,
    service_details       text,
    address               text,
    street                text,
    supervisor_district   integer,
    neighborhood          text,
    analysis_neighborhood text,
    police_district       text,
    lat                   double precision,
    long                  double precision,
    location_issue        text,
    source                text,
    media_url             text,
    bos_2012              integer,
    data_as_of            timestamptz,
    data_loaded_at        timestamptz,
    extra                 text,
    origin                text,
    resolution_hours      double precision,
    kafka_timestamp       timestamptz NOT NULL,
    batch_id              bigint NOT NULL,
    loaded_at             timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE cases IS 'SF 311 cases, one row per service_request_id, newest updated_datetime wins.';
COMMENT ON COLUMN cases.updated_datetime IS
    'Last change; when the source has none, closed_date, else requested_datetime.';
COMMENT ON COLUMN cases.resolution_hours IS 'closed_date - requested_datetime in hours; null while open.';

CREATE INDEX cases_requested_idx ON cases (requested_datetime);
CREATE INDEX cases_category_idx ON cases (service_name, requested_datetime);
CREATE INDEX cases_neighborhood_idx ON cases (neighborhood);
CREATE INDEX cases_status_idx ON cases (status_description);
-- The backlog views read only open cases, a small share of the table.
CREATE INDEX cases_open_idx ON cases (service_name, requested_datetime) WHERE closed_date IS NULL;
