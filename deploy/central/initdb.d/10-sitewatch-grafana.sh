#!/bin/sh
# Runs once, when the postgres container initialises its data directory
# (docker-entrypoint-initdb.d): the read-only login Grafana's data source
# uses. The bridge's migration 0003 then grants it SELECT on every table
# (it keeps an existing role as it is). Password from the environment
# (deploy/central/.env), passed as a psql variable so it is quoted.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$SITEWATCH_GRAFANA_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE sitewatch_grafana LOGIN PASSWORD :'pw';
SQL
