-- gold.monthly_volume: gold.daily_volume summed per San Francisco month (its first day), kept
-- equal to it by triggers on every write, so a range of whole months reads a fifth of the rows
-- (the dashboard's whole history: 0.2M rows instead of 0.9M at the 8M benchmark's scale).
-- A row whose sums fall to zero is dropped: no aggregate of the dashboard tells it from none.
DO $$
DECLARE
    gold text := CASE WHEN current_schema() = 'public' THEN 'gold'
                      ELSE current_schema() || '_gold' END;
BEGIN
    PERFORM set_config('sf311.search_path_before', current_setting('search_path'), true);
    PERFORM set_config('search_path', format('%I', gold), true);
END
$$;

CREATE TABLE monthly_volume (
    month               date NOT NULL,
    category            text,
    neighborhood        text,
    supervisor_district integer,
    police_district     text,
    source              text,
    opened              integer NOT NULL,
    closed              integer NOT NULL,
    CONSTRAINT monthly_volume_key UNIQUE NULLS NOT DISTINCT
        (month, category, neighborhood, supervisor_district, police_district, source)
);
CREATE INDEX monthly_volume_category_month ON monthly_volume (category, month);
-- Finds the rows a write emptied without a scan: it holds none between statements.
CREATE INDEX monthly_volume_empty ON monthly_volume (month) WHERE opened = 0 AND closed = 0;

COMMENT ON TABLE monthly_volume IS
    'gold.daily_volume summed per SF month (first day), maintained by triggers on daily_volume.';

-- Adds what a statement wrote to daily_volume and takes off what it removed, in one grouped
-- upsert whatever the number of rows (a rebuild of the mirror writes 1M rows).
CREATE FUNCTION monthly_volume_apply() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    rows constant text := 'SELECT day, category, neighborhood, supervisor_district,'
        ' police_district, source, %1$s * opened AS opened, %1$s * closed AS closed FROM %2$I';
    delta text := concat_ws(' UNION ALL ',
        CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN format(rows, 1, 'added') END,
        CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN format(rows, -1, 'removed') END);
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE monthly_volume;
        RETURN NULL;
    END IF;
    EXECUTE 'INSERT INTO monthly_volume AS m SELECT date_trunc(''month'', day)::date, category,'
        ' neighborhood, supervisor_district, police_district, source, sum(opened), sum(closed)'
        ' FROM (' || delta || ') d GROUP BY 1, 2, 3, 4, 5, 6'
        ' HAVING sum(opened) <> 0 OR sum(closed) <> 0'
        ' ON CONFLICT ON CONSTRAINT monthly_volume_key DO UPDATE'
        ' SET opened = m.opened + EXCLUDED.opened, closed = m.closed + EXCLUDED.closed';
    DELETE FROM monthly_volume WHERE opened = 0 AND closed = 0;
    RETURN NULL;
END
$fn$;

-- Each event its own trigger: a trigger with transition tables takes one event only.
CREATE TRIGGER monthly_volume_insert AFTER INSERT ON daily_volume
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION monthly_volume_apply();
CREATE TRIGGER monthly_volume_update AFTER UPDATE ON daily_volume
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION monthly_volume_apply();
CREATE TRIGGER monthly_volume_delete AFTER DELETE ON daily_volume
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION monthly_volume_apply();
CREATE TRIGGER monthly_volume_truncate AFTER TRUNCATE ON daily_volume
    FOR EACH STATEMENT EXECUTE FUNCTION monthly_volume_apply();

-- After the triggers: their lock on daily_volume keeps writers out until this commits.
INSERT INTO monthly_volume
SELECT date_trunc('month', day)::date, category, neighborhood, supervisor_district,
    police_district, source, sum(opened), sum(closed)
FROM daily_volume
GROUP BY 1, 2, 3, 4, 5, 6
HAVING sum(opened) <> 0 OR sum(closed) <> 0;

DO $$
DECLARE
    gold text := current_setting('search_path');
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        EXECUTE format('GRANT SELECT ON %s.monthly_volume TO analyst', gold);
    END IF;
    PERFORM set_config('search_path', current_setting('sf311.search_path_before'), true);
END
$$;
