#!/usr/bin/env bash
# Live view benchmark: sitewatch-live (release-fast) against Debian's
# ffmpeg remuxing the same fixture stream to HLS, in the same run.
#
#   ./scripts/bench/live.sh [--streams 16] [--rounds 3] [--seconds 20]
#
# Reports:
#  - time from the playlist request to the playlist (first segment
#    complete), median of --rounds fresh sessions (each waits for the
#    previous one to close when idle), for /cam1 (H.264, 2 s GOP);
#  - the same for `ffmpeg -rtsp_transport tcp -i URL -c copy -f hls
#    -hls_segment_type fmp4 -hls_time 1`: from start to the playlist
#    file listing its first segment;
#  - with --streams cameras open at once (a viewer polling each playlist
#    every second), sitewatch-live's CPU seconds per stream per minute
#    and its resident memory, next to one ffmpeg process per stream.
# The fixture's encoders run on the same machine and compete for the
# CPU; the figures are for this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

STREAMS=16 ROUNDS=3 SECONDS_OPEN=20
while [ $# -gt 0 ]; do
    case "$1" in
        --streams) STREAMS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --seconds) SECONDS_OPEN="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_debian_packages "${SITEWATCH_RTSP_PACKAGES[@]}" curl bc
log "Building sitewatch-live (release-fast)"
cargo build --profile release-fast --locked -p sitewatch-live 2>&1 | tail -1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
LIVE="$TARGET_DIR/release-fast/sitewatch-live"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

/usr/bin/python3 scripts/rtsp-test-server.py --port 0 >"$WORK/server.out" 2>"$WORK/server.err" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q READY "$WORK/server.out" && break; sleep 0.1; done
PORT=$(sed -n 's/^READY port=\([0-9]*\).*/\1/p' "$WORK/server.out")
[ -n "$PORT" ] || die "the RTSP test server did not start: $(cat "$WORK/server.err")"
URL="rtsp://127.0.0.1:$PORT/cam1"

HTTP=$(free_port)
TOKEN=bench-token-0123456789
echo "$TOKEN" >"$WORK/token"
{
    echo "[http]"
    echo "listen = \"127.0.0.1:$HTTP\""
    echo "[postgres]"
    echo "url = \"postgresql://bench@127.0.0.1:1/bench\""
    echo "[probe]"
    echo "interval_secs = 0"
    echo "[limits]"
    echo "sessions = $STREAMS"
    echo "idle_secs = 8"
    echo "[auth]"
    echo "token_file = \"$WORK/token\""
    echo "[[sites]]"
    echo "site = \"bench\""
    echo "host = \"127.0.0.1\""
    echo "port = $PORT"
    echo "max_sessions = $STREAMS"
    for i in $(seq 1 "$STREAMS"); do
        printf '[[sites.cameras]]\ncamera = "cam%s"\npath = "/cam1"\n' "$i"
    done
} >"$WORK/live.toml"
"$LIVE" --config "$WORK/live.toml" 2>"$WORK/live.err" &
LIVE_PID=$!
PIDS+=($LIVE_PID)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

log "Time to first playlist: sitewatch-live, $ROUNDS fresh sessions"
for _ in $(seq 1 "$ROUNDS"); do
    t0=$(now)
    curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP/live/bench/cam1/index.m3u8" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc
    sleep 10 # the session closes after idle_secs = 8
done >"$WORK/live-ttfs"
LIVE_TTFS=$(median <"$WORK/live-ttfs")

log "Time to first playlist: ffmpeg -c copy -f hls, $ROUNDS runs"
for r in $(seq 1 "$ROUNDS"); do
    mkdir -p "$WORK/ff$r"
    t0=$(now)
    ffmpeg -nostdin -loglevel error -rtsp_transport tcp -i "$URL" -c copy -f hls \
        -hls_segment_type fmp4 -hls_time 1 -hls_list_size 6 -hls_flags delete_segments \
        "$WORK/ff$r/out.m3u8" &
    FF=$!
    until grep -qs '\.m4s' "$WORK/ff$r/out.m3u8"; do sleep 0.02; done
    t1=$(now)
    kill "$FF"; wait "$FF" 2>/dev/null || true
    echo "$t1 - $t0" | bc
done >"$WORK/ff-ttfs"
FF_TTFS=$(median <"$WORK/ff-ttfs")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

log "$STREAMS streams open for ${SECONDS_OPEN}s: sitewatch-live"
# One viewer per camera polling its playlist (which keeps the session
# open); `wait` on the curls only (a bare `wait` would wait for the
# server and sitewatch-live too).
poll_all() {
    local pids=() i
    for i in $(seq 1 "$STREAMS"); do
        curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP/live/bench/cam$i/index.m3u8" >/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}" || true
}
poll_all
sleep 2
c0=$(cpu_ticks "$LIVE_PID")
end=$(( $(date +%s) + SECONDS_OPEN ))
while [ "$(date +%s)" -lt "$end" ]; do
    poll_all
    sleep 1
done
c1=$(cpu_ticks "$LIVE_PID")
LIVE_RSS=$(rss_kb "$LIVE_PID")
poll_all
OPEN=$(curl -fs "http://127.0.0.1:$HTTP/metrics" | awk '/^sitewatch_live_sessions_open / {print $2}')
FAILED=$(grep -c "Live session failed" "$WORK/live.err" || true)
[ "$FAILED" -eq 0 ] || { log "sessions failed:"; grep "Live session failed" "$WORK/live.err" | tail -3 >&2; }
LIVE_CPU=$(echo "scale=3; ($c1 - $c0) / $HZ / $STREAMS * 60 / $SECONDS_OPEN" | bc)

log "$STREAMS streams for ${SECONDS_OPEN}s: one ffmpeg each"
FFS=()
for i in $(seq 1 "$STREAMS"); do
    mkdir -p "$WORK/ffs$i"
    ffmpeg -nostdin -loglevel error -rtsp_transport tcp -i "$URL" -c copy -f hls \
        -hls_segment_type fmp4 -hls_time 1 -hls_list_size 6 -hls_flags delete_segments \
        "$WORK/ffs$i/out.m3u8" &
    FFS+=($!)
done
sleep 4
f0=0; for p in "${FFS[@]}"; do f0=$((f0 + $(cpu_ticks "$p"))); done
sleep "$SECONDS_OPEN"
f1=0; FF_RSS=0
for p in "${FFS[@]}"; do f1=$((f1 + $(cpu_ticks "$p"))); FF_RSS=$((FF_RSS + $(rss_kb "$p"))); done
for p in "${FFS[@]}"; do kill "$p" 2>/dev/null || true; done
FF_CPU=$(echo "scale=3; ($f1 - $f0) / $HZ / $STREAMS * 60 / $SECONDS_OPEN" | bc)

cat <<EOF

| | sitewatch-live | ffmpeg -c copy -f hls |
|---|---|---|
| time to first playlist (median of $ROUNDS, /cam1, 2 s GOP) | ${LIVE_TTFS} s | ${FF_TTFS} s (hls_time 1) |
| CPU per stream (s per minute), $STREAMS streams | ${LIVE_CPU} | ${FF_CPU} |
| resident memory, $STREAMS streams | $((LIVE_RSS / 1024)) MiB (one process; sessions open: ${OPEN}, failed: ${FAILED}) | $((FF_RSS / 1024)) MiB ($STREAMS processes) |
EOF
