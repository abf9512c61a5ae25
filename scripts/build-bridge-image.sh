#!/usr/bin/env bash
# Builds the sitewatch-bridge container image from the static musl binary,
# without pulling anything and without a container engine:
#
#   dist/sitewatch-bridge-x86_64-unknown-linux-musl    the static binary
#   dist/ca-certificates.crt                           the CA bundle it carries
#   dist/image/layout/                                 OCI image layout
#   dist/image/sitewatch-bridge-VERSION-amd64.oci.tar  the same, one archive
#
# The image: FROM scratch, /sitewatch-bridge, the CA bundle
# (SSL_CERT_FILE), user 65532:65532, port 9187, entrypoint
# /sitewatch-bridge, command --config /etc/sitewatch/bridge.toml: the one
# deploy/bridge/Dockerfile describes, named localhost/sitewatch-bridge:VERSION
# as deploy/central/compose.yaml expects. Reproducible (SOURCE_DATE_EPOCH
# = the commit's time). scripts/test-deploy.sh checks and runs it.
#
# Usage: ./scripts/build-bridge-image.sh [--bin FILE] [--out DIR] [--load] [--bin-only]
#   --bin FILE   use this static binary instead of building one
#   --load       load the image into docker (if its daemon answers) or podman
#   --bin-only   only the binary and CA bundle in DIST (for docker build)
#   SITEWATCH_BRIDGE_TARGET=aarch64-unknown-linux-musl for an arm64 image
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

BIN='' OUT=dist LOAD=0 BIN_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="${2:?--bin needs a file}"; shift 2 ;;
        --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
        --load) LOAD=1; shift ;;
        --bin-only) BIN_ONLY=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done
TARGET=${SITEWATCH_BRIDGE_TARGET:-x86_64-unknown-linux-musl}
case "$TARGET" in
    x86_64-*) ARCH=amd64 MACHINE=X86-64 ;;
    aarch64-*) ARCH=arm64 MACHINE=AArch64 ;;
    *) die "unsupported target $TARGET" ;;
esac
ensure_debian_packages binutils python3 ca-certificates

PKGID=$(cargo pkgid -p sitewatch-bridge)
VERSION=${PKGID##*[#@]}
if [ -z "$BIN" ]; then
    ensure_zigbuild
    mode=$(rust_std_mode "$TARGET")
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    # The centre's profile (speed over size, see the workspace Cargo.toml).
    args=(--profile release-fast --locked -p sitewatch-bridge --bin sitewatch-bridge)
    log "Building sitewatch-bridge $VERSION for $TARGET (std: $mode)"
    if [ "$mode" = build-std ]; then
        cargo_build_std "$TARGET" "$TARGET_DIR" zigbuild "${args[@]}" -Zbuild-std=std,panic_abort
        BIN="$TARGET_DIR/build-std/$TARGET/release-fast/sitewatch-bridge"
    else
        cargo zigbuild --target "$TARGET" "${args[@]}"
        BIN="$TARGET_DIR/$TARGET/release-fast/sitewatch-bridge"
    fi
fi
[ -f "$BIN" ] || die "$BIN not found"
readelf -hW "$BIN" | grep -q "Machine:.*$MACHINE" || die "$BIN is not a $MACHINE binary"
if readelf -lW "$BIN" | grep -q INTERP; then die "$BIN is dynamically linked: FROM scratch needs a static binary"; fi

mkdir -p "$OUT"
cp "$BIN" "$OUT/sitewatch-bridge-$TARGET"
CA=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA" ] || die "$CA missing (apt-get install ca-certificates)"
cp "$CA" "$OUT/ca-certificates.crt"
[ "$BIN_ONLY" = 1 ] && { log "$OUT/sitewatch-bridge-$TARGET, $OUT/ca-certificates.crt"; exit 0; }

REV=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || REV="$REV-dirty"
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
rm -rf "$OUT/image"
INFO=$(python3 scripts/lib/oci_image.py --bin "$OUT/sitewatch-bridge-$TARGET" --out "$OUT/image" \
    --name localhost/sitewatch-bridge --tag "$VERSION" --arch "$ARCH" --ca-bundle "$OUT/ca-certificates.crt" \
    --created "$EPOCH" --revision "$REV")
ARCHIVE=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["archive"])' "$INFO")
log "image localhost/sitewatch-bridge:$VERSION ($ARCH): $INFO"

if [ "$LOAD" = 1 ]; then
    if docker info >/dev/null 2>&1; then
        docker load -i "$ARCHIVE"
    elif command -v podman >/dev/null; then
        podman load -i "$ARCHIVE"
    else
        die "--load: neither a docker daemon nor podman here; copy $ARCHIVE to the host and docker load -i it"
    fi
fi
