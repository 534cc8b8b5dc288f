-- Only the owner and `analyst` connect to the warehouse: a role created later does not inherit
-- PUBLIC's CONNECT (the platform revokes it on the stack's other databases too).
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database());
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO analyst', current_database());
    END IF;
END
$$;
