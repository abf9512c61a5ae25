#!/usr/bin/env bash
# Fuzzing campaign: runs every cargo-fuzz target in fuzz/ for a set time
# each and prints executions and findings per target.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60; CI's short pass uses a few seconds.
#   TARGET...           default: every target (`cargo +nightly fuzz list`).
#
# Each target runs with two corpus directories: fuzz/corpus/<target>
# (the working corpus, git-ignored; new inputs are written there) and
# fuzz/seeds/<target> (a small minimized corpus kept in git, read only).
# A crash, timeout or out-of-memory leaves its input in
# fuzz/artifacts/<target>/ and makes the script exit 1 after the table.
#
# Needs rustup; installs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`) when missing.
#
# Environment:
#   FUZZ_RUNS           stop a target after this many executions (libFuzzer
#                       -runs); SECONDS_PER_TARGET stays the upper bound. A long
#                       campaign: FUZZ_RUNS=10000000 scripts/fuzz.sh 7200
#   FUZZ_REPORT         also append the result table to this file
#   FUZZ_RSS_LIMIT_MB   libFuzzer -rss_limit_mb (default 2048)
#   FUZZ_TIMEOUT_SECS   libFuzzer -timeout for one input (default 10)
set -euo pipefail

die() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

secs=${1:-60}
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || die "SECONDS_PER_TARGET must be a positive integer, not '$secs'"
shift || true

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

command -v rustup >/dev/null 2>&1 ||
    die "rustup not found; cargo fuzz needs a nightly toolchain managed by rustup (https://rustup.rs)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing the nightly toolchain (rustup toolchain install nightly --profile minimal)" >&2
    rustup toolchain install nightly --profile minimal ||
        die "could not install the nightly toolchain; run: rustup toolchain install nightly"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked ||
        die "could not install cargo-fuzz; run: cargo install cargo-fuzz --locked"
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
[[ ${#targets[@]} -gt 0 ]] || die "no fuzz targets found"

echo "fuzz.sh: building ${#targets[@]} target(s)" >&2
cargo +nightly fuzz build ||
    die "cargo +nightly fuzz build failed"

logdir=$(mktemp -d /tmp/sitewatch-fuzz.XXXXXX)
rows=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t")
    [[ -d "seeds/$t" ]] && dirs+=("seeds/$t")
    log="$logdir/$t.log"
    echo "fuzz.sh: $t for up to ${secs}s${FUZZ_RUNS:+ or $FUZZ_RUNS runs} (log: $log)" >&2
    started=$(date +%s)
    set +e
    cargo +nightly fuzz run "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" \
        -timeout="${FUZZ_TIMEOUT_SECS:-10}" \
        -rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}" \
        ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n1)
    rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log" | tail -n1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    if [[ $rc -eq 0 ]]; then
        result=ok
    else
        failed=1
        art=$(grep -oE 'artifacts/[^ ]+' "$log" | tail -n1 || true)
        # The logged command line contains "-timeout=", so match libFuzzer's
        # own report lines only.
        kind=$(grep -oE 'ERROR: libFuzzer: [a-z-]+|panicked at|==[0-9]+== ERROR: [A-Za-z]+|ALARM: working on the last Unit' "$log" | head -n1 || true)
        [[ $kind == ALARM* ]] && kind="timeout (one input ran longer than ${FUZZ_TIMEOUT_SECS:-10}s)"
        result="FAILED (exit $rc${kind:+, $kind}${art:+, $art})"
        # CI keeps only its output: carry the finding itself, not just a
        # path to a temp file (the panic message and the input as base64).
        {
            echo "fuzz.sh: $t FAILED; the end of its log:"
            grep -v '^#[0-9]' "$log" | tail -n 25 | sed 's/^/fuzz.sh:   /'
            if [[ -n $art && -f $art ]]; then
                echo "fuzz.sh: $t input ($art) as base64: $(head -c 4096 "$art" | base64 -w0)"
            fi
        } >&2
    fi
    took=$(($(date +%s) - started))
    rows+=("$(printf '%-16s %8s %14s %10s %8s  %s' "$t" "${took}s" "${execs:-?}" "${rate:-?}" "$corpus" "$result")")
done

echo
{
    printf '%-16s %8s %14s %10s %8s  %s\n' target time executions exec/s corpus result
    for r in "${rows[@]}"; do
        echo "$r"
    done
} | if [[ -n ${FUZZ_REPORT:-} ]]; then tee -a "$FUZZ_REPORT"; else cat; fi
if [[ $failed -ne 0 ]]; then
    echo
    echo "fuzz.sh: FAILED: see the result column; logs in $logdir, inputs in fuzz/artifacts/." >&2
    echo "fuzz.sh: reproduce with: cd fuzz && cargo +nightly fuzz run TARGET ARTIFACT" >&2
    exit 1
fi
rm -rf "$logdir"
