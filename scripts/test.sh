#!/usr/bin/env bash
# Runs every check and test of the workspace, the way CI does:
#   format, clippy (warnings are errors), then all tests against real
#   mosquitto and PostgreSQL instances that the tests start themselves on
#   free ports (never the machine's own services).
#
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

ensure_system_packages
export PATH="$PATH:/usr/sbin:$(pg_bindir)"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
# Two test threads per binary: each test starts its own services, and the
# reference machine has 2 cores.
LOG=$(mktemp /tmp/sitewatch-test.XXXXXX)
trap 'rm -f "$LOG"' EXIT
set +e
cargo test --workspace --locked -- --test-threads="${SITEWATCH_TEST_THREADS:-2}" "$@" 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "\nsummary: %d passed, %d failed, %d skipped\n", p, f, s }' "$LOG"
exit "$STATUS"
