#!/usr/bin/env bash
# Runs every check and test, the way CI does:
#   1. format, clippy (warnings are errors);
#   2. all cargo tests against real mosquitto, PostgreSQL, syslog senders and
#      the Loki stand-in, which the tests start themselves on free ports
#      (never the machine's own services);
#   3. the gateway builds: static aarch64/armv7/x86_64 agents into dist/,
#      the stable-toolchain aarch64 agent into dist-stable/, both size
#      budgets, the ARM binaries under qemu-user against a real
#      broker, the systemd/OpenWrt packaging tests, and the central stack
#      (scripts/test-deploy.sh: compose file, bridge image);
#   4. a short fuzzing pass over every cargo-fuzz target.
# Ends with one "summary: N passed, N failed, N skipped" line.
#
# Usage: ./scripts/test.sh [extra cargo test args]
#   SITEWATCH_SKIP_GATEWAY=1 skips step 3 (quicker local runs; CI never sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

ensure_system_packages
PG_BIN=$(pg_bindir)
export PATH="$PATH:/usr/sbin:$PG_BIN"

log "cargo fmt --check"
cargo fmt --all -- --check
# The fuzz crate is outside the workspace (cargo fuzz wants it so).
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
# Two test threads per binary: each test starts its own services, and the
# reference machine has 2 cores.
LOG=$(mktemp /tmp/sitewatch-test.XXXXXX)
trap 'rm -f "$LOG"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast -- --test-threads="${SITEWATCH_TEST_THREADS:-2}" "$@" 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}

# 4. A short fuzzing pass (5 s per target) over every parser that takes
#    outside input; scripts/fuzz.sh N runs the longer campaign. cargo fuzz
#    needs a nightly toolchain: without one this step says so loudly and
#    counts as skipped (the machines this project runs on have one).
if rustup run nightly rustc --version >/dev/null 2>&1; then
    log "scripts/fuzz.sh 5 (short pass)"
    ./scripts/fuzz.sh 5 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "scripts/fuzz.sh: 0 passed, 1 failed" | tee -a "$LOG"
        STATUS=$rc
    else
        echo "scripts/fuzz.sh: 1 passed, 0 failed" | tee -a "$LOG"
    fi
else
    echo "WARNING: no nightly toolchain: the fuzzing short pass did NOT run" | tee -a "$LOG"
    echo "scripts/fuzz.sh: 0 passed, 0 failed, 1 skipped" | tee -a "$LOG"
fi

if [ "${SITEWATCH_SKIP_GATEWAY:-0}" != 1 ]; then
    # Each step runs even if an earlier one failed, so one run shows all.
    # The stable-toolchain aarch64 agent (rustup's std, panic messages) has
    # its own size budget: one more aarch64 release build, ~5 min on 2 cores.
    for step in build-release.sh "build-release.sh --stable --out dist-stable --target aarch64-unknown-linux-musl" \
        check-size.sh test-cross.sh test-packaging.sh test-deploy.sh; do
        log "scripts/$step"
        # shellcheck disable=SC2086 # the step's own arguments
        ./scripts/$step 2>&1 | tee -a "$LOG"
        rc=${PIPESTATUS[0]}
        if [ "$rc" -ne 0 ]; then
            echo "scripts/${step%% *}: 0 passed, 1 failed" | tee -a "$LOG"
            STATUS=$rc
        fi
    done
    # SMART ioctl layouts, CDBs and parsers as unit tests on the target
    # (aarch64 under qemu-user; armv7's struct sizes are also asserted at
    # compile time by its release build above).
    log "scripts/test-cross.sh --unit-tests (smart::, aarch64)"
    SITEWATCH_CROSS_TEST_ARGS="smart::" ./scripts/test-cross.sh --unit-tests \
        --target aarch64-unknown-linux-musl 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "scripts/test-cross.sh --unit-tests: 0 passed, 1 failed" | tee -a "$LOG"
        STATUS=$rc
    fi
fi
set -e

# CI keeps only the tail of this output: name every failure (and the first
# lines of each failed cargo test's output) right above the summary.
# A build that fails (error[E...]: / error: could not compile) has no FAILED
# test line, so its first error lines are listed too.
failures=$(grep -E '^error(\[E[0-9]+\])?: |^test .* \.\.\. FAILED$|^[a-z/._-]+: [0-9]+ passed, [1-9][0-9]* failed|^ *([a-z0-9]+: )?FAIL  |FAILED \(exit |^fuzz\.sh: ([a-z_]+ FAILED|  |[a-z_]+ input )' "$LOG" || true)
if [ -n "$failures" ]; then
    printf '\nfailures:\n%s\n' "$failures"
    awk '
    /^---- .* stdout ----$/ { show = 1; n = 0; print; next }
    show && (/^---- / || /^failures:$/ || /^test result:/) { show = 0 }
    show && n < 25 { print "    " $0; n++ }' "$LOG"
fi

# One closing line for the whole run: cargo's per-binary "test result:"
# lines plus the scripts' "N passed, N failed[, N skipped]" lines.
awk '
/^test result:/ {
    for (i = 1; i <= NF; i++) {
        if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1)
    }
    next
}
/^(test-cross|test-packaging|scripts\/[a-z.-]+): [0-9]+ passed, [0-9]+ failed/ {
    for (i = 1; i <= NF; i++) {
        if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^skipped/) s += $(i-1)
    }
}
END { printf "\nsummary: %d passed, %d failed, %d skipped\n", p, f, s }' "$LOG"
exit "$STATUS"
