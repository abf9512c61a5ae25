#!/usr/bin/env bash
# Builds the static, stripped sitewatch-agent release binaries for the site
# gateways and writes them, with SHA-256 checksums, into one folder:
#
#   dist/sitewatch-agent-aarch64-unknown-linux-musl       (primary: ARM64 routers, Pi 3/4/5)
#   dist/sitewatch-agent-armv7-unknown-linux-musleabihf   (32-bit ARM with hard float)
#   dist/sitewatch-agent-x86_64-unknown-linux-musl        (x86 mini PCs, NVR hosts)
#   dist/SHA256SUMS    (sha256sum -c SHA256SUMS)
#   dist/BUILDINFO     (version, commit, toolchain, how each std was built)
#
# Usage: ./scripts/build-release.sh [--stable] [--out DIR] [--target TRIPLE]...
#   --stable                         the stable-toolchain path: rustup's
#                                    prebuilt std, no RUSTC_BOOTSTRAP and no
#                                    -Z flag, panic=abort with messages (a
#                                    target without a prebuilt std fails)
#   SITEWATCH_AGENT_FEATURES="a,b"   build with these cargo features (default:
#                                    the crate's default features, i.e. what ships)
#   SITEWATCH_BUILD_STD_TOOLCHAIN=T  toolchain for -Zbuild-std targets
#                                    (default: the active one, with RUSTC_BOOTSTRAP=1)
#   SITEWATCH_FORCE_BUILD_STD=0      use rustup's prebuilt std where it exists
#                                    (default 1: std from source, for size)
#   SITEWATCH_RELEASE_PANIC=abort    keep panic messages (default
#                                    immediate-abort, see "Size" below)
#   SITEWATCH_KEEP_SYMBOLS=1         do not strip (scripts/bench/size.sh
#                                    counts bytes per crate from the symbols)
#   CARGO_TARGET_DIR                 honoured as usual
#
# How it links: cargo-zigbuild with zig from PyPI (`ziglang`), pinned in
# scripts/lib/common.sh and installed into a venv on first use. Why zig and
# not Debian's gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf:
#   - one tool for all three targets, no per-arch apt packages;
#   - zig ships musl libc and crt objects for every architecture. That is what
#     makes armv7 work where rustup has no prebuilt std for it: with
#     -Zbuild-std there is no self-contained musl from rustup either, and
#     Debian's gnueabihf gcc only brings glibc;
#   - measured 5 % smaller files than with the gnu linker (lld, zig's musl).
#   (The rustls crypto provider is ring, not aws-lc-rs: 0.5 MB smaller on
#   aarch64 and no cmake cross-build; see the workspace Cargo.toml.)
#
# Works on a fresh Debian/Ubuntu machine with rustup: installs what it needs
# (binutils for readelf, python3-venv, the pinned PyPI wheels, rustup targets,
# rust-src).
#
# Size (scripts/check-size.sh; bytes per crate in scripts/bench/README.md).
# Both paths, with stable flags only:
#   -Wl,-T,scripts/lib/no-eh-frame.ld        drops .eh_frame/.eh_frame_hdr:
#       DWARF unwind tables, which panic=abort never uses (a backtrace with
#       RUST_BACKTRACE=1 shows no frames; the panic message and file:line
#       stay). About 450 KB of the aarch64 agent.
#   --remap-path-prefix                      panic locations name
#       tokio-1.x/src/... and agent/src/..., not this machine's paths.
# The default path builds std from source for every target (-Zbuild-std,
# unstable: RUSTC_BOOTSTRAP=1) with
#   -Zbuild-std-features=optimize_for_size   std's own size-optimised paths
#   -Zlocation-detail=none                   no file:line strings for panics
#   -Cpanic=immediate-abort                  no panic formatting machinery
# The price of the last step: a panic (a bug; input paths never panic,
# their parsers are fuzzed) ends the process at once without a message.
# systemd and procd restart it; the journal/logd show the abort.
# SITEWATCH_RELEASE_PANIC=abort builds with messages for debugging.
# --stable is what a Rust user gets from a stable toolchain; CI builds it
# for aarch64 too (into dist-stable/) and checks its own budget.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
STABLE=0
for a in "$@"; do [ "$a" = --stable ] && STABLE=1; done
if [ "$STABLE" = 1 ]; then
    export SITEWATCH_FORCE_BUILD_STD=0
    RELEASE_PANIC=abort
