#!/usr/bin/env bash
# Prepares deploy/central for `docker compose up`, once:
#   - .env from env.example (chmod 600) with random database and Grafana
#     passwords, unless .env exists;
#   - the fleet CA (scripts/issue-cert.sh) in SITEWATCH_PKI_DIR, unless it
#     exists, and the certificates the stack needs: the broker's (for
#     SITEWATCH_BROKER_HOST), PostgreSQL's (for "postgres"), the bridge's
#     (bridge.central);
#   - key files readable by the containers' users (mosquitto 1883, the
#     bridge 65532; PostgreSQL copies its own) and by nobody else.
#
# Usage: deploy/central/init.sh [--broker-host NAME] [--pki DIR] [--env FILE]
#   Site certificates: scripts/issue-cert.sh --dir "$SITEWATCH_PKI_DIR" site SITE_ID
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ENV_FILE=$HERE/.env
HOST='' PKI_ARG=''
while [ $# -gt 0 ]; do
    case "$1" in
        --broker-host) HOST="${2:?--broker-host needs a name}"; shift 2 ;;
        --pki) PKI_ARG="${2:?--pki needs a directory}"; shift 2 ;;
        --env) ENV_FILE="${2:?--env needs a file}"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (try --help)" >&2; exit 1 ;;
    esac
done

secret() { openssl rand -hex 24; }
if [ ! -e "$ENV_FILE" ]; then
    umask 077
    sed -e "s/^SITEWATCH_POSTGRES_PASSWORD=$/SITEWATCH_POSTGRES_PASSWORD=$(secret)/" \
        -e "s/^SITEWATCH_GRAFANA_DB_PASSWORD=$/SITEWATCH_GRAFANA_DB_PASSWORD=$(secret)/" \
        -e "s/^SITEWATCH_GRAFANA_ADMIN_PASSWORD=$/SITEWATCH_GRAFANA_ADMIN_PASSWORD=$(secret)/" \
        "$HERE/env.example" > "$ENV_FILE"
    echo "wrote $ENV_FILE (fill in the alerting settings)"
fi
if [ -n "$HOST" ]; then
    sed -i "s|^SITEWATCH_BROKER_HOST=.*|SITEWATCH_BROKER_HOST=$HOST|" "$ENV_FILE"
fi
if [ -n "$PKI_ARG" ]; then
    sed -i "s|^SITEWATCH_PKI_DIR=.*|SITEWATCH_PKI_DIR=$PKI_ARG|" "$ENV_FILE"
fi
val() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -1; }
HOST=$(val SITEWATCH_BROKER_HOST)
PKI=$(val SITEWATCH_PKI_DIR)
case "$PKI" in /*) ;; *) PKI="$HERE/$PKI" ;; esac

issue() { "$REPO/scripts/issue-cert.sh" --dir "$PKI" "$@"; }
[ -f "$PKI/ca.pem" ] || issue ca
[ -f "$PKI/server/$HOST/server.pem" ] || issue server "$HOST"
[ -f "$PKI/server/postgres/server.pem" ] || issue server postgres
[ -f "$PKI/bridges/bridge.central/client.pem" ] || issue bridge bridge.central

# Each key readable by the one container user that needs it (root can
# hand a file to another group; rootless podman maps ids differently).
chmod 644 "$PKI/crl.pem"
if [ "$(id -u)" -eq 0 ]; then
    chgrp 1883 "$PKI/server/$HOST/server.key" && chmod 640 "$PKI/server/$HOST/server.key"
    chgrp 65532 "$PKI/bridges/bridge.central/client.key" && chmod 640 "$PKI/bridges/bridge.central/client.key"
else
    echo "not root: make $PKI/server/$HOST/server.key readable by gid 1883 (mosquitto) and" >&2
    echo "$PKI/bridges/bridge.central/client.key by gid 65532 (the bridge): chgrp, chmod 640" >&2
fi
echo "certificates in $PKI; broker host $HOST"
