#!/usr/bin/env bash
# RTSP probe benchmark: 32 concurrent probes of the fixture server's
# H.264 stream by the release agent (`sitewatch-agent probe --config`, the
# same probe code the daemon runs), and time to verdict for one healthy
# stream next to ffprobe (Debian's ffmpeg) on the same stream in the same
# run.
#
#   ./scripts/bench/rtsp.sh [--probes 32] [--duration 8] [--rounds 5]
#
# Reports:
#  - peak resident memory of the agent (GNU time's "Maximum resident set
#    size") while it runs all probes at once (max_concurrent = probes);
#  - the agent's CPU seconds (user + sys) divided by the number of probes;
#  - per probe class counts (all should be ok; a loaded machine may show
#    low_fps because the server's encoders fall behind);
#  - median wall time to a verdict for /cam1: `probe --duration 1` (DNS,
#    connect, DESCRIBE/SETUP/PLAY, 1 s of frames, TEARDOWN) and its
#    time to first frame, against `ffprobe -show_streams` (which returns
#    once it has the stream parameters; it judges nothing).
# The fixture server runs on the same machine and its encoders compete
# for the CPU: the figures are for this machine, not a router.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

PROBES=32 DURATION=8 ROUNDS=5
while [ $# -gt 0 ]; do
    case "$1" in
        --probes) PROBES="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_debian_packages "${SITEWATCH_RTSP_PACKAGES[@]}" time
log "Building the agent (release)"
cargo build --release --locked -p sitewatch-agent 2>&1 | tail -1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
AGENT="$TARGET_DIR/release/sitewatch-agent"

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

/usr/bin/python3 scripts/rtsp-test-server.py --port 0 >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 1 100); do grep -q READY "$WORK/server.out" && break; sleep 0.1; done
PORT=$(sed -n 's/^READY port=\([0-9]*\).*/\1/p' "$WORK/server.out")
[ -n "$PORT" ] || die "the RTSP test server did not start: $(cat "$WORK/server.err")"
URL="rtsp://127.0.0.1:$PORT/cam1"

{
    echo "site_id = \"bench\""
    echo "[mqtt]"
    echo "url = \"mqtt://127.0.0.1:1\""
    echo "[rtsp]"
    echo "duration_secs = $DURATION"
    echo "max_concurrent = $PROBES"
    echo "step_timeout_secs = 10"
    for i in $(seq 1 "$PROBES"); do
        printf '[[rtsp.camera]]\nname = "cam%02d"\nurl = "%s"\nmin_fps = 10\n' "$i" "$URL"
    done
} >"$WORK/agent.toml"

log "$PROBES concurrent probes of $URL for $DURATION s"
/usr/bin/time -v -o "$WORK/time.txt" "$AGENT" probe --config "$WORK/agent.toml" --json >"$WORK/probes.json" || true
RSS_KB=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
USER=$(sed -n 's/.*User time (seconds): //p' "$WORK/time.txt")
SYS=$(sed -n 's/.*System time (seconds): //p' "$WORK/time.txt")
WALL=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/time.txt")
CLASSES=$(sed -n 's/.*"class":"\([a-z_]*\)".*/\1/p' "$WORK/probes.json" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')
FRAMES=$(sed -n 's/.*"frames":\([0-9]*\).*/\1/p' "$WORK/probes.json" | awk '{s+=$1} END {print s+0}')

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now_ms() { date +%s%3N; }
: >"$WORK/agent_ms"; : >"$WORK/ffprobe_ms"; : >"$WORK/ttff_ms"
log "Time to verdict, $ROUNDS rounds each: agent probe --duration 1 vs ffprobe"
for _ in $(seq 1 "$ROUNDS"); do
    t=$(now_ms)
    "$AGENT" probe "$URL" --duration 1 --json >"$WORK/one.json" || true
    echo $(( $(now_ms) - t )) >>"$WORK/agent_ms"
    sed -n 's/.*"ttff_ms":\([0-9]*\).*/\1/p' "$WORK/one.json" >>"$WORK/ttff_ms"
    t=$(now_ms)
    ffprobe -v error -rtsp_transport tcp -show_streams "$URL" >/dev/null 2>&1 || true
    echo $(( $(now_ms) - t )) >>"$WORK/ffprobe_ms"
done

echo
echo "RTSP probe benchmark ($(nproc) CPUs, $(date -u +%FT%TZ))"
printf '  %-44s %s\n' "concurrent probes" "$PROBES x $DURATION s of $URL"
printf '  %-44s %s\n' "verdicts" "$CLASSES"
printf '  %-44s %s\n' "frames received (all probes)" "$FRAMES"
printf '  %-44s %s\n' "agent wall time" "$WALL"
printf '  %-44s %s KB\n' "agent peak RSS" "$RSS_KB"
printf '  %-44s %s\n' "agent CPU s (user+sys)" "$(echo "$USER $SYS" | awk '{printf "%.2f", $1+$2}')"
printf '  %-44s %s\n' "agent CPU s per probe" "$(echo "$USER $SYS $PROBES" | awk '{printf "%.3f", ($1+$2)/$3}')"
printf '  %-44s %s ms\n' "median time to verdict, agent (--duration 1)" "$(median <"$WORK/agent_ms")"
printf '  %-44s %s ms\n' "median time to first frame, agent" "$(median <"$WORK/ttff_ms")"
printf '  %-44s %s ms\n' "median time to result, ffprobe -show_streams" "$(median <"$WORK/ffprobe_ms")"
