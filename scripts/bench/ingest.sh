#!/usr/bin/env bash
# Bridge ingest benchmark: messages per second that sitewatch-bridge stores
# from a fleet of simulated sites, next to a raw COPY of the same rows into
# the same PostgreSQL server in the same run.
#
#   ./scripts/bench/ingest.sh [--sites 1000] [--rounds 50] [--mounts 2]
#                             [--bridges N] [--in-flight N] [--markdown]
#
# --bridges N: N bridges in one share group (each message goes to one of
# them); the broker queues each member's share in its session, and all N
# drain at once. --in-flight N: the bridges' `[batch] in_flight` (batches
# written at once; default: the bridge's default, 2). --markdown: the
# result as a table row for scripts/bench/README.md, printed after the
# plain lines.
#
# Method:
#  1. Throwaway mosquitto and PostgreSQL (fsync on, default durability) on
#     free ports; the bridge creates its schema and persistent session, then
#     stops.
#  2. sitewatch-loadgen publishes sites x rounds x (heartbeat + disk) while
#     no bridge runs, so the broker queues them all (the loadgen is out of
#     the measured path).
#  3. The bridge starts; we time from its start until every message is
#     acknowledged ("drain rate": receive, decode, batch, commit, ack),
#     reading the bridges' own /metrics (`acked` counts only committed
#     messages), not counting rows in the database, so that the poll does
#     not compete with the writes it measures. Then the rows are counted
#     once: each message stored exactly once, or the run fails. Also
#     printed: the share of the drain spent in the bridge's database write
#     (`batch_duration_seconds`: SQL and COMMIT; summed over the batches
#     in flight, so it can pass 100%), failed attempts that were retried
#     (`db_errors`: deadlocks between batches would show here), peak RSS
#     (VmHWM), and the CPU seconds each process used during the drain
#     (bridges, mosquitto, every PostgreSQL process, from /proc/PID/stat):
#     next to the drain time they tell whether it waits or computes.
#  4. The same rows are exported with COPY TO and loaded into a fresh
#     database with the same schema with COPY FROM (the peer: no MQTT, no
#     decoding, no de-duplication), timed the same way. Partitioned tables
#     cannot be copied out directly: `COPY (SELECT * ...) TO`.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

SITES=1000 ROUNDS=50 MOUNTS=2 BRIDGES=1 IN_FLIGHT="" MARKDOWN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --sites) SITES="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --mounts) MOUNTS="$2"; shift 2 ;;
        --bridges) BRIDGES="$2"; shift 2 ;;
        --in-flight) IN_FLIGHT="$2"; shift 2 ;;
        --markdown) MARKDOWN=1; shift ;;
        *) die "unknown argument $1" ;;
    esac
done
[ "$BRIDGES" -ge 1 ] 2>/dev/null || die "--bridges must be 1 or more"
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

MQTT_PORT=$(free_port); PG_PORT=$(free_port)
HTTP_PORTS=()
for i in $(seq 1 "$BRIDGES"); do HTTP_PORTS+=("$(free_port)"); done
TOTAL=$(( SITES * ROUNDS * 2 ))
PIDS+=("$(start_throwaway_mosquitto "$WORK" "$MQTT_PORT" "max_queued_messages $(( TOTAL + 1000 ))
max_inflight_messages 0")")
# Default durability (fsync on): the bench measures what production pays.
start_throwaway_postgres "$WORK" "$PG_PORT"
PSQL=("$PGBIN/psql" -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres)
"${PSQL[@]}" -c "create database bench" -c "create database bench_copy"

