#!/usr/bin/env bash
# Tests the packaging: systemd units and OpenWrt package, without a running
# systemd or an OpenWrt device.
#
#   1. shellcheck on the release/test scripts, the OpenWrt init script and
#      its test harness;
#   2. systemd: `systemd-analyze verify` on every unit in systemd/ (and the
#      agent unit with each drop-in), `systemd-analyze security --offline`
#      exposure scores (the agent must stay below 2.0), sysusers.d and
#      tmpfiles.d applied to a scratch root;
#   3. OpenWrt: the procd init script and its UCI -> TOML translation under
#      dash and under busybox sh with busybox's awk/sed
#      (openwrt/tests/test-init.sh, stubbed UCI and procd), the generated
#      TOML checked by python3 tomllib and by the agent's own `check`;
#   4. OpenWrt: the package Makefile evaluated against a stand-in SDK
#      (openwrt/tests/sdk-stub): per-arch binary choice, checksum
#      verification, installed files and modes, version = the agent's.
#
# Usage: ./scripts/test-packaging.sh [--dist DIR]
#   The agent binary for `check` is DIST/sitewatch-agent-x86_64-unknown-linux-musl
#   (./scripts/build-release.sh); without it those checks are skipped.
# Ends with "N passed, N failed, N skipped"; exit status 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

DIST=dist
while [ $# -gt 0 ]; do
    case "$1" in
        --dist) DIST="${2:?--dist needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done
DIST=$(cd "$DIST" 2>/dev/null && pwd || echo "$PWD/$DIST")

# systemd: systemd-analyze, systemd-sysusers, systemd-tmpfiles.
# busybox-static, not busybox: Debian's two conflict (installing one
# removes the other), and the QEMU SMART guest (scripts/qemu-smart) copies
# /bin/busybox into its initramfs, so it must stay the static one.
ensure_debian_packages shellcheck dash busybox-static systemd python3 make openssl
if ! python3 -c 'import tomllib' 2>/dev/null; then
    die "python3 with tomllib (3.11+) is needed to validate generated TOML"
fi

