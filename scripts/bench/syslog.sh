#!/usr/bin/env bash
# Syslog relay benchmark: sitewatch-agent (UDP in -> MQTT batches out) next
# to syslog-ng from Debian (UDP in -> TCP out), in the same run on the same
# machine, one after the other so they do not compete for the CPU.
#
#   ./scripts/bench/syslog.sh [--rates "5000 10000 20000 40000 80000"] [--seconds 5] [--markdown]
#
# Method, for each relay:
#  1. The relay starts fresh on loopback ports picked at run time: the
#     agent with a [syslog] UDP listener (rate limit off, everything else at
#     its defaults) publishing to a throwaway mosquitto; syslog-ng with its
#     packaged defaults, a network() UDP source and a tcp() destination (the
#     seed deployment's relay) to a line-counting TCP sink.
#  2. For each rate, a paced sender (agent/examples/syslog_bench.rs) offers
#     RATE x SECONDS RFC 3164 lines (~130 bytes) over UDP in 1 ms slices.
#  3. We wait until the far end stops growing, then count what arrived: for
#     the agent, records in the `log` batches a mosquitto_sub (QoS 1) sees
#     (one `"rx":` key per record); for syslog-ng, lines on the sink.
#  4. CPU seconds are the relay's utime+stime (/proc/PID/stat) over the
#     step; peak memory is VmHWM at the end of the run.
#
# Reported: the highest rate relayed with no loss, CPU seconds per 100,000
# messages at each rate, and peak resident memory. Where a loss happened is
# shown too: `udp_drops` is the kernel's count of datagrams the relay's UDP
# socket had no room for (the `drops` column of /proc/net/udp; both relays'
# buffers are capped by net.core.rmem_max, neither is tuned here), and for
# the agent its own drop counters from its last heartbeat (syslog_dropped,
# outbox_dropped_log). --markdown also prints the summary as a Markdown
# table, for scripts/bench/README.md (copy it from the output, never by hand).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

export RATES="5000 10000 20000 40000 80000"
STEP_SECS=5
MARKDOWN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) RATES="$2"; shift 2 ;;
        --seconds) STEP_SECS="$2"; shift 2 ;;
        --markdown) MARKDOWN=1; shift ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_system_packages
SYSLOG_NG=$(command -v syslog-ng || echo /usr/sbin/syslog-ng)
[ -x "$SYSLOG_NG" ] || die "syslog-ng not found (apt-get install syslog-ng-core)"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

log "Building (release)"
cargo build --release --locked -p sitewatch-agent --bin sitewatch-agent --example syslog_bench 2>&1 | tail -1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
AGENT="$TARGET_DIR/release/sitewatch-agent"
BENCH="$TARGET_DIR/release/examples/syslog_bench"

WORK=$(mktemp -d /tmp/sitewatch-syslog-bench.XXXXXX); chmod 755 "$WORK"
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# Datagrams the kernel dropped on 127.0.0.1:PORT's UDP socket (last column
# of /proc/net/udp; the port is hex in the local address).
udp_drops() {
    awk -v a="$(printf '0100007F:%04X' "$1")" '$2 == a { n += $NF } END { print n + 0 }' /proc/net/udp
}

# Waits until the counter printed by "$@" stops changing for 3 s (at most 60 s).
settle() {
    local last=-1 now stable=0
    for _ in $(seq 1 120); do
        now=$("$@")
        if [ "$now" = "$last" ]; then
            stable=$((stable + 1)); [ $stable -ge 6 ] && break
        else
            stable=0; last=$now
        fi
        sleep 0.5
    done
    "$@"
}

RESULTS="$WORK/results.txt"
: > "$RESULTS"

# run_relay NAME PID UDP_PORT COUNT_FUNCTION
run_relay() {
    # Arrivals late for one step are counted in the next, so a rate counts
    # as loss-free only when nothing at all is missing up to and including
    # it (rates go up).
    local name=$1 pid=$2 port=$3 count=$4 offset=0 best=0 missing=0
    for rate in $RATES; do
        local before cpu0 out got cpu1 sent drops0 drops1
        before=$(settle "$count")
        cpu0=$(cpu_ticks "$pid")
        drops0=$(udp_drops "$port")
        out=$("$BENCH" send --port "$port" --rate "$rate" --seconds "$STEP_SECS" --start "$offset")
        sent=$(echo "$out" | awk '{ print $2 }')
        got=$(( $(settle "$count") - before ))
        cpu1=$(cpu_ticks "$pid")
        drops1=$(udp_drops "$port")
        offset=$((offset + sent))
        awk -v n="$name" -v r="$rate" -v s="$sent" -v g="$got" -v c0="$cpu0" -v c1="$cpu1" -v hz="$CLK_TCK" \
            -v d="$((drops1 - drops0))" 'BEGIN {
            cpu = (c1 - c0) / hz
            printf "%-15s rate %6d/s  sent %7d  arrived %7d  lost %6d  udp_drops %6d  cpu %6.2f s  cpu/100k %6.3f s\n",
                n, r, s, g, s - g, d, cpu, cpu * 100000 / s
        }' | tee -a "$RESULTS"
        missing=$((missing + sent - got))
        if [ "$missing" -le 0 ] && [ "$rate" -gt "$best" ]; then best=$rate; fi
    done
    echo "$name max_no_loss $best peak_rss_kib $(peak_rss_kib "$pid")" | tee -a "$RESULTS"
}

