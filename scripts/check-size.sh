#!/usr/bin/env bash
# Size budget of the site agent: prints each release binary's size (file
# bytes, and the `text` segment from binutils' `size`) and fails if the
# stripped aarch64 agent is at or over the budget.
#
# Budget: 2.5 MB = 2,500,000 bytes (decimal megabytes, SI; 2.5 MiB would be
# 2,621,440), measured as the file size of the stripped static binary, which
# is what the router's flash pays. `text` is printed too because file size
# moves in 64 KiB steps (segment alignment) while `text` shows real growth.
#
# Usage: ./scripts/check-size.sh [--dist DIR]   (after ./scripts/build-release.sh)
#   SITEWATCH_SIZE_BUDGET=BYTES   override the budget (default 2500000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

DIST=dist
while [ $# -gt 0 ]; do
    case "$1" in
        --dist) DIST="${2:?--dist needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done
BUDGET=${SITEWATCH_SIZE_BUDGET:-2500000}
BUDGETED=aarch64-unknown-linux-musl
TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl)

command -v size >/dev/null || ensure_debian_packages binutils
[ -d "$DIST" ] || die "$DIST does not exist: run ./scripts/build-release.sh first"

status=0
printf '%-34s %12s %12s  %s\n' target "file bytes" "text bytes" "budget"
for t in "${TARGETS[@]}"; do
    f="$DIST/sitewatch-agent-$t"
    if [ ! -f "$f" ]; then
        if [ "$t" = "$BUDGETED" ]; then
            printf '%-34s %12s %12s  %s\n' "$t" - - "FAIL: $f is missing (run ./scripts/build-release.sh)"
            status=1
        else
            printf '%-34s %12s %12s  %s\n' "$t" - - "not built"
        fi
        continue
    fi
    bytes=$(stat -c %s "$f")
    text=$(size "$f" 2>/dev/null | awk 'NR == 2 { print $1 }' || true)
    [ -n "$text" ] || text="?"
    verdict="-"
    if [ "$t" = "$BUDGETED" ]; then
        if [ "$bytes" -ge "$BUDGET" ]; then
            verdict="FAIL: $bytes >= $BUDGET bytes"
            status=1
        else
            verdict="ok: $((BUDGET - bytes)) bytes below $BUDGET ($((bytes * 100 / BUDGET)) % used)"
        fi
    fi
    printf '%-34s %12s %12s  %s\n' "$t" "$bytes" "$text" "$verdict"
done
if [ "$status" -ne 0 ]; then
    echo "size check FAILED: the stripped $BUDGETED agent must stay under $BUDGET bytes" >&2
else
    echo "size check passed"
fi
exit "$status"
