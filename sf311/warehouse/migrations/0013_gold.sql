-- Schema `gold`: mirrors of the lake's gold Delta tables (sf311/lakehouse/gold*.py), written by
-- the streaming job's gold sink and by `sf311 replay`; dashboards and analysts read them instead
-- of aggregating `cases`. Days and months are San Francisco's. A DSN scoped to another schema
-- (a test's own) gets <schema>_gold instead, so that it never touches the real gold tables
-- (the same rule as sf311/warehouse/gold.py's SCHEMA_SQL).
DO $$
DECLARE
    gold text := CASE WHEN current_schema() = 'public' THEN 'gold'
                      ELSE current_schema() || '_gold' END;
BEGIN
    EXECUTE format('CREATE SCHEMA %I', gold);
    -- Until the end of this file: the tables below are made in the gold schema.
    PERFORM set_config('sf311.search_path_before', current_setting('search_path'), true);
    PERFORM set_config('search_path', format('%I', gold), true);
END
$$;

CREATE TABLE daily_volume (
    day                 date NOT NULL,
    category            text,
    neighborhood        text,
    supervisor_district integer,
    police_district     text,
    source              text,
    opened              integer NOT NULL,
    closed              integer NOT NULL,
    CONSTRAINT daily_volume_key UNIQUE NULLS NOT DISTINCT
        (day, category, neighborhood, supervisor_district, police_district, source)
);
CREATE INDEX daily_volume_category_day ON daily_volume (category, day);

CREATE TABLE backlog_daily (
    day        date NOT NULL,
    category   text,
    age_bucket text NOT NULL,
    open_cases integer NOT NULL,
    CONSTRAINT backlog_daily_key UNIQUE NULLS NOT DISTINCT (day, category, age_bucket)
);
CREATE INDEX backlog_daily_category_day ON backlog_daily (category, day);

CREATE TABLE resolution_stats (
    month        date NOT NULL,
    category     text,
    neighborhood text,
    closed_cases integer NOT NULL,
    p50_hours    double precision,
    p90_hours    double precision,
    CONSTRAINT resolution_stats_key UNIQUE NULLS NOT DISTINCT (month, category, neighborhood)
);
CREATE INDEX resolution_stats_category_month ON resolution_stats (category, month);

CREATE TABLE sla_daily (
    day          date NOT NULL,
    category     text,
    agency       text,
    target_hours double precision,
    opened       integer,
    met          integer,
    missed       integer,
    pending      integer,
    share_met    double precision,
    CONSTRAINT sla_daily_key UNIQUE NULLS NOT DISTINCT (day, category, agency)
);
CREATE INDEX sla_daily_category_day ON sla_daily (category, day);

-- The target each category's sla_daily rows are measured against (conf/sla_targets.csv, else
-- the trailing-year p90 of resolved hours when the category was first built).
CREATE TABLE sla_targets (
    category     text,
    target_hours double precision,
    CONSTRAINT sla_targets_key UNIQUE NULLS NOT DISTINCT (category)
);

-- The silver.cases table (Delta table id) and version the gold tables reflect, written in the
-- transaction of each mirror; another table id (another lake) makes the next batch rebuild gold.
CREATE TABLE progress (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    silver_table   text NOT NULL,
    silver_version bigint NOT NULL,
    as_of          timestamptz NOT NULL,
    refreshed_at   timestamptz NOT NULL
);

COMMENT ON TABLE daily_volume IS
    'Cases opened (requested) and closed (closed_date, any closure kind) per SF day.';
COMMENT ON TABLE backlog_daily IS
    'Cases open at the end of each SF day by age then; rows with no open case are left out.';
COMMENT ON TABLE resolution_stats IS
    'Resolved cases per SF month of closed_date, with continuous p50/p90 resolution hours.';
COMMENT ON TABLE sla_daily IS
    'Per SF day requested: met, missed and pending against the category''s target, as of '
    'progress.as_of (the newest instant in silver).';

DO $$
DECLARE
    gold text := current_setting('search_path');
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %s TO analyst', gold);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %s TO analyst', gold);
    END IF;
    PERFORM set_config('search_path', current_setting('sf311.search_path_before'), true);
END
$$;