# ---------------------------------------------------------------- agent
MQTT_PORT=$(free_port); AGENT_UDP=$(free_port)
cat > "$WORK/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
log_dest file $WORK/mosquitto.log
user $(id -un)
CONF
"$MOSQUITTO" -c "$WORK/mosquitto.conf" & PIDS+=($!)
sleep 0.5
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t 'sitewatch/v1/+/log' > "$WORK/mqtt.out" & PIDS+=($!)
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t 'sitewatch/v1/+/heartbeat' > "$WORK/heartbeat.out" & PIDS+=($!)
cat > "$WORK/agent.toml" <<CONF
site_id = "bench"
[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"
[heartbeat]
interval_secs = 2
[disk]
mounts = []
[syslog]
udp = ["127.0.0.1:$AGENT_UDP"]
tcp = []
rate_limit_per_sec = 0
CONF
"$AGENT" --config "$WORK/agent.toml" > "$WORK/agent.log" 2>&1 & AGENT_PID=$!; PIDS+=($AGENT_PID)
for _ in $(seq 1 100); do grep -q "Listening for syslog on UDP" "$WORK/agent.log" && break; sleep 0.1; done
grep -q "Listening for syslog on UDP" "$WORK/agent.log" || { cat "$WORK/agent.log"; die "agent did not start"; }
count_agent() { { grep -o '"rx":' "$WORK/mqtt.out" || true; } | wc -l; }
log "sitewatch-agent: UDP -> MQTT (QoS 1, log batches)"
run_relay sitewatch-agent "$AGENT_PID" "$AGENT_UDP" count_agent
sleep 2.5 # one more heartbeat with the final counters
counter() { tail -1 "$WORK/heartbeat.out" | grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
echo "sitewatch-agent counters syslog_dropped ${SD:=$(counter syslog_dropped)} outbox_dropped_log ${OD:=$(counter outbox_dropped_log)}" | tee -a "$RESULTS"
kill "$AGENT_PID"

# ------------------------------------------------------------- syslog-ng
SNG_UDP=$(free_port); SINK_PORT=$(free_port)
"$BENCH" sink --port "$SINK_PORT" --out "$WORK/sink.count" & PIDS+=($!)
sleep 0.3
cat > "$WORK/syslog-ng.conf" <<CONF
@version: 3.38
options { stats-freq(0); mark-freq(0); keep-hostname(yes); };
source s_udp { network(ip("127.0.0.1") port($SNG_UDP) transport("udp")); };
destination d_remote { tcp("127.0.0.1" port($SINK_PORT)); };
log { source(s_udp); destination(d_remote); };
CONF
"$SYSLOG_NG" -F -f "$WORK/syslog-ng.conf" --persist-file "$WORK/sng.persist" \
    --pidfile "$WORK/sng.pid" --control "$WORK/sng.ctl" --no-caps > "$WORK/sng.log" 2>&1 & SNG_PID=$!; PIDS+=($SNG_PID)
for _ in $(seq 1 100); do [ -S "$WORK/sng.ctl" ] && break; sleep 0.1; done
[ -S "$WORK/sng.ctl" ] || { cat "$WORK/sng.log"; die "syslog-ng did not start"; }
sleep 0.5
count_sink() { cat "$WORK/sink.count" 2>/dev/null || echo 0; }
log "syslog-ng $("$SYSLOG_NG" --version | head -1 | awk '{print $2, $3}'): UDP -> TCP"
run_relay syslog-ng "$SNG_PID" "$SNG_UDP" count_sink

log "Summary ($(nproc) cores, $STEP_SECS s per rate, rates: $RATES)"
grep -E 'max_no_loss|counters' "$RESULTS"

if [ "$MARKDOWN" = 1 ]; then
    echo
    echo "syslog.sh, $(date -u +%Y-%m-%d), $(nproc) cores, $STEP_SECS s per rate:"
    echo
    awk '
    $2 == "rate" { k = $1 SUBSEP $3; lost[k] = $9; drops[k] = $11; cpu[k] = $16; rates[$3] = 1; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
    $2 == "max_no_loss" { best[$1] = $3; rss[$1] = $5 }
    $2 == "counters" { counters[$1] = "syslog_dropped " $4 ", outbox_dropped_log " $6 }
    END {
        printf "| relay | highest rate with no loss | lost (of which kernel UDP drops) per rate | CPU s per 100k lines per rate | peak RSS |\n|---|---|---|---|---|\n"
        for (i = 1; i <= n; i++) {
            r = order[i]; l = ""; c = ""
            m = split(ENVIRON["RATES"], rs, " ")
            for (j = 1; j <= m; j++) {
                k = r SUBSEP rs[j] "/s"
                l = l (j > 1 ? ", " : "") rs[j] "/s: " lost[k] " (" drops[k] ")"
                c = c (j > 1 ? ", " : "") cpu[k] " s"
            }
            note = (r in counters) ? "; agent " counters[r] : ""
            printf "| %s | %s/s | %s%s | %s | %.1f MiB |\n", r, best[r], l, note, c, rss[r] / 1024
        }
    }' "$RESULTS"
fi
