#!/usr/bin/env bash
# Agent memory next to collectd, both running their steady job for the
# same minutes on the same machine, publishing to the same throwaway
# mosquitto:
#   - sitewatch-agent (release build): 16 cameras probed (the GStreamer RTSP
#     fixture, every 60 s, 4 at once), 100 syslog lines/s over UDP, 4 mounts
#     reported every 60 s, heartbeat every 30 s, in-memory outbox;
#   - collectd (Debian's collectd-core): df (the same 4 mounts), uptime,
#     memory and load, written to the broker by its mqtt plugin every 10 s.
# RSS (VmRSS) of each process is sampled every 5 s; the table shows the
# RSS after the warm-up (1 min), at the end, the peak (VmHWM) and CPU
# seconds. collectd does less (no RTSP, no syslog): the comparison is what
# a gateway pays for each daemon, not work per byte.
#
#   ./scripts/bench/memory.sh [--minutes 10] [--markdown] [--agent PATH]
#
# The agent measured is what ships: the static, stripped musl build of
# scripts/build-release.sh for x86_64 (built into target/bench-dist unless
# --agent names a binary). A glibc `cargo build --release` binary maps
# libc and ld.so too and shows about 1 MiB more file-backed RSS.
# The fixture's encoders run on this machine too; the figures are x86_64
# (an aarch64 gateway's page size and code size differ slightly).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

MINUTES=10 MARKDOWN=0 AGENT=
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) AGENT="$2"; shift 2 ;;
        --minutes) MINUTES="$2"; shift 2 ;;
        --markdown) MARKDOWN=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done
ensure_debian_packages "${SITEWATCH_RTSP_PACKAGES[@]}" collectd-core mosquitto
if [ -z "$AGENT" ]; then
    log "Building the shipping agent (static musl, x86_64)"
    ./scripts/build-release.sh --out target/bench-dist --target x86_64-unknown-linux-musl >&2
    AGENT=target/bench-dist/sitewatch-agent-x86_64-unknown-linux-musl
fi
[ -x "$AGENT" ] || die "no agent binary at $AGENT"
AGENT=$(realpath "$AGENT")
COLLECTD=$(command -v collectd || echo /usr/sbin/collectd)

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

MQTT_PORT=$(free_port)
PIDS+=("$(start_throwaway_mosquitto "$WORK" "$MQTT_PORT")")

/usr/bin/python3 scripts/rtsp-test-server.py --port 0 >"$WORK/server.out" 2>"$WORK/server.err" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q READY "$WORK/server.out" && break; sleep 0.1; done
RTSP_PORT=$(sed -n 's/^READY port=\([0-9]*\).*/\1/p' "$WORK/server.out")
[ -n "$RTSP_PORT" ] || die "the RTSP test server did not start: $(cat "$WORK/server.err")"

SYSLOG_PORT=$(free_port)
MOUNTS='"/", "/tmp", "/dev/shm", "/run"'
{
    echo 'site_id = "bench-memory"'
    echo '[mqtt]'
    echo "url = \"mqtt://127.0.0.1:$MQTT_PORT\""
    echo '[heartbeat]'
    echo 'interval_secs = 30'
    echo '[disk]'
    echo 'interval_secs = 60'
    echo "mounts = [$MOUNTS]"
    echo '[syslog]'
    echo "udp = [\"127.0.0.1:$SYSLOG_PORT\"]"
    echo 'tcp = []'
    echo '[rtsp]'
    echo 'interval_secs = 60'
    echo 'duration_secs = 5'
    echo 'max_concurrent = 4'
    for i in $(seq 1 16); do
        printf '[[rtsp.camera]]\nname = "cam%02d"\nurl = "rtsp://127.0.0.1:%s/cam1"\nmin_fps = 5\n' "$i" "$RTSP_PORT"
    done
} >"$WORK/agent.toml"
"$AGENT" check --config "$WORK/agent.toml" >"$WORK/check.txt" 2>&1 || {
    cat "$WORK/check.txt"; die "the benchmark's agent config does not pass check"; }

cat >"$WORK/collectd.conf" <<CONF
Hostname "bench-memory"
FQDNLookup false
Interval 10
BaseDir "$WORK/collectd"
PIDFile "$WORK/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel warning
  File "$WORK/collectd.log"
</Plugin>
LoadPlugin df
LoadPlugin uptime
LoadPlugin memory
LoadPlugin load
LoadPlugin mqtt
<Plugin df>
  MountPoint "/"
  MountPoint "/tmp"
  MountPoint "/dev/shm"
  MountPoint "/run"
  IgnoreSelected false
</Plugin>
<Plugin mqtt>
  <Publish "bench">
    Host "127.0.0.1"
    Port $MQTT_PORT
    ClientId "collectd-bench"
    QoS 1
    Prefix "collectd"
  </Publish>
</Plugin>
CONF
mkdir -p "$WORK/collectd"
[ -f /usr/lib/collectd/mqtt.so ] || die "collectd-core has no mqtt plugin here (/usr/lib/collectd/mqtt.so)"

# What each daemon published, to show the workload ran.
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t 'sitewatch/v1/#' -t 'collectd/#' -v \
    >"$WORK/published" 2>/dev/null &
PIDS+=($!)

log "Starting the agent and collectd for $MINUTES min"
"$AGENT" --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
"$COLLECTD" -f -C "$WORK/collectd.conf" >"$WORK/collectd.out" 2>&1 &
COLLECTD_PID=$!
PIDS+=("$COLLECTD_PID")

