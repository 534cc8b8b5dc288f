-- `analyst` reads every table and view of the warehouse and writes nothing. The role is made by
-- the platform; a cluster without it (a throwaway test cluster) just gets no grants.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT USAGE ON SCHEMA public TO analyst;
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM analyst;
        GRANT SELECT ON cases, stream_batches, stream_freshness, open_backlog, daily_volume,
            resolution_times, recent_cases TO analyst;
    END IF;
END
$$;
