#!/usr/bin/env bash
# Issues TLS certificates for a sitewatch fleet from a small CA, with openssl.
#
#   ./scripts/issue-cert.sh --dir DIR ca                 # once: DIR/ca.key, DIR/ca.pem
#   ./scripts/issue-cert.sh --dir DIR server HOST [IP]  # broker: DIR/server/HOST.{key,pem}
#   ./scripts/issue-cert.sh --dir DIR site SITE_ID      # gateway: DIR/sites/SITE_ID/{client.key,client.pem,ca.pem}
#   ./scripts/issue-cert.sh --dir DIR bridge NAME       # bridge: DIR/bridges/NAME/{client.key,client.pem,ca.pem}
#
# Site certificates carry the site id as their Common Name. With the sample
# broker config (deploy/mosquitto/) mosquitto uses that name as the MQTT
# username (use_identity_as_username), and the ACL lets a site write only
# below sitewatch/v1/<its id>/. So a stolen or misconfigured gateway can
# speak only for itself.
#
# Keys are EC P-256, certificates X.509 v3 (rustls refuses v1), valid for
# DAYS (default 825) and the CA for 10 years. Keep DIR/ca.key offline.
set -euo pipefail

DIR=''
DAYS=${DAYS:-825}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
[ -n "$DIR" ] || die "--dir DIR is required (where the CA and certificates live)"
[ $# -ge 1 ] || die "what to issue? ca | server HOST [IP] | site SITE_ID | bridge NAME"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
umask 077
mkdir -p "$DIR"
KIND="$1"; shift

need_ca() {
    if [ ! -f "$DIR/ca.key" ] || [ ! -f "$DIR/ca.pem" ]; then
        die "no CA in $DIR: run '$0 --dir $DIR ca' first"
    fi
}

# issue NAME OUT_DIR EXT_FILE: key + CSR + certificate signed by the CA.
issue() {
    local cn="$1" out="$2" ext="$3"
    mkdir -p "$out"
    openssl ecparam -name prime256v1 -genkey -noout -out "$out/key.tmp"
    openssl pkcs8 -topk8 -nocrypt -in "$out/key.tmp" -out "$out/client.key"
    rm -f "$out/key.tmp"
    openssl req -new -key "$out/client.key" -subj "/CN=$cn" -out "$out/req.csr"
    openssl x509 -req -in "$out/req.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
        -CAcreateserial -days "$DAYS" -sha256 -extfile "$ext" -out "$out/client.pem" 2>/dev/null
    rm -f "$out/req.csr" "$ext"
    cp "$DIR/ca.pem" "$out/ca.pem"
    chmod 600 "$out/client.key"
    chmod 644 "$out/client.pem" "$out/ca.pem"
}

case "$KIND" in
    ca)
        [ -f "$DIR/ca.key" ] && die "$DIR/ca.key exists; refusing to replace the fleet's CA"
        openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/ca.key"
        openssl req -x509 -new -key "$DIR/ca.key" -sha256 -days 3650 \
            -subj "/CN=sitewatch fleet CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$DIR/ca.pem"
        chmod 600 "$DIR/ca.key"; chmod 644 "$DIR/ca.pem"
        echo "CA: $DIR/ca.pem (keep $DIR/ca.key offline)"
        ;;
    site|bridge)
        need_ca
        NAME="${1:-}"
        [ -n "$NAME" ] || die "$KIND needs a name"
        if [ "$KIND" = site ]; then
            # The same rule as sitewatch_wire::topic::validate_site: the name is
            # an MQTT topic segment, a PostgreSQL key and a Loki label.
            [[ "$NAME" =~ ^[a-z0-9_-]{1,63}$ ]] \
                || die "site id '$NAME' must be 1-63 of lowercase letters, digits, '-' and '_'"
            OUT="$DIR/sites/$NAME"
        else
            # Bridge names contain a '.', which no site id may, so a bridge
            # certificate can never match the site write pattern.
            [[ "$NAME" =~ ^[a-z0-9_-]+\.[a-z0-9._-]+$ ]] \
                || die "bridge name '$NAME' must contain a '.', e.g. bridge.central (never a valid site id)"
            OUT="$DIR/bridges/$NAME"
        fi
        EXT=$(mktemp)
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > "$EXT"
        issue "$NAME" "$OUT" "$EXT"
        echo "$KIND $NAME: $OUT/client.pem, $OUT/client.key, $OUT/ca.pem"
        ;;
    server)
        need_ca
        HOST="${1:-}"; IP="${2:-}"
        [ -n "$HOST" ] || die "server needs the broker's host name"
        SAN="DNS:$HOST"; [ -n "$IP" ] && SAN="$SAN,IP:$IP"
        EXT=$(mktemp)
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$SAN" > "$EXT"
        issue "$HOST" "$DIR/server/$HOST" "$EXT"
        mv "$DIR/server/$HOST/client.pem" "$DIR/server/$HOST/server.pem"
        mv "$DIR/server/$HOST/client.key" "$DIR/server/$HOST/server.key"
        echo "server $HOST: $DIR/server/$HOST/server.pem, server.key"
        ;;
    *) die "unknown kind '$KIND' (ca | server | site | bridge)" ;;
esac
