-- sitewatch bridge schema, version 6: a least-privilege role for writing.
--
-- Creates the role `sitewatch_writer` (NOLOGIN: a group) that can read,
-- insert and update the sitewatch tables and nothing else: no DELETE, no
-- TRUNCATE, no DDL, no other schema. A bridge that logs in as a member
-- of it runs with `[postgres] migrate = false`; the schema owner (the
-- account that ran this migration) runs `sitewatch-bridge migrate` for
-- upgrades. See docs/ops.md "Least-privilege accounts":
--
--     CREATE ROLE bridge LOGIN PASSWORD '...' IN ROLE sitewatch_writer;
--
-- Like the Grafana role (version 3), the role is cluster-wide: creating
-- it needs CREATEROLE, and without it this migration only warns.
DO $writer$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitewatch_writer') THEN
        BEGIN
            CREATE ROLE sitewatch_writer NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- created concurrently by another database's migration
            WHEN insufficient_privilege THEN
                RAISE WARNING 'sitewatch: cannot create role sitewatch_writer (the bridge user lacks CREATEROLE); create it and grant it as docs/ops.md describes';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitewatch_writer') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO sitewatch_writer', current_schema());
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA %I TO sitewatch_writer', current_schema());
        EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO sitewatch_writer', current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE ON TABLES TO sitewatch_writer', current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE ON SEQUENCES TO sitewatch_writer', current_schema());
    END IF;
END
$writer$;
