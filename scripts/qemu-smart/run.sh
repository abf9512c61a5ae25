#!/usr/bin/env bash
# Boots the SMART guest built by build.sh under qemu-system-x86_64 (TCG, no
# KVM needed) with four emulated disks:
#
#   AHCI  ide-hd on the q35 SATA controller   serial SWAHCI0001
#   NVMe  nvme                                serial SWNVMEOK01
#   NVMe  nvme, smart_critical_warning=4      serial SWNVMECRIT1  (bit 2:
#         "NVM subsystem reliability degraded"; a per-device property, so
#         only this disk has it, unlike -global nvme.smart_critical_warning)
#   USB   usb-storage on qemu-xhci            serial SWUSB00001
#
# The guest writes its results to its second serial port, which lands in
# OUT_DIR/guest.out (CR stripped); the console (kernel, init) goes to OUT_DIR/console.log.
# A hard timeout (default 180 s, SITEWATCH_QEMU_TIMEOUT) kills a hung guest.
# Prints guest.out and exits 0 if the guest finished (DONE marker), else 1.
#
# Usage: scripts/qemu-smart/run.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/common.sh

OUT=${1:?usage: $0 OUT_DIR (built by scripts/qemu-smart/build.sh)}
[ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio" ] || die "$OUT has no vmlinuz/initramfs.cpio: run build.sh first"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
TIMEOUT=${SITEWATCH_QEMU_TIMEOUT:-180}

for d in ahci nvme-ok nvme-crit usb; do
    rm -f "$OUT/$d.img"
    truncate -s 1G "$OUT/$d.img"
done
rm -f "$OUT/guest.raw" "$OUT/guest.out" "$OUT/console.log"

start=$(date +%s.%N)
set +e
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
    -M q35,accel=tcg -m 512 -smp 1 -nographic -no-reboot \
    -kernel "$OUT/vmlinuz" -initrd "$OUT/initramfs.cpio" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 sitewatch.disks=4" \
    -serial "file:$OUT/console.log" \
    -chardev "file,id=results,path=$OUT/guest.raw" -device isa-serial,chardev=results \
    -monitor none \
    -drive "if=none,id=d-ahci,file=$OUT/ahci.img,format=raw" \
    -device ide-hd,drive=d-ahci,bus=ide.0,serial=SWAHCI0001,model=SITEWATCH-AHCI-DISK \
    -drive "if=none,id=d-nvme-ok,file=$OUT/nvme-ok.img,format=raw" \
    -device nvme,drive=d-nvme-ok,serial=SWNVMEOK01 \
    -drive "if=none,id=d-nvme-crit,file=$OUT/nvme-crit.img,format=raw" \
    -device nvme,drive=d-nvme-crit,serial=SWNVMECRIT1,smart_critical_warning=4 \
    -device qemu-xhci,id=xhci \
    -drive "if=none,id=d-usb,file=$OUT/usb.img,format=raw" \
    -device usb-storage,bus=xhci.0,drive=d-usb,serial=SWUSB00001 \
    </dev/null >"$OUT/qemu.log" 2>&1
rc=$?
set -e
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "$secs" >"$OUT/boot-seconds"
# The guest's tty turns \n into \r\n.
tr -d '\r' <"$OUT/guest.raw" >"$OUT/guest.out" 2>/dev/null || true
cat "$OUT/guest.out" 2>/dev/null || true
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "run.sh: guest did not finish within $TIMEOUT s (killed); console tail:" >&2
    tail -n 30 "$OUT/console.log" >&2 || true
    exit 1
fi
if ! grep -q '^===SITEWATCH-DONE' "$OUT/guest.out" 2>/dev/null; then
    echo "run.sh: guest ended (qemu exit $rc) without the DONE marker; qemu and console tail:" >&2
    tail -n 10 "$OUT/qemu.log" >&2 || true
    tail -n 30 "$OUT/console.log" >&2 || true
    exit 1
fi
log "Guest finished in $secs s (qemu exit $rc)"
