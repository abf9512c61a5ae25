#!/usr/bin/env bash
# Runs the whole sitewatch pipeline on this machine, throwaway and local:
#   mosquitto (free port) <- sitewatch-agent   (this machine as a "site")
#   mosquitto -> sitewatch-bridge -> PostgreSQL (initdb in a temp dir)
# and prints the fleet table from PostgreSQL as it updates. Ctrl-C stops
# everything and removes the temp dir. Nothing touches the machine's own
# mosquitto or PostgreSQL services.
#
# Usage: ./scripts/demo.sh [--seconds N]   (default: run until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

SECONDS_TO_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_TO_RUN="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done

ensure_system_packages
PGBIN=$(pg_bindir)

log "Building sitewatch-agent and sitewatch-bridge (release)"
cargo build --release --locked --bin sitewatch-agent --bin sitewatch-bridge
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
AGENT="$TARGET_DIR/release/sitewatch-agent"
BRIDGE="$TARGET_DIR/release/sitewatch-bridge"

WORK=$(mktemp -d /tmp/sitewatch-demo.XXXXXX)
PIDS=()
cleanup() {
    set +e
    log "Stopping demo"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 1
    stop_throwaway_postgres "$WORK"
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MQTT_PORT=$(free_port)
PG_PORT=$(free_port)
HTTP_PORT=$(free_port)

log "Starting mosquitto on 127.0.0.1:$MQTT_PORT"
PIDS+=("$(start_throwaway_mosquitto "$WORK" "$MQTT_PORT")")

log "Starting PostgreSQL on 127.0.0.1:$PG_PORT (data in $WORK/pg)"
start_throwaway_postgres "$WORK" "$PG_PORT" "-c fsync=off"
PGURL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

cat > "$WORK/bridge.toml" <<CONF
[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"
client_id = "sitewatch-bridge-demo"

[postgres]
url = "$PGURL"

[http]
listen = "127.0.0.1:$HTTP_PORT"
CONF
cat > "$WORK/agent.toml" <<CONF
site_id = "demo-site"

[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"

[heartbeat]
interval_secs = 5

[disk]
interval_secs = 10
mounts = ["/", "/tmp", "/srv/recordings"]
CONF

log "Starting sitewatch-bridge (metrics on http://127.0.0.1:$HTTP_PORT/metrics)"
RUST_LOG=${RUST_LOG:-info} "$BRIDGE" --config "$WORK/bridge.toml" >"$WORK/bridge.log" 2>&1 & BRIDGE_PID=$!; PIDS+=($BRIDGE_PID)
log "Checking the agent config, then starting sitewatch-agent as site demo-site"
"$AGENT" check --config "$WORK/agent.toml"
RUST_LOG=${RUST_LOG:-info} "$AGENT" --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 & AGENT_PID=$!; PIDS+=($AGENT_PID)

cat >&2 <<TXT

  Try, in another terminal:
    kill -9 $AGENT_PID      # the broker publishes the agent's Last Will: demo-site goes offline (lost)
    psql $PGURL -c 'select * from fleet'
    curl -s http://127.0.0.1:$HTTP_PORT/metrics | grep sitewatch_
  Logs: $WORK/{agent,bridge,mosquitto}.log

TXT

QUERY="select site, effective_state as state, offline_reason as reason, agent_version as version, boot,
              to_char(last_seen, 'HH24:MI:SS') as last_seen, disk_max_used_pct as disk_max_pct,
              disk_failed_mounts as disk_errors
         from fleet order by site"
START=$(date +%s)
while :; do
    sleep 5
    printf '\n--- fleet at %s ---\n' "$(date +%T)"
    "$PGBIN/psql" -X -q "$PGURL" -c "$QUERY" 2>&1 || true
    "$PGBIN/psql" -X -q -A -t "$PGURL" -c "select 'heartbeats stored: ' || count(*) from heartbeats; select 'disk rows stored: ' || count(*) from disk_usage" 2>&1 || true
    if ! kill -0 "$BRIDGE_PID" 2>/dev/null; then tail -20 "$WORK/bridge.log"; die "the bridge stopped"; fi
    if [ "$SECONDS_TO_RUN" -gt 0 ] && [ $(( $(date +%s) - START )) -ge "$SECONDS_TO_RUN" ]; then break; fi
done