# 100 syslog lines/s, RFC 3164 as NVRs send them.
/usr/bin/python3 - "$SYSLOG_PORT" "$MINUTES" >"$WORK/sender.out" 2>&1 <<'PY' &
import socket, sys, time
port, minutes = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + minutes * 60
n = 0
start = time.monotonic()
while time.monotonic() < end:
    n += 1
    line = f"<30>Dec  6 12:00:00 nvr-1 record[42]: channel {n % 16} motion event {n}"
    s.sendto(line.encode(), ("127.0.0.1", port))
    time.sleep(max(0.0, start + n / 100 - time.monotonic()))
print(n)
PY
PIDS+=($!)

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
field_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }

: >"$WORK/samples"
END=$(( $(date +%s) + MINUTES * 60 ))
WARM=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt "$END" ]; do
    for p in "$AGENT_PID" "$COLLECTD_PID"; do
        kill -0 "$p" 2>/dev/null || die "process $p died: $(tail -5 "$WORK/agent.log" "$WORK/collectd.log" 2>/dev/null)"
    done
    echo "$(date +%s) $(rss_kb "$AGENT_PID") $(rss_kb "$COLLECTD_PID")" >>"$WORK/samples"
    sleep 5
done
A_END=$(rss_kb "$AGENT_PID") C_END=$(rss_kb "$COLLECTD_PID")
A_HWM=$(hwm_kb "$AGENT_PID") C_HWM=$(hwm_kb "$COLLECTD_PID")
A_CPU=$(cpu_s "$AGENT_PID") C_CPU=$(cpu_s "$COLLECTD_PID")
# VmRSS = RssAnon (the daemon's own heap and stacks) + RssFile (mapped
# binary and shared libraries: collectd's libc and plugins, the agent's
# static text) + RssShmem.
A_ANON=$(field_kb "$AGENT_PID" RssAnon) C_ANON=$(field_kb "$COLLECTD_PID" RssAnon)
A_FILE=$(field_kb "$AGENT_PID" RssFile) C_FILE=$(field_kb "$COLLECTD_PID" RssFile)
A_WARM=$(awk -v w="$WARM" '$1 >= w {print $2; exit}' "$WORK/samples")
C_WARM=$(awk -v w="$WARM" '$1 >= w {print $3; exit}' "$WORK/samples")
A_MAX=$(awk '$2 > m {m = $2} END {print m + 0}' "$WORK/samples")
C_MAX=$(awk '$3 > m {m = $3} END {print m + 0}' "$WORK/samples")

# Messages per kind (sitewatch/v1/SITE/KIND/...) and collectd's count.
sleep 2
KINDS=$(awk '{print $1}' "$WORK/published" | awk -F/ '$1 == "sitewatch" {print $4} $1 == "collectd" {print "collectd"}' \
    | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')
LINES_SENT=$(cat "$WORK/sender.out" 2>/dev/null || echo "?")
RATIO_END=$(awk -v a="$A_END" -v c="$C_END" 'BEGIN {printf "%.2f", (c > 0) ? a / c : 0}')
RATIO_HWM=$(awk -v a="$A_HWM" -v c="$C_HWM" 'BEGIN {printf "%.2f", (c > 0) ? a / c : 0}')

if [ "$MARKDOWN" = 1 ]; then
    echo "Memory, $MINUTES min, $(nproc) CPUs, $(date -u +%F), agent $(basename "$AGENT") ($(stat -c %s "$AGENT") B): 16 cameras probed every 60 s + 100 syslog lines/s + 4 mounts; collectd: df (4 mounts), uptime, memory, load via mqtt every 10 s"
    echo
    echo "| daemon | RSS after 1 min (KiB) | RSS at end (KiB) | of which anon / file (KiB) | max sampled RSS (KiB) | peak VmHWM (KiB) | CPU s |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| sitewatch-agent | $A_WARM | $A_END | $A_ANON / $A_FILE | $A_MAX | $A_HWM | $A_CPU |"
    echo "| collectd $("$COLLECTD" -h 2>&1 | sed -n 's/^collectd \([0-9.]*[0-9]\).*/\1/p' | head -1) | $C_WARM | $C_END | $C_ANON / $C_FILE | $C_MAX | $C_HWM | $C_CPU |"
    echo "| ratio agent / collectd | | $RATIO_END | | | $RATIO_HWM | |"
else
    echo
    echo "Memory benchmark ($MINUTES min, $(nproc) CPUs, $(date -u +%FT%TZ))"
    printf '  %-34s %10s %10s\n' "" "agent" "collectd"
    printf '  %-34s %10s %10s\n' "RSS after 1 min (KiB)" "$A_WARM" "$C_WARM"
    printf '  %-34s %10s %10s\n' "RSS at end (KiB)" "$A_END" "$C_END"
    printf '  %-34s %10s %10s\n' "  of which anon (KiB)" "$A_ANON" "$C_ANON"
    printf '  %-34s %10s %10s\n' "  of which file-backed (KiB)" "$A_FILE" "$C_FILE"
    printf '  %-34s %10s %10s\n' "max sampled RSS (KiB)" "$A_MAX" "$C_MAX"
    printf '  %-34s %10s %10s\n' "peak VmHWM (KiB)" "$A_HWM" "$C_HWM"
    printf '  %-34s %10s %10s\n' "CPU seconds" "$A_CPU" "$C_CPU"
    printf '  %-34s %s (end), %s (peak)\n' "ratio agent / collectd" "$RATIO_END" "$RATIO_HWM"
fi
echo
echo "published: $KINDS(syslog lines sent: $LINES_SENT)"