else
    export SITEWATCH_FORCE_BUILD_STD=${SITEWATCH_FORCE_BUILD_STD:-1}
    RELEASE_PANIC=${SITEWATCH_RELEASE_PANIC:-immediate-abort}
fi
case "$RELEASE_PANIC" in
    immediate-abort) SIZE_RUSTFLAGS="-Zlocation-detail=none -Zunstable-options -Cpanic=immediate-abort" ;;
    abort) SIZE_RUSTFLAGS="-Zlocation-detail=none" ;;
    *) die "SITEWATCH_RELEASE_PANIC must be immediate-abort or abort" ;;
esac

ALL_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl)
OUT=dist
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --stable) shift ;;
        --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
        --target) TARGETS+=("${2:?--target needs a triple}"); shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs first"
command -v rustup >/dev/null || die "rustup not found: the cross targets are installed with rustup (https://rustup.rs)"
ensure_debian_packages binutils
ensure_zigbuild

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$TARGET_DIR" ] || die "cannot find cargo's target directory (cargo metadata failed?)"
PKGID=$(cargo pkgid -p sitewatch-agent)
VERSION=${PKGID##*[#@]}
FEATURE_ARGS=()
[ -n "${SITEWATCH_AGENT_FEATURES:-}" ] && FEATURE_ARGS=(--features "$SITEWATCH_AGENT_FEATURES")
ACTIVE_TC=$(rustup show active-toolchain | awk '{print $1}')
STD_TC=${SITEWATCH_BUILD_STD_TOOLCHAIN:-$ACTIVE_TC}

machine_of() {
    case "$1" in
        aarch64-*) echo AArch64 ;;
        armv7-*|arm-*) echo ARM ;;
        x86_64-*) echo X86-64 ;;
        *) echo "" ;;
    esac
}

# Static (no ELF interpreter, no shared libraries), stripped (no symbol
# table), and for the right CPU.
verify_binary() {
    local f=$1 t=$2 m
    m=$(machine_of "$t")
    [ -z "$m" ] || readelf -hW "$f" | grep -q "Machine:.*$m" || die "$f is not a $m binary"
    if readelf -lW "$f" | grep -q 'INTERP'; then die "$f is dynamically linked (has an ELF interpreter)"; fi
    if readelf -dW "$f" 2>/dev/null | grep -q '(NEEDED)'; then die "$f needs shared libraries"; fi
    if [ "${SITEWATCH_KEEP_SYMBOLS:-0}" != 1 ] && readelf -SW "$f" | grep -q '\.symtab'; then die "$f is not stripped"; fi
}

