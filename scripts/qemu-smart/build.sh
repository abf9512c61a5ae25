#!/usr/bin/env bash
# Builds everything the SMART QEMU guest needs into OUT_DIR:
#
#   OUT_DIR/vmlinuz          Debian's amd64 kernel (from the linux-image .deb)
#   OUT_DIR/initramfs.cpio   busybox + the storage modules (with their
#                            dependencies) + the static agent + smartctl and
#                            its shared libraries + /init
#   OUT_DIR/sitewatch-agent  the static x86_64-musl agent that went in
#
# The guest's /init loads the modules, waits for the disks, runs
# `/sitewatch-agent smart` (table, --json, and --type sat12 on the SATA
# disk) and `smartctl --json -a` on
# every disk, writes the results between marker lines to its second serial
# port (/dev/ttyS1; run.sh connects it to a file) and powers off.
#
# Usage: scripts/qemu-smart/build.sh OUT_DIR [--agent BIN]
#   --agent BIN   use this static binary instead of building one
#   SITEWATCH_QEMU_KERNEL=linux-image-6.1.0-56-amd64   pin the kernel package
#     (default: the newest linux-image-6.1.0-N-amd64 apt knows, falling back
#     to the version verified in shared/reference/smart-disk-health.md)
#   SITEWATCH_QEMU_CACHE (default ~/.cache/sitewatch/qemu): downloaded .debs
#
# Needs apt (installs qemu-system-x86, busybox-static, cpio, binutils) and
# Rust with rustup (adds the x86_64-unknown-linux-musl target).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

OUT=
AGENT=
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) AGENT="${2:?--agent needs a file}"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) die "unknown argument $1 (try --help)" ;;
        *) OUT=$1; shift ;;
    esac
done
[ -n "$OUT" ] || die "usage: $0 OUT_DIR [--agent BIN]"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# musl-tools: musl-gcc, which ring's build script uses for the musl target.
ensure_debian_packages qemu-system-x86 busybox-static cpio binutils musl-tools
CACHE=${SITEWATCH_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sitewatch/qemu}
mkdir -p "$CACHE"

# --- the agent: static x86_64 musl (debug profile: fast to build; stripped)
if [ -z "$AGENT" ]; then
    T=x86_64-unknown-linux-musl
    rustup target list --installed | grep -qx "$T" || rustup target add "$T" >/dev/null \
        || die "rustup target add $T failed"
    log "Building the static agent for $T"
    cargo build --locked -p sitewatch-agent --bin sitewatch-agent --target "$T" >&2 \
        || die "cargo build --target $T failed"
    TD=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    AGENT="$TD/$T/debug/sitewatch-agent"
fi
[ -f "$AGENT" ] || die "agent binary $AGENT is missing"
readelf -lW "$AGENT" | grep -q INTERP && die "$AGENT is dynamically linked; the guest has no libc"
strip -o "$OUT/sitewatch-agent" "$AGENT"

# --- Debian packages: kernel and smartmontools (cached)
fetch_deb() { # NAME -> path of the .deb in the cache
    local name=$1 f
    f=$(ls "$CACHE/${name}"_*.deb 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$f" ]; then
        (cd "$CACHE" && apt_retry apt-get download "$name" >&2) || return 1
        f=$(ls "$CACHE/${name}"_*.deb 2>/dev/null | sort -V | tail -1)
    fi
    echo "$f"
}
KPKG=${SITEWATCH_QEMU_KERNEL:-}
if [ -z "$KPKG" ]; then
    KPKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null \
        | awk '{print $1}' | sort -V | tail -1 || true)
    if [ -z "$KPKG" ]; then
        apt_get update -qq || true
        KPKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null \
            | awk '{print $1}' | sort -V | tail -1 || true)
    fi
    KPKG=${KPKG:-linux-image-6.1.0-56-amd64}
fi
# A cached kernel of the same package is reused even if apt moved on.
KDEB=$(fetch_deb "$KPKG") || KDEB=$(fetch_deb linux-image-6.1.0-56-amd64) \
    || die "apt-get download $KPKG failed (is a Debian mirror reachable?)"
SDEB=$(fetch_deb smartmontools) || die "apt-get download smartmontools failed"
log "Kernel $(basename "$KDEB"), $(basename "$SDEB")"

WORK=$(mktemp -d /tmp/sitewatch-qemu-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
dpkg-deb -x "$KDEB" "$WORK/k"
dpkg-deb -x "$SDEB" "$WORK/s"
KVER=$(ls "$WORK/k/lib/modules" | head -1)
MODDIR="$WORK/k/lib/modules/$KVER"
cp "$WORK/k/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

# --- modules and their dependencies, in load order. The .deb has no
# modules.dep (depmod runs at install); each .ko names its dependencies in
# its .modinfo section ("depends=a,b").
declare -A KO=()
while IFS= read -r f; do
    n=$(basename "$f"); n=${n%.ko*}; KO[${n//-/_}]=$f
done < <(find "$MODDIR/kernel" -name '*.ko*')
declare -A SEEN=()
ORDER=()
deps_of() {
    local f=$1
    case "$f" in
        *.xz) xz -dc "$f" ;;
        *.zst) zstd -dc "$f" ;;
        *) cat "$f" ;;
    esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -1 | tr ',' ' '
}
add_module() {
    local n=${1//-/_} d
    [ -n "${SEEN[$n]:-}" ] && return 0
    SEEN[$n]=1
    if [ -z "${KO[$n]:-}" ]; then
        grep -q "/${1}.ko\|/${n}.ko" "$MODDIR/modules.builtin" 2>/dev/null && return 0
        die "kernel module $1 not found in $KVER"
    fi
    for d in $(deps_of "${KO[$n]}"); do add_module "$d"; done
    ORDER+=("$n")
}
# SATA (AHCI), SCSI disk + generic, NVMe, USB storage (BOT and UAS) on xHCI.
for m in ahci sd_mod sg nvme xhci_pci usb_storage uas; do add_module "$m"; done

ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,dev,proc,sys,lib/modules,usr/sbin,tmp}
for n in "${ORDER[@]}"; do
    f=${KO[$n]}
    case "$f" in
        *.xz) xz -dc "$f" >"$ROOT/lib/modules/$n.ko" ;;
        *.zst) zstd -dc "$f" >"$ROOT/lib/modules/$n.ko" ;;
        *) cp "$f" "$ROOT/lib/modules/$n.ko" ;;
    esac
    echo "$n" >>"$ROOT/lib/modules/order"
