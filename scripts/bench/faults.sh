#!/usr/bin/env bash
# Fault-injection benchmark: the scenarios of e2e/tests/faults.rs (real
# agent and bridge binaries, real mosquitto and PostgreSQL, the Loki
# stand-in, a TCP proxy as the site uplink) with larger numbers, and a
# table of what each one sent, stored, duplicated, lost and how long the
# backlog took to be stored after the fault ended.
#
#   ./scripts/bench/faults.sh [--scale 5] [--outage-secs 300] [--filter s4]
#
#   --scale N        multiplies the numbered syslog lines of every scenario
#                    (bursts of 3000-6000 x N lines; streams of 50-100 x N
#                    lines per second)
#   --outage-secs S  how long scenario 4 blackholes the uplink (default
#                    300: minutes, far beyond the 5 s keep-alive)
#   --filter F       only scenarios whose test name contains F
#   --from-log FILE  only print the table of an earlier run's log
#
# Binaries: the agent in its shipping profile (release: opt-level "z",
# fat LTO), the bridge in release-fast (as central servers run it); the
# test driver itself stays a debug build (it only sends and counts).
# Scenarios run one at a time so their timings do not compete for the
# two cores.
#
# Columns: sent/stored/duplicated/lost are messages (site, boot, seq) in
# PostgreSQL; dropped is what the agent counted in its heartbeat (only
# scenario 6, where lost must stay 0 and gaps == dropped); lines_* are the
# numbered syslog lines in Loki; recover is fault end -> backlog stored.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

SCALE=5
OUTAGE=300
FILTER=""
FROM_LOG=""
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) SCALE="$2"; shift 2 ;;
        --outage-secs) OUTAGE="$2"; shift 2 ;;
        --filter) FILTER="$2"; shift 2 ;;
        --from-log) FROM_LOG="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
# The table of a run's log. One test at a time with --nocapture puts
# "test NAME ... " and the test's own lines on one line, so match anywhere.
table() {
    printf '\n%-48s %7s %7s %5s %5s %7s %9s %9s %5s %5s %9s\n' \
        scenario sent stored dup lost dropped lines_sent lines_stor l_dup l_lost recover
    grep -o 'FAULT [^ ]*: sent=.*' "$1" | sed 's/^FAULT //' | while IFS= read -r l; do
        name=${l%%: *}
        field() { printf '%s' "$l" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
        printf '%-48s %7s %7s %5s %5s %7s %9s %9s %5s %5s %9s\n' "$name" \
            "$(field sent)" "$(field stored)" "$(field duplicated)" "$(field lost)" \
            "$(field dropped)" "$(field lines_sent)" "$(field lines_stored)" \
            "$(field lines_duplicated)" "$(field lines_lost)" "$(field recover)"
    done
    grep -o 'FAULT 7_[^ ]*: messages received before the kill.*' "$1" | sed 's/^FAULT /  /' || true
    echo
    grep -E '^test result:|^    s[0-9]' "$1" || true
}

if [ -n "$FROM_LOG" ]; then
    table "$FROM_LOG"
    exit 0
fi

command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs first"
ensure_system_packages

log "Building the agent (release) and the bridge (release-fast)"
cargo build --release --locked -p sitewatch-agent --bin sitewatch-agent 2>&1 | tail -1
cargo build --profile release-fast --locked -p sitewatch-bridge --bin sitewatch-bridge 2>&1 | tail -1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export SITEWATCH_AGENT_BIN="$TARGET_DIR/release/sitewatch-agent"
export SITEWATCH_BRIDGE_BIN="$TARGET_DIR/release-fast/sitewatch-bridge"
export SITEWATCH_FAULTS_SCALE="$SCALE"
export SITEWATCH_FAULTS_OUTAGE_SECS="$OUTAGE"

LOG=$(mktemp /tmp/sitewatch-bench-faults.XXXXXX.log)
log "Running the scenarios (scale $SCALE, outage $OUTAGE s); log in $LOG"
set +e
# Scenario 4 alone lasts --outage-secs plus its drain.
cargo test --locked -p sitewatch-e2e --test faults -- --nocapture --test-threads=1 \
    ${FILTER:+"$FILTER"} >"$LOG" 2>&1
STATUS=$?
set -e

table "$LOG"
if [ "$STATUS" -ne 0 ]; then
    die "some scenarios failed; see $LOG"
fi