[ "${SITEWATCH_KEEP_SYMBOLS:-0}" = 1 ] && export CARGO_PROFILE_RELEASE_STRIP=false
mkdir -p "$OUT"
# A full build replaces the whole set, so no binary of an older commit stays
# next to the new ones.
[ ${#TARGETS[@]} -eq ${#ALL_TARGETS[@]} ] && rm -f "$OUT"/sitewatch-agent-* "$OUT/SHA256SUMS" "$OUT/BUILDINFO"

# Prebuilt std from rustup when it has one for the target; otherwise std is
# compiled from source (-Zbuild-std, see cargo_build_std in
# scripts/lib/common.sh). rustup's dist server lacks
# rust-std-armv7-unknown-linux-musleabihf on some machines (404), this one
# included. -Zbuild-std is unstable: RUSTC_BOOTSTRAP=1 lets the stable
# compiler accept it, with that same toolchain's rust-src, so all targets
# are built by one compiler version. Set SITEWATCH_BUILD_STD_TOOLCHAIN=nightly
# to use a nightly instead.
# Stable flags for every target and both paths (see "Size" above). Paths
# are remapped to the crate's own: registry sources to `tokio-1.x/...`,
# this checkout to `agent/...`.
REGISTRY_SRC="${CARGO_HOME:-$HOME/.cargo}/registry/src"
COMMON_RUSTFLAGS="-Clink-arg=-Wl,-T,$PWD/scripts/lib/no-eh-frame.ld --remap-path-prefix=$PWD/="
for d in "$REGISTRY_SRC"/*/; do
    [ -d "$d" ] && COMMON_RUSTFLAGS="$COMMON_RUSTFLAGS --remap-path-prefix=$d="
done
# std's generic code compiled into this build names rust-src's copy under
# the toolchain's local path in panic locations; rustup's prebuilt std
# names the same files /rustc/<commit>/library/...: one spelling, so the
# linker merges the two copies of each string (stable path: 2 KB).
RUST_SYSROOT=$(rustc --print sysroot)
RUST_COMMIT=$(rustc -vV | sed -n 's/^commit-hash: //p')
[ -n "$RUST_COMMIT" ] && [ -d "$RUST_SYSROOT/lib/rustlib/src/rust" ] \
    && COMMON_RUSTFLAGS="$COMMON_RUSTFLAGS --remap-path-prefix=$RUST_SYSROOT/lib/rustlib/src/rust/=/rustc/$RUST_COMMIT/"
BUILDINFO=()
for t in "${TARGETS[@]}"; do
    mode=$(rust_std_mode "$t")
    flags_var="CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
    [ "$STABLE" = 1 ] && [ "$mode" = build-std ] \
        && die "--stable: rustup has no prebuilt std for $t (rustup target add $t failed)"
    # The router targets, whose size is budgeted (check-size.sh), leave out
    # the default `discover` feature (ONVIF discovery, ~42 KB); x86_64 keeps
    # it, for an installer's laptop. SITEWATCH_AGENT_FEATURES=discover adds
    # it back anywhere.
    case "$t" in
        x86_64-*) TARGET_FEATURES=(); feats=default ;;
        *) TARGET_FEATURES=(--no-default-features); feats=none ;;
    esac
    [ -n "${SITEWATCH_AGENT_FEATURES:-}" ] && feats="$feats+$SITEWATCH_AGENT_FEATURES"
    args=(--release --locked -p sitewatch-agent --bin sitewatch-agent ${TARGET_FEATURES[@]+"${TARGET_FEATURES[@]}"} ${FEATURE_ARGS[@]+"${FEATURE_ARGS[@]}"})
    start=$SECONDS
    if [ "$mode" = build-std ]; then
        log "Building $t ($STD_TC, std from source with -Zbuild-std)"
        # panic_abort: the release profile aborts on panic, so std is built
        # for that too.
        dir="$TARGET_DIR/build-std"
        (
            export "$flags_var=${!flags_var:-} $COMMON_RUSTFLAGS $SIZE_RUSTFLAGS"
            cargo_build_std "$t" "$TARGET_DIR" zigbuild "${args[@]}" -Zbuild-std=std,panic_abort \
                -Zbuild-std-features=optimize_for_size
        ) || die "build for $t failed"
    else
        log "Building $t ($ACTIVE_TC, prebuilt std)"
        dir=$TARGET_DIR
        (
            export "$flags_var=${!flags_var:-} $COMMON_RUSTFLAGS"
            cargo zigbuild --target "$t" "${args[@]}"
        ) || die "build for $t failed"
    fi
    bin="$dir/$t/release/sitewatch-agent"
    [ -f "$bin" ] || die "cargo finished but $bin is missing"
    verify_binary "$bin" "$t"
    cp "$bin" "$OUT/sitewatch-agent-$t"
    log "$t: $(stat -c %s "$OUT/sitewatch-agent-$t") bytes in $((SECONDS - start)) s"
    BUILDINFO+=("target $t features=$feats std=$mode panic=$([ "$mode" = build-std ] && echo "$RELEASE_PANIC" || echo abort) toolchain=$([ "$mode" = build-std ] && echo "$STD_TC" || echo "$ACTIVE_TC")")
done

COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || COMMIT="$COMMIT (uncommitted changes)"
(
    cd "$OUT"
    sha256sum sitewatch-agent-* > SHA256SUMS
    {
        echo "sitewatch-agent $VERSION"
        echo "commit $COMMIT"
        echo "rustc $(rustc --version)"
        echo "zig $(python3 -m ziglang version) via cargo-zigbuild $SITEWATCH_ZIGBUILD_VERSION"
        printf '%s\n' "${BUILDINFO[@]}"
    } > BUILDINFO
)
log "Wrote $OUT:"
( cd "$OUT" && ls -l sitewatch-agent-* && cat SHA256SUMS )
