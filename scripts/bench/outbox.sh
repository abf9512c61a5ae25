#!/usr/bin/env bash
# Outbox benchmark: messages per second appended to and drained from the
# agent's disk outbox, fsyncs per second at those rates, and the resident
# memory of a full in-memory outbox of the default size.
#
#   ./scripts/bench/outbox.sh [--messages 100000] [--seconds 10] [--dir /var/tmp]
#
# Method (agent/examples/outbox_bench.rs, built with the agent's release
# profile: opt-level "z", fat LTO, as shipped):
#  1. For each fsync interval (the default 5000 ms, 1000 ms, and 0 = flush
#     as soon as anything was written), a fresh disk outbox in --dir:
#     - append: N pushes of 300-1500 byte payloads (60 % log, 30 % series,
#       5 % state, 5 % event) as fast as one thread can;
#     - drain: send and acknowledge all N (a broker that acks at once);
#     - steady: push and drain together for --seconds;
#     - paced: 50 pushes per second (a busy site) for --seconds.
#     fsync jobs run on their own thread when due, as the agent's
#     spawn_blocking will. Use a --dir on the disk you care about (the
#     default /var/tmp is usually the root filesystem, not tmpfs).
#  2. rss: a memory-only outbox with default settings (2 MiB) is filled
#     until the first drop; VmRSS before and after, for 300-1500 byte and
#     for 64 KiB log-batch-sized payloads.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

MESSAGES=100000
SECONDS_PER_PHASE=10
BASE=/var/tmp
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) MESSAGES="$2"; shift 2 ;;
        --seconds) SECONDS_PER_PHASE="$2"; shift 2 ;;
        --dir) BASE="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs first"

log "Building (release, the agent's shipping profile)"
cargo build --release --locked -p sitewatch-agent --example outbox_bench 2>&1 | tail -1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BENCH="$TARGET_DIR/release/examples/outbox_bench"

WORK=$(mktemp -d "$BASE/sitewatch-outbox-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "Disk outbox in $WORK ($(df -T "$WORK" | awk 'NR==2 { print $2 " on " $1 }')), $(nproc) cores"

for fsync_ms in 5000 1000 0; do
    log "fsync_interval_ms = $fsync_ms"
    "$BENCH" throughput --dir "$WORK/outbox" --messages "$MESSAGES" \
        --fsync-ms "$fsync_ms" --seconds "$SECONDS_PER_PHASE" --paced-rate 50
done

log "Resident memory of a full in-memory outbox (default memory_max_bytes)"
"$BENCH" rss --payload-min 300 --payload-max 1500
"$BENCH" rss --payload-min 60000 --payload-max 66000