# write_bridge_config DB INDEX: bridge number INDEX (1..N) on database DB.
write_bridge_config() {
    local group="" batch=""
    [ "$BRIDGES" -gt 1 ] && group='[consumer]
share_group = "bench"'
    [ -n "$IN_FLIGHT" ] && batch="[batch]
in_flight = $IN_FLIGHT"
    cat > "$WORK/bridge-$1-$2.toml" <<CONF
[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"
client_id = "sitewatch-bridge-bench-$2"

[postgres]
url = "postgres://postgres@127.0.0.1:$PG_PORT/$1"

[http]
listen = "127.0.0.1:${HTTP_PORTS[$(( $2 - 1 ))]}"

$group
$batch
CONF
}
for i in $(seq 1 "$BRIDGES"); do write_bridge_config bench "$i"; done
write_bridge_config bench_copy 1
"$BRIDGE" migrate --config "$WORK/bridge-bench_copy-1.toml" >/dev/null 2>&1

now() { date +%s.%N; }
# cpu_secs PID...: user + system CPU seconds of the processes and of their
# children they have waited for (PostgreSQL's postmaster reaps backends
# that exit), from /proc/PID/stat.
cpu_secs() {
    local tck; tck=$(getconf CLK_TCK)
    # A process may exit between listing and reading (a backend ending):
    # its CPU is then in its parent's cutime/cstime already.
    for pid in "$@"; do
        sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null || true
    done | awk -v t="$tck" '{s += $12 + $13 + $14 + $15} END {printf "%.2f", s / t}'
}
# pg_pids: the throwaway server's postmaster and its children (backends,
# WAL writer, checkpointer...).
pg_pids() {
    local pm; pm=$(head -1 "$WORK/pg/postmaster.pid")
    echo "$pm" $(pgrep -P "$pm")
}
# metric NAME: sum of a counter/histogram series over every bridge.
metric() {
    local port sum=0 v
    for port in "${HTTP_PORTS[@]}"; do
        v=$(curl -sf "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n {print $2}')
        sum=$(awk -v a="$sum" -v b="${v:-0}" 'BEGIN {printf "%.6f", a + b}')
    done
    echo "$sum"
}
count_stored() {
    "${PSQL[@]}" -d bench -c "select (select count(*) from heartbeats) + (select count(distinct (site, boot, seq)) from disk_usage)"
}
start_bridges() {
    BPIDS=()
    for i in $(seq 1 "$BRIDGES"); do
        "$BRIDGE" --config "$WORK/bridge-bench-$i.toml" >"$WORK/bridge$1-$i.log" 2>&1 &
        BPIDS+=($!); PIDS+=($!)
    done
}
stop_bridges() {
    local pid
    for pid in "${BPIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${BPIDS[@]}"; do wait "$pid" || true; done
}

log "Creating the bridges' persistent sessions ($BRIDGES), then stopping them"
start_bridges 0
for port in "${HTTP_PORTS[@]}"; do
    for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
done
stop_bridges

log "Publishing $TOTAL messages from $SITES sites (queued in the broker)"
"$LOADGEN" --port "$MQTT_PORT" --sites "$SITES" --rounds "$ROUNDS" --mounts "$MOUNTS"

log "Starting $BRIDGES bridge(s) and timing the drain"
PG_CPU0=$(cpu_secs $(pg_pids)); MQ_CPU0=$(cpu_secs "${PIDS[0]}")
T0=$(now)
start_bridges 1
while :; do
    A=$(metric sitewatch_bridge_acked_total)
    awk -v a="$A" -v t="$TOTAL" 'BEGIN {exit !(a >= t)}' && break
    for pid in "${BPIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { tail -n 40 "$WORK"/bridge1-*.log; die "a bridge died"; }
    done
    sleep 0.05
done
T1=$(now)
BRIDGE_CPU=$(cpu_secs "${BPIDS[@]}")
PG_CPU=$(awk -v a="$(cpu_secs $(pg_pids))" -v b="$PG_CPU0" 'BEGIN {printf "%.2f", a - b}')
MQ_CPU=$(awk -v a="$(cpu_secs "${PIDS[0]}")" -v b="$MQ_CPU0" 'BEGIN {printf "%.2f", a - b}')
RSS=0
for pid in "${BPIDS[@]}"; do
    R=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    [ "$R" -gt "$RSS" ] && RSS=$R
done
DB_SECS=$(metric sitewatch_bridge_batch_duration_seconds_sum)
BATCHES=$(metric sitewatch_bridge_batches_total)
# Failed attempts retried (deadlocks between batches in flight would show here).
DB_ERRORS=$(metric sitewatch_bridge_db_errors_total)
# Acked means committed; the count confirms exactly once.
for _ in $(seq 1 100); do [ "$(count_stored)" -ge "$TOTAL" ] && break; sleep 0.1; done
HB_ROWS=$("${PSQL[@]}" -d bench -c "select count(*) from heartbeats")
HB_MSGS=$("${PSQL[@]}" -d bench -c "select count(distinct (site, boot, seq)) from heartbeats")
DISK_MSGS=$("${PSQL[@]}" -d bench -c "select count(distinct (site, boot, seq)) from disk_usage")
DISK_ROWS=$("${PSQL[@]}" -d bench -c "select count(*) from disk_usage")
ROWS=$(( HB_ROWS + DISK_ROWS ))
stop_bridges
[ "$HB_ROWS" -eq $(( SITES * ROUNDS )) ] && [ "$HB_MSGS" -eq "$HB_ROWS" ] \
    && [ "$DISK_MSGS" -eq $(( SITES * ROUNDS )) ] && [ "$DISK_ROWS" -eq $(( SITES * ROUNDS * MOUNTS )) ] \
    || die "not stored exactly once: heartbeats $HB_ROWS rows / $HB_MSGS messages, disk $DISK_ROWS rows / $DISK_MSGS messages"

log "Raw COPY of the same rows into a fresh database with the same schema"
chmod 777 "$WORK"
"${PSQL[@]}" -d bench -c "\\copy (select * from heartbeats) to '$WORK/hb.copy'" \
    -c "\\copy (select * from disk_usage) to '$WORK/disk.copy'"
COPY_PG_CPU0=$(cpu_secs $(pg_pids))
C0=$(now)
"${PSQL[@]}" -d bench_copy -c "\\copy heartbeats from '$WORK/hb.copy'" -c "\\copy disk_usage from '$WORK/disk.copy'"
C1=$(now)
COPY_PG_CPU=$(awk -v a="$(cpu_secs $(pg_pids))" -v b="$COPY_PG_CPU0" 'BEGIN {printf "%.2f", a - b}')

awk -v t0="$T0" -v t1="$T1" -v c0="$C0" -v c1="$C1" -v sites="$SITES" -v rounds="$ROUNDS" -v m="$TOTAL" \
    -v r="$ROWS" -v rss="$RSS" -v n="$BRIDGES" -v db="$DB_SECS" -v batches="$BATCHES" -v dberr="$DB_ERRORS" -v md="$MARKDOWN" -v inflight="${IN_FLIGHT:-2}" \
    -v bcpu="$BRIDGE_CPU" -v mcpu="$MQ_CPU" -v pcpu="$PG_CPU" -v ccpu="$COPY_PG_CPU" -v ncpu="$(nproc)" '
BEGIN {
  t = t1 - t0; c = c1 - c0
  printf "\nsites=%s messages=%d rows=%d (heartbeats + disk mount rows), bridges=%d, stored exactly once\n", sites, m, r, n
  printf "bridge: %.2f s  %8.0f msg/s  %8.0f rows/s  (peak RSS %d KiB%s)\n", t, m/t, r/t, rss, (n > 1 ? " of the largest bridge" : "")
  printf "        %d batches, %d failed attempts retried; time in the database write (SQL + COMMIT, summed over bridges and batches in flight): %.2f s = %.0f%% of %d x the drain\n", batches, dberr, db, 100 * db / (n * t), n
  printf "        CPU during the drain: bridge %.2f s, mosquitto %.2f s, PostgreSQL %.2f s (all processes); %.2f s of the %.2f s that %d CPUs had\n", bcpu, mcpu, pcpu, bcpu + mcpu + pcpu, ncpu * t, ncpu
  printf "COPY:   %.2f s  %8.0f msg/s  %8.0f rows/s  (PostgreSQL CPU %.2f s)\n", c, m/c, r/c, ccpu
  printf "bridge / COPY throughput ratio: %.2f\n", c/t
  if (md) {
    printf "\n| run | bridges | in flight | bridge msg/s | COPY msg/s | ratio | peak RSS (largest bridge) | time in SQL + COMMIT | CPU s: bridge / mosquitto / PostgreSQL | COPY: PostgreSQL CPU s |\n"
    printf "|---|---|---|---|---|---|---|---|---|---|\n"
    printf "| %s sites x %s rounds | %d | %s | %.0f | %.0f | %.2f | %.1f MiB | %.0f%% | %.2f / %.2f / %.2f | %.2f |\n", sites, rounds, n, inflight, m/t, m/c, c/t, rss/1024, 100 * db / (n * t), bcpu, mcpu, pcpu, ccpu
  }
}'
