#!/usr/bin/env bash
# Bytes per crate of the aarch64 release agent, from the symbol table of an
# unstripped build made exactly like the shipped one (scripts/build-release.sh
# with SITEWATCH_KEEP_SYMBOLS=1, in its own target dir
# ${CARGO_TARGET_DIR:-target}/size-bench),
# and the stripped file size it would have. Prints a markdown table
# (scripts/bench/size-by-crate.py says how functions are attributed).
#
#   ./scripts/bench/size.sh [--stable] [--before UNSTRIPPED_BIN] [--keep FILE]
#     --stable   the stable-toolchain path (rustup's std, panic messages);
#                default: the build-std path (what dist/ ships)
#     --before   a column for an older unstripped build, and the change
#     --keep     copy the unstripped binary to FILE (a later --before)
#
# One aarch64 fat-LTO build: about 5 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

STABLE=() BEFORE='' KEEP=''
while [ $# -gt 0 ]; do
    case "$1" in
        --stable) STABLE=(--stable); shift ;;
        --before) BEFORE="${2:?--before needs a file}"; shift 2 ;;
        --keep) KEEP="${2:?--keep needs a file}"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done
if ! command -v llvm-nm >/dev/null || ! command -v llvm-cxxfilt >/dev/null; then ensure_debian_packages llvm; fi
T=aarch64-unknown-linux-musl
DIR="${CARGO_TARGET_DIR:-$PWD/target}/size-bench"
OUT="$DIR/dist"
SITEWATCH_KEEP_SYMBOLS=1 CARGO_TARGET_DIR="$DIR" \
    ./scripts/build-release.sh ${STABLE[@]+"${STABLE[@]}"} --out "$OUT" --target "$T" >&2
BIN="$OUT/sitewatch-agent-$T"
llvm-objcopy --strip-all "$BIN" "$BIN.stripped"
[ -n "$KEEP" ] && cp "$BIN" "$KEEP"
echo "$T, $([ ${#STABLE[@]} -gt 0 ] && echo "stable path" || echo "build-std path"): $(stat -c %s "$BIN.stripped") bytes stripped"
echo
if [ -n "$BEFORE" ]; then
    python3 scripts/bench/size-by-crate.py "$BEFORE" "$BIN"
else
    python3 scripts/bench/size-by-crate.py "$BIN"
fi
