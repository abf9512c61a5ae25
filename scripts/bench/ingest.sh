#!/usr/bin/env bash
# Bridge ingest benchmark: messages per second that sitewatch-bridge stores
# from a fleet of simulated sites, next to a raw COPY of the same rows into
# the same PostgreSQL server in the same run.
#
#   ./scripts/bench/ingest.sh [--sites 1000] [--rounds 50] [--mounts 2]
#
# Method:
#  1. Throwaway mosquitto and PostgreSQL (fsync on, default durability) on
#     free ports; the bridge creates its schema and persistent session, then
#     stops.
#  2. sitewatch-loadgen publishes sites x rounds x (heartbeat + disk) while
#     no bridge runs, so the broker queues them all (the loadgen is out of
#     the measured path).
#  3. The bridge starts; we time from its start until every message is in
#     PostgreSQL ("drain rate": decode, batch, commit, ack).
#  4. The same rows are exported with COPY TO and loaded into a fresh
#     database with the same schema with COPY FROM (the peer: no MQTT, no
#     decoding, no de-duplication), timed the same way.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

SITES=1000 ROUNDS=50 MOUNTS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --sites) SITES="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --mounts) MOUNTS="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_system_packages
PGBIN=$(pg_bindir)

# The bridge runs on central servers and is built for speed (release-fast,
# opt-level 3), unlike the size-optimised agent profile.
log "Building (release-fast)"
cargo build --profile release-fast --locked --bin sitewatch-bridge --bin sitewatch-loadgen 2>&1 | tail -1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BRIDGE="$TARGET_DIR/release-fast/sitewatch-bridge"
LOADGEN="$TARGET_DIR/release-fast/sitewatch-loadgen"

WORK=$(mktemp -d /tmp/sitewatch-bench.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    stop_throwaway_postgres "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

MQTT_PORT=$(free_port); PG_PORT=$(free_port); HTTP_PORT=$(free_port)
TOTAL=$(( SITES * ROUNDS * 2 ))
PIDS+=("$(start_throwaway_mosquitto "$WORK" "$MQTT_PORT" "max_queued_messages $(( TOTAL + 1000 ))
max_inflight_messages 0")")
# Default durability (fsync on): the bench measures what production pays.
start_throwaway_postgres "$WORK" "$PG_PORT"
PSQL=("$PGBIN/psql" -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres)
"${PSQL[@]}" -c "create database bench" -c "create database bench_copy"
DB="postgres://postgres@127.0.0.1:$PG_PORT/bench"

write_bridge_config() {
    cat > "$WORK/bridge-$1.toml" <<CONF
[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"
client_id = "sitewatch-bridge-bench"

[postgres]
url = "postgres://postgres@127.0.0.1:$PG_PORT/$1"

[http]
listen = "127.0.0.1:$HTTP_PORT"
CONF
}
write_bridge_config bench; write_bridge_config bench_copy
"$BRIDGE" migrate --config "$WORK/bridge-bench_copy.toml" >/dev/null 2>&1

now() { date +%s.%N; }
count_stored() {
    "${PSQL[@]}" -d bench -c "select (select count(*) from heartbeats) + (select count(distinct (site, boot, seq)) from disk_usage)"
}

log "Creating the bridge's persistent session, then stopping it"
"$BRIDGE" --config "$WORK/bridge-bench.toml" >"$WORK/bridge0.log" 2>&1 & BPID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
kill -TERM "$BPID"; wait "$BPID" || true

log "Publishing $TOTAL messages from $SITES sites (queued in the broker)"
"$LOADGEN" --port "$MQTT_PORT" --sites "$SITES" --rounds "$ROUNDS" --mounts "$MOUNTS"

log "Starting the bridge and timing the drain"
T0=$(now)
"$BRIDGE" --config "$WORK/bridge-bench.toml" >"$WORK/bridge.log" 2>&1 & BPID=$!; PIDS+=($BPID)
while :; do
    N=$(count_stored)
    [ "$N" -ge "$TOTAL" ] && break
    kill -0 "$BPID" 2>/dev/null || { tail "$WORK/bridge.log"; die "bridge died"; }
    sleep 0.05
done
T1=$(now)
RSS=$(awk '/VmHWM/ {print $2}' "/proc/$BPID/status")
HB_ROWS=$("${PSQL[@]}" -d bench -c "select count(*) from heartbeats")
DISK_ROWS=$("${PSQL[@]}" -d bench -c "select count(*) from disk_usage")
ROWS=$(( HB_ROWS + DISK_ROWS ))
kill -TERM "$BPID"; wait "$BPID" || true

log "Raw COPY of the same rows into a fresh database with the same schema"
chmod 777 "$WORK"
"${PSQL[@]}" -d bench -c "\\copy heartbeats to '$WORK/hb.copy'" -c "\\copy disk_usage to '$WORK/disk.copy'"
C0=$(now)
"${PSQL[@]}" -d bench_copy -c "\\copy heartbeats from '$WORK/hb.copy'" -c "\\copy disk_usage from '$WORK/disk.copy'"
C1=$(now)

awk -v t0="$T0" -v t1="$T1" -v c0="$C0" -v c1="$C1" -v sites="$SITES" -v m="$TOTAL" -v r="$ROWS" -v rss="$RSS" '
BEGIN {
  t = t1 - t0; c = c1 - c0
  printf "\nsites=%s messages=%d rows=%d (heartbeats + disk mount rows)\n", sites, m, r
  printf "bridge: %.2f s  %8.0f msg/s  %8.0f rows/s  (peak RSS %d KiB)\n", t, m/t, r/t, rss
  printf "COPY:   %.2f s  %8.0f msg/s  %8.0f rows/s\n", c, m/c, r/c
  printf "bridge / COPY throughput ratio: %.2f\n", c/t
}'