done
# The initramfs has no libc: refuse a dynamic busybox here rather than
# boot a guest whose init cannot start (a kernel panic, found when the
# conflicting dynamic package had replaced busybox-static).
if readelf -l /bin/busybox 2>/dev/null | grep -q 'Requesting program interpreter'; then
    die "/bin/busybox is dynamically linked (Debian package busybox, not busybox-static): run apt-get install busybox-static"
fi
cp /bin/busybox "$ROOT/bin/busybox"
cp "$OUT/sitewatch-agent" "$ROOT/sitewatch-agent"

# --- smartctl with the shared libraries it needs (from this machine:
# Debian 12 here, like the .deb).
cp "$WORK/s/usr/sbin/smartctl" "$ROOT/usr/sbin/smartctl"
copy_libs() {
    local lib
    for lib in $(ldd "$1" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }'); do
        [ -f "$ROOT$lib" ] && continue
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -L "$lib" "$ROOT$lib"
    done
}
copy_libs "$ROOT/usr/sbin/smartctl"
# The 64-bit loader is asked for as /lib64/ld-linux-x86-64.so.2.
if [ -f "$ROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ] && [ ! -e "$ROOT/lib64/ld-linux-x86-64.so.2" ]; then
    mkdir -p "$ROOT/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"
fi

cat >"$ROOT/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
OUT=/dev/ttyS1
for m in $(cat /lib/modules/order); do
    insmod "/lib/modules/$m.ko" 2>>/tmp/insmod.log || echo "insmod $m failed" >>/tmp/insmod.log
done
want=$(sed -n 's/.*sitewatch\.disks=\([0-9]*\).*/\1/p' /proc/cmdline)
want=${want:-1}
t0=$(cut -d. -f1 /proc/uptime)
i=0
while [ $i -lt 300 ]; do
    n=$(ls /sys/block | grep -c -E '^(sd[a-z]+|nvme[0-9]+n[0-9]+)$')
    [ "$n" -ge "$want" ] && break
    sleep 0.1; i=$((i + 1))
done
# Disk nodes appear from devtmpfs; give the partition scan a moment.
sleep 1
{
    echo "===SITEWATCH-BEGIN dmesg-storage==="
    dmesg | grep -E 'ata[0-9]|nvme|usb-storage|sd [0-9]|scsi [0-9]' | tail -40
    cat /tmp/insmod.log 2>/dev/null
    echo "disks: $(ls /sys/block | tr '\n' ' ') (wanted $want, waited $((i / 10)) s)"
    echo "===SITEWATCH-END dmesg-storage==="
    echo "===SITEWATCH-BEGIN agent-table==="
    /sitewatch-agent smart 2>&1; rc=$?
    echo "exit=$rc"
    echo "===SITEWATCH-END agent-table==="
    echo "===SITEWATCH-BEGIN agent-json==="
    /sitewatch-agent smart --json 2>/tmp/agent-json.err; rc=$?
    echo
    echo "exit=$rc"
    echo "===SITEWATCH-END agent-json==="
    # The SATA disk once more through the 12-byte CDB (libata takes both).
    sata=$(for d in /sys/block/sd*; do grep -q '^ATA' "$d/device/vendor" 2>/dev/null && basename "$d"; done | head -1)
    echo "===SITEWATCH-BEGIN agent-json-sat12==="
    /sitewatch-agent smart --type sat12 --json "/dev/$sata" 2>&1; rc=$?
    echo
    echo "exit=$rc"
    echo "===SITEWATCH-END agent-json-sat12==="
    echo "===SITEWATCH-BEGIN agent-json-stderr==="
    cat /tmp/agent-json.err
    echo "===SITEWATCH-END agent-json-stderr==="
    for d in $(ls /sys/block | grep -E '^(sd[a-z]+|nvme[0-9]+n[0-9]+)$'); do
        echo "===SITEWATCH-BEGIN smartctl $d==="
        smartctl --json -a "/dev/$d" 2>&1
        echo "===SITEWATCH-END smartctl $d==="
    done
    echo "===SITEWATCH-DONE uptime=$(cut -d' ' -f1 /proc/uptime)==="
} >"$OUT" 2>&1
sync
poweroff -f
INIT
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . | sort | cpio -o -H newc --quiet) >"$OUT/initramfs.cpio"
log "Initramfs $(du -h "$OUT/initramfs.cpio" | cut -f1) with ${#ORDER[@]} modules: ${ORDER[*]}"
echo "$KPKG" >"$OUT/kernel-package"