WORK=$(mktemp -d /tmp/sitewatch-packaging.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

PASSED=0 FAILED=0 SKIPPED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok    %s\n' "$1"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'skip  %s\n' "$1"; }
fail() {
    FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$1"
    shift
    local f
    for f in "$@"; do [ -s "$f" ] && sed 's/^/      /' "$f" | tail -n 30; done
    return 0
}
# Folds the "N passed, N failed, N skipped" line of a sub-suite into ours.
add_counts() {
    local line p f s
    line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
    p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    s=$(sed -nE 's/.* ([0-9]+) skipped.*/\1/p' <<<"$line")
    PASSED=$((PASSED + ${p:-0})); FAILED=$((FAILED + ${f:-1})); SKIPPED=$((SKIPPED + ${s:-0}))
}

AGENT="$DIST/sitewatch-agent-x86_64-unknown-linux-musl"
[ -x "$AGENT" ] && [ "$(uname -m)" = x86_64 ] || AGENT=

# ---------------------------------------------------------------- shellcheck
log "shellcheck"
SCRIPTS=(scripts/build-release.sh scripts/check-size.sh scripts/test-cross.sh scripts/test-packaging.sh
    scripts/test.sh scripts/fuzz.sh scripts/lib/common.sh)
OPENWRT_SH=(openwrt/files/sitewatch.init openwrt/tests/test-init.sh openwrt/tests/stubs/functions.sh
    openwrt/tests/stubs/procd.sh openwrt/tests/stubs/logger)
for f in "${SCRIPTS[@]}" "${OPENWRT_SH[@]}"; do
    if shellcheck -x "$f" >"$WORK/sc" 2>&1; then pass "shellcheck $f"; else fail "shellcheck $f" "$WORK/sc"; fi
done

# ------------------------------------------------------------------- systemd
log "systemd units"
U="$WORK/units"
mkdir -p "$U"
shopt -s nullglob
UNITS=(systemd/*.service systemd/*.socket systemd/*.timer systemd/*.path)
DROPINS=(systemd/dropins/*.conf)
shopt -u nullglob
cp "${UNITS[@]}" "$U/"
# verify wants ExecStart= binaries to exist; point them at one that does.
sed -i -e "s#/usr/bin/sitewatch-agent#${AGENT:-/bin/true}#" -e "s#/usr/bin/sitewatch-bridge#/bin/true#" "$U"/*
for unit in "$U"/*; do
    name=$(basename "$unit")
    # verify exits 0 on settings it ignores ("Failed to parse ..., ignoring"):
    # any output at all is a failure.
    if (cd "$U" && systemd-analyze verify --man=no "$name") >"$WORK/verify" 2>&1 && [ ! -s "$WORK/verify" ]; then
        pass "systemd-analyze verify $name"
    else
        fail "systemd-analyze verify $name" "$WORK/verify"
    fi
done
for d in "${DROPINS[@]}"; do
    name="sitewatch-agent-dropin-$(basename "$d" .conf).service"
    cat "$U/sitewatch-agent.service" "$d" >"$U/$name"
    if (cd "$U" && systemd-analyze verify --man=no "$name") >"$WORK/verify" 2>&1 && [ ! -s "$WORK/verify" ]; then
        pass "systemd-analyze verify sitewatch-agent.service + dropins/$(basename "$d")"
    else
        fail "systemd-analyze verify sitewatch-agent.service + dropins/$(basename "$d")" "$WORK/verify"
    fi
done

# Exposure scores. The agent's budget: below 2.0 (--threshold is in tenths).
SCORES=()
score_of() {
    (cd "$U" && systemd-analyze security --offline=yes --no-pager "$1" 2>/dev/null) \
        | sed -nE 's/.*Overall exposure level for [^:]*: ([0-9.]+) ([A-Z]+).*/\1 \2/p' || true
}
for name in sitewatch-agent.service sitewatch-bridge.service \
    sitewatch-agent-dropin-syslog-port-514.service sitewatch-agent-dropin-smart.service; do
    s=$(score_of "$name")
    SCORES+=("$(printf '%-44s %s' "$name" "${s:-?}")")
done
if (cd "$U" && systemd-analyze security --offline=yes --threshold=19 --no-pager sitewatch-agent.service) >"$WORK/sec" 2>&1; then
    pass "systemd-analyze security sitewatch-agent.service: $(score_of sitewatch-agent.service) (< 2.0)"
else
    fail "systemd-analyze security sitewatch-agent.service is 2.0 or more" "$WORK/sec"
fi
for name in sitewatch-bridge.service sitewatch-agent-dropin-smart.service; do
    if (cd "$U" && systemd-analyze security --offline=yes --threshold=29 --no-pager "$name") >"$WORK/sec" 2>&1; then
        pass "systemd-analyze security $name: $(score_of "$name") (< 3.0)"
    else
        fail "systemd-analyze security $name is 3.0 or more" "$WORK/sec"
    fi
done

# sysusers.d and tmpfiles.d, applied to a scratch root.
R="$WORK/root"
mkdir -p "$R/etc/sitewatch" "$R/run" "$R/usr/lib/sysusers.d" "$R/usr/lib/tmpfiles.d"
touch "$R/etc/sitewatch/agent.toml" "$R/etc/sitewatch/mqtt-password"
# Installed where the package would put them; with --root, both tools read
# their configuration from inside the root.
cp systemd/sysusers.d/sitewatch.conf "$R/usr/lib/sysusers.d/"
cp systemd/tmpfiles.d/sitewatch.conf "$R/usr/lib/tmpfiles.d/"
if systemd-sysusers --root="$R" >"$WORK/sysusers" 2>&1 \
    && grep -q '^sitewatch-agent:' "$R/etc/passwd" && grep -q '^sitewatch-bridge:' "$R/etc/passwd" \
    && [ "$(grep -c '^sitewatch' "$R/etc/passwd")" = 2 ]; then
    pass "systemd-sysusers creates sitewatch-agent and sitewatch-bridge, no other"
else
    fail "systemd-sysusers" "$WORK/sysusers"
fi
uid_of() { awk -F: -v u="$1" '$1 == u { print $3 }' "$R/etc/passwd"; }
gid_of() { awk -F: -v g="$1" '$1 == g { print $3 }' "$R/etc/group"; }
if systemd-tmpfiles --root="$R" --create sitewatch.conf >"$WORK/tmpfiles" 2>&1 \
    && [ "$(stat -c '%a %u %g' "$R/etc/sitewatch/agent.toml")" = "640 0 $(gid_of sitewatch-agent)" ] \
    && [ "$(stat -c '%a %u %g' "$R/etc/sitewatch/mqtt-password")" = "640 0 $(gid_of sitewatch-agent)" ]; then
    pass "systemd-tmpfiles: secrets 0640 root:sitewatch-agent"
else
    { cat "$WORK/tmpfiles"; stat -c '%n %a %u %g' "$R"/etc/sitewatch/*; } >"$WORK/tmpfiles.out" 2>&1 || true
    fail "systemd-tmpfiles modes and owners" "$WORK/tmpfiles.out"
fi

# ------------------------------------------------------------ OpenWrt init
log "OpenWrt init script (dash, busybox sh)"
[ -n "$AGENT" ] || skip "no $DIST/sitewatch-agent-x86_64-unknown-linux-musl: init tests use a stub agent (run ./scripts/build-release.sh)"
if dash openwrt/tests/test-init.sh ${AGENT:+"$AGENT"} >"$WORK/init-dash" 2>&1; then :; fi
sed 's/^/  dash: /' "$WORK/init-dash" | grep -v '^  dash: $'
add_counts "$WORK/init-dash"
# busybox sh with busybox's own applets first on PATH, as on a router.
BB="$WORK/busybox-bin"
mkdir -p "$BB"
for a in awk sed grep cat mkdir chmod chgrp mv rm ls stat sort head tail tr mktemp dirname basename; do
    ln -s "$(command -v busybox)" "$BB/$a"
done
if PATH="$BB:$PATH" busybox sh openwrt/tests/test-init.sh ${AGENT:+"$AGENT"} >"$WORK/init-bb" 2>&1; then :; fi
sed 's/^/  busybox: /' "$WORK/init-bb" | grep -v '^  busybox: $'
add_counts "$WORK/init-bb"

# --------------------------------------------------------- OpenWrt Makefile
log "OpenWrt package Makefile (stand-in SDK)"
owrt_make() {
    make -s -C openwrt TOPDIR="$PWD/openwrt/tests/sdk-stub" INCLUDE_DIR="$PWD/openwrt/tests/sdk-stub/include" \
        BUILD_DIR="$WORK/build" SITEWATCH_DIST="$DIST" "$@"
}
declare -A ARCH_ARGS=(
    [aarch64-unknown-linux-musl]="ARCH=aarch64"
    [armv7-unknown-linux-musleabihf]="ARCH=arm CONFIG_arm_v7=y CONFIG_HAS_FPU=y"
    [x86_64-unknown-linux-musl]="ARCH=x86_64"
)
for triple in aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl; do
    if [ ! -f "$DIST/sitewatch-agent-$triple" ]; then
        skip "Makefile for $triple (no $DIST/sitewatch-agent-$triple)"
        continue
    fi
    I="$WORK/ipkg-$triple"
    read -ra args <<<"${ARCH_ARGS[$triple]}"
    rm -rf "$WORK/build"
    if owrt_make "${args[@]}" IDIR="$I" sw-install >"$WORK/make" 2>&1 \
        && cmp -s "$I/usr/bin/sitewatch-agent" "$DIST/sitewatch-agent-$triple" \
        && [ "$(stat -c %a "$I/usr/bin/sitewatch-agent")" = 755 ] \
        && [ "$(stat -c %a "$I/etc/init.d/sitewatch")" = 755 ] \
        && [ "$(stat -c %a "$I/etc/config/sitewatch")" = 600 ] \
        && [ "$(stat -c %a "$I/etc/sitewatch")" = 700 ] \
        && cmp -s "$I/etc/init.d/sitewatch" openwrt/files/sitewatch.init \
        && [ -f "$I/lib/upgrade/keep.d/sitewatch-agent" ]; then
        pass "Makefile (${args[*]}): checksum verified, $triple binary and files installed"
    else
        find "$I" -printf '%m %p\n' >>"$WORK/make" 2>/dev/null || true
        fail "Makefile (${args[*]}): $triple package contents" "$WORK/make"
    fi
done
if owrt_make ARCH=mipsel IDIR="$WORK/ipkg-mips" sw-install >"$WORK/make" 2>&1; then
    fail "Makefile refuses ARCH=mipsel (no prebuilt binary)" "$WORK/make"
elif grep -q "no prebuilt binary for ARCH=mipsel" "$WORK/make"; then
    pass "Makefile refuses ARCH=mipsel with a clear message"
else
    fail "Makefile refuses ARCH=mipsel with a clear message" "$WORK/make"
fi
if [ -f "$DIST/sitewatch-agent-aarch64-unknown-linux-musl" ] && [ -f "$DIST/SHA256SUMS" ]; then
    # A binary that does not match SHA256SUMS is refused.
    T="$WORK/tampered"
    mkdir -p "$T"
    cp "$DIST/SHA256SUMS" "$T/"
    { cat "$DIST/sitewatch-agent-aarch64-unknown-linux-musl"; echo x; } >"$T/sitewatch-agent-aarch64-unknown-linux-musl"
    rm -rf "$WORK/build"
    if make -s -C openwrt TOPDIR="$PWD/openwrt/tests/sdk-stub" INCLUDE_DIR="$PWD/openwrt/tests/sdk-stub/include" \
        BUILD_DIR="$WORK/build" SITEWATCH_DIST="$T" ARCH=aarch64 IDIR="$WORK/ipkg-t" sw-install >"$WORK/make" 2>&1; then
        fail "Makefile refuses a binary that does not match SHA256SUMS" "$WORK/make"
    else
        pass "Makefile refuses a binary that does not match SHA256SUMS"
    fi
    pkg_version=$(owrt_make ARCH=aarch64 sw-info | sed -n 's/^name=.* version=\(.*\)-[0-9]*$/\1/p')
    agent_version=$(cargo pkgid -p sitewatch-agent 2>/dev/null | sed 's/.*[#@]//')
    if [ -n "$agent_version" ] && [ "$pkg_version" = "$agent_version" ]; then
        pass "openwrt/Makefile PKG_VERSION $pkg_version = sitewatch-agent's version"
    else
        echo "PKG_VERSION '$pkg_version', agent '$agent_version'" >"$WORK/ver"
        fail "openwrt/Makefile PKG_VERSION matches sitewatch-agent's version" "$WORK/ver"
    fi
else
    skip "Makefile checksum and version checks (no $DIST/SHA256SUMS)"
fi

echo
echo "systemd-analyze security --offline exposure (0 = locked down, 10 = unsafe):"
printf '  %s\n' "${SCORES[@]}"
echo
echo "test-packaging: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
