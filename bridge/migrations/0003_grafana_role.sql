-- sitewatch bridge schema, version 3: a read-only role for Grafana.
--
-- Creates the role `sitewatch_grafana` (NOLOGIN: it is a group, not a
-- user) and lets it read every table and view of this schema, now and in
-- the future (for tables later migrations create as the same bridge user).
-- The admin then gives it a way in, either
--
--     ALTER ROLE sitewatch_grafana LOGIN PASSWORD '...';
-- or
--     CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE sitewatch_grafana;
--
-- (see docs/ops.md). The bridge user needs CREATEROLE for the role to be
-- created here; without it the migration only warns, and the admin runs
-- the statements of docs/ops.md "Read-only role by hand".
--
-- Roles are cluster-wide, while the migration lock is per database: two
-- bridges of two databases on one server may both try to create the role.
-- The loser's duplicate error is caught, so this stays safe to run
-- concurrently and again.
DO $grafana$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitewatch_grafana') THEN
        BEGIN
            CREATE ROLE sitewatch_grafana NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- created concurrently by another database's migration
            WHEN insufficient_privilege THEN
                RAISE WARNING 'sitewatch: cannot create role sitewatch_grafana (the bridge user lacks CREATEROLE); create it and grant it SELECT as docs/ops.md describes';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitewatch_grafana') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO sitewatch_grafana', current_schema());
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO sitewatch_grafana', current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO sitewatch_grafana', current_schema());
    END IF;
END
$grafana$;
