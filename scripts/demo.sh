#!/usr/bin/env bash
# Runs the whole sitewatch pipeline on this machine, throwaway and local:
#   mosquitto (free port) <- sitewatch-agent   (this machine as a "site")
#   mosquitto -> sitewatch-bridge -> PostgreSQL (initdb in a temp dir)
#   a fixture camera (GStreamer RTSP, scripts/rtsp-test-server.py) for the
#   site, probed by the agent and by sitewatch-live, which also plays it
# and prints the live page's address, then the fleet table from PostgreSQL
# as it updates. Ctrl-C stops everything and removes the temp dir. Nothing
# touches the machine's own mosquitto or PostgreSQL services.
#
# Usage: ./scripts/demo.sh [--seconds N]   (default: run until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

SECONDS_TO_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_TO_RUN="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done

ensure_system_packages
PGBIN=$(pg_bindir)

log "Building sitewatch-agent, sitewatch-bridge and sitewatch-live (release)"
cargo build --release --locked --bin sitewatch-agent --bin sitewatch-bridge --bin sitewatch-live
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
AGENT="$TARGET_DIR/release/sitewatch-agent"
BRIDGE="$TARGET_DIR/release/sitewatch-bridge"
LIVE="$TARGET_DIR/release/sitewatch-live"

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
LIVE_PORT=$(free_port)
# The fixture camera's account (Digest auth, as NVRs ask) and the live
# page's viewer token: throwaway, like everything here.
CAM_PASSWORD="demo-cam-$RANDOM$RANDOM"
LIVE_TOKEN="demo-viewer-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

log "Starting a fixture camera (GStreamer RTSP server, H.264 640x360, 2 s GOP)"
/usr/bin/python3 scripts/rtsp-test-server.py --port 0 --auth digest --user viewer \
    --password "$CAM_PASSWORD" >"$WORK/camera.log" 2>&1 & PIDS+=($!)
CAM_PORT=
for _ in $(seq 150); do
    CAM_PORT=$(sed -n 's/^READY port=\([0-9]*\).*/\1/p' "$WORK/camera.log")
    [ -n "$CAM_PORT" ] && break
    sleep 0.1
done
[ -n "$CAM_PORT" ] || { cat "$WORK/camera.log" >&2; die "the fixture camera did not start"; }
printf '%s\n' "$CAM_PASSWORD" >"$WORK/camera.password"
printf '%s\n' "$LIVE_TOKEN" >"$WORK/viewer.token"
chmod 600 "$WORK/camera.password" "$WORK/viewer.token"

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

[rtsp]
interval_secs = 30
duration_secs = 4

[[rtsp.camera]]
name = "entrance"
url = "rtsp://127.0.0.1:$CAM_PORT/secure"
username = "viewer"
password_file = "$WORK/camera.password"
CONF
# The centre's route to the same camera (in real life the site's DDNS
# name and port forward).
cat > "$WORK/live.toml" <<CONF
[http]
listen = "127.0.0.1:$LIVE_PORT"

[postgres]
url = "$PGURL"

[probe]
interval_secs = 30

[auth]
token_file = "$WORK/viewer.token"

[[sites]]
site = "demo-site"
host = "127.0.0.1"
port = $CAM_PORT
username = "viewer"
password_file = "$WORK/camera.password"

[[sites.cameras]]
camera = "entrance"
path = "/secure"
CONF

log "Starting sitewatch-bridge (metrics on http://127.0.0.1:$HTTP_PORT/metrics)"
RUST_LOG=${RUST_LOG:-info} "$BRIDGE" --config "$WORK/bridge.toml" >"$WORK/bridge.log" 2>&1 & BRIDGE_PID=$!; PIDS+=("$BRIDGE_PID")
log "Checking the agent config, then starting sitewatch-agent as site demo-site"
"$AGENT" check --config "$WORK/agent.toml"
RUST_LOG=${RUST_LOG:-info} "$AGENT" --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 & AGENT_PID=$!; PIDS+=("$AGENT_PID")
# sitewatch-live writes into the bridge's schema (migration 10): start it
# once the bridge has migrated, so its first probe is stored.
for _ in $(seq 100); do
    "$PGBIN/psql" -X -q "$PGURL" -c 'select 1 from camera_reachability_now limit 0' >/dev/null 2>&1 && break
    sleep 0.2
done
log "Checking the live config, then starting sitewatch-live on 127.0.0.1:$LIVE_PORT"
"$LIVE" check --config "$WORK/live.toml"
RUST_LOG=${RUST_LOG:-info} "$LIVE" --config "$WORK/live.toml" >"$WORK/live.log" 2>&1 & LIVE_PID=$!; PIDS+=("$LIVE_PID")
LIVE_URL="http://127.0.0.1:$LIVE_PORT/?token=$LIVE_TOKEN&site=demo-site&camera=entrance"

cat >&2 <<TXT

  Live view (the fixture camera through sitewatch-live; video in about 2 s):
    $LIVE_URL
  Open it in a browser on this machine: the token in the address logs you in
  (it sets a cookie; the token is in $WORK/viewer.token). Without it every
  page answers 401. From another machine: ssh -L $LIVE_PORT:127.0.0.1:$LIVE_PORT this-host.

  Try, in another terminal:
    kill -9 $AGENT_PID      # the broker publishes the agent's Last Will: demo-site goes offline (lost)
    psql $PGURL -c 'select * from fleet'
    curl -s http://127.0.0.1:$HTTP_PORT/metrics | grep sitewatch_
    curl -s -H 'Authorization: Bearer $LIVE_TOKEN' http://127.0.0.1:$LIVE_PORT/live/demo-site/entrance/index.m3u8
    psql $PGURL -c 'select site, camera, class, detail from camera_reachability_now'
    curl -s http://127.0.0.1:$LIVE_PORT/metrics | grep sitewatch_live_
  Logs: $WORK/{agent,bridge,live,camera,mosquitto}.log

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
    "$PGBIN/psql" -X -q -A -t "$PGURL" -c "select 'camera ' || site || '/' || camera || ' at the site (agent): ' || class || coalesce(', ' || fps || ' fps, ' || width || 'x' || height, '') from cameras order by 1" 2>/dev/null || true
    "$PGBIN/psql" -X -q -A -t "$PGURL" -c "select 'camera ' || site || '/' || camera || ' from the centre: ' || class || ' (' || detail || ')' from camera_reachability_now order by 1" 2>/dev/null || true
    if ! kill -0 "$BRIDGE_PID" 2>/dev/null; then tail -20 "$WORK/bridge.log"; die "the bridge stopped"; fi
    if ! kill -0 "$LIVE_PID" 2>/dev/null; then tail -20 "$WORK/live.log"; die "sitewatch-live stopped"; fi
    if [ "$SECONDS_TO_RUN" -gt 0 ] && [ $(( $(date +%s) - START )) -ge "$SECONDS_TO_RUN" ]; then break; fi
done
