#!/usr/bin/env bash
# Issues and revokes TLS certificates for a sitewatch fleet from a small CA, with openssl.
#
#   ./scripts/issue-cert.sh --dir DIR ca                 # once: DIR/ca.key, DIR/ca.pem, DIR/crl.pem
#   ./scripts/issue-cert.sh --dir DIR server HOST [IP]  # broker: DIR/server/HOST/server.{key,pem}
#   ./scripts/issue-cert.sh --dir DIR site SITE_ID      # gateway: DIR/sites/SITE_ID/{client.key,client.pem,ca.pem}
#   ./scripts/issue-cert.sh --dir DIR bridge NAME       # bridge: DIR/bridges/NAME/{client.key,client.pem,ca.pem}
#   ./scripts/issue-cert.sh --dir DIR revoke NAME [REASON]  # every valid certificate of a site/bridge, then the CRL
#   ./scripts/issue-cert.sh --dir DIR revoke FILE [REASON]  # one certificate (e.g. the one a re-issue replaced)
#   ./scripts/issue-cert.sh --dir DIR crl               # re-sign DIR/crl.pem (do it before its nextUpdate)
#   ./scripts/issue-cert.sh --dir DIR list              # the CA database: status, expiry, serial, name
#
# Site certificates carry the site id as their Common Name. With the sample
# broker config (deploy/mosquitto/) mosquitto uses that name as the MQTT
# username (use_identity_as_username), and the ACL lets a site write only
# below sitewatch/v1/<its id>/. So a stolen or misconfigured gateway can
# speak only for itself, until its certificate is revoked.
#
# Keys are EC P-256, certificates X.509 v3 (rustls refuses v1), valid for
# DAYS (default 825) and the CA for 10 years. Keep DIR/ca.key offline.
#
# Revocation: DIR holds an openssl CA database (index.txt, certs/SERIAL.pem,
# crlnumber; random serials). `revoke` marks certificates revoked there and
# writes DIR/crl.pem, valid for CRL_DAYS (default 90). Certificates issued
# before the database existed (openssl x509 -req) are recorded the first
# time they are revoked or replaced. The broker's crlfile must be a copy of
# DIR/crl.pem, re-signed with `crl` and copied again before its nextUpdate:
# once it has expired mosquitto refuses EVERY client. After copying it,
# reload mosquitto (SIGHUP): new connections are checked against it, but a
# client already connected stays connected until it reconnects; restart
# mosquitto to drop it at once. REASON: keyCompromise, superseded,
# cessationOfOperation, affiliationChanged or unspecified (the default).
set -euo pipefail

DIR=''
DAYS=${DAYS:-825}
CRL_DAYS=${CRL_DAYS:-90}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
[ -n "$DIR" ] || die "--dir DIR is required (where the CA and certificates live)"
[ $# -ge 1 ] || die "what to do? ca | server HOST [IP] | site SITE_ID | bridge NAME | revoke NAME|FILE | crl | list"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
[[ "$CRL_DAYS" =~ ^[1-9][0-9]*$ ]] || die "CRL_DAYS must be a number of days, not '$CRL_DAYS'"
umask 077
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
KIND="$1"; shift

# One run at a time on a DIR: the database is a set of files.
if command -v flock >/dev/null; then
    exec 9>"$DIR/.lock"
    flock 9
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

need_ca() {
    if [ ! -f "$DIR/ca.key" ] || [ ! -f "$DIR/ca.pem" ]; then
        die "no CA in $DIR: run '$0 --dir $DIR ca' first"
    fi
}

# The openssl CA database next to the CA, created on first use. The
# configuration names no path of ours: openssl runs inside DIR (see ossl_ca).
ca_db() {
    need_ca
    mkdir -p "$DIR/certs"
    [ -f "$DIR/index.txt" ] || : >"$DIR/index.txt"
    # A site re-issued (rotation) has two valid certificates for a while.
    [ -f "$DIR/index.txt.attr" ] || echo 'unique_subject = no' >"$DIR/index.txt.attr"
    [ -f "$DIR/crlnumber" ] || echo 1000 >"$DIR/crlnumber"
    cat >"$TMP/ca.cnf" <<'EOF'
[ ca ]
default_ca = fleet

[ fleet ]
dir = .
database = $dir/index.txt
new_certs_dir = $dir/certs
certificate = $dir/ca.pem
private_key = $dir/ca.key
# Unused: certificates get random serials (-rand_serial).
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
policy = policy_cn
unique_subject = no
copy_extensions = none

[ policy_cn ]
commonName = supplied
EOF
}

# ossl_ca ARGS...: `openssl ca` inside DIR; its chatter is shown only on failure.
ossl_ca() {
    if ! (cd "$DIR" && openssl ca -config "$TMP/ca.cnf" "$@") >"$TMP/ca.log" 2>&1; then
        cat "$TMP/ca.log" >&2
        return 1
    fi
}

abspath() { printf '%s/%s\n' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }
serial_of() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }
# status_of SERIAL: V (valid), R (revoked), E (expired) or nothing (unknown).
status_of() { awk -F'\t' -v s="$1" 'toupper($4) == toupper(s) { print $1 }' "$DIR/index.txt"; }

# record FILE: makes sure the certificate FILE is in the database, with a
# copy in DIR/certs/SERIAL.pem; prints its serial. For certificates issued
# before the database existed (openssl x509 -req).
record() {
    local f="$1" serial
    openssl x509 -in "$f" -noout 2>/dev/null || die "$f is not a PEM certificate"
    openssl verify -no_check_time -CAfile "$DIR/ca.pem" "$f" >/dev/null 2>&1 \
        || die "$f was not issued by the CA in $DIR"
    serial=$(serial_of "$f")
    if [ -z "$(status_of "$serial")" ]; then
        ossl_ca -valid "$f" || die "could not record $f in $DIR/index.txt"
    fi
    [ -f "$DIR/certs/$serial.pem" ] || cp "$f" "$DIR/certs/$serial.pem"
    printf '%s\n' "$serial"
}

# revoke_serial SERIAL: revokes DIR/certs/SERIAL.pem unless already revoked.
revoke_serial() {
    local serial="$1"
    if [ "$(status_of "$serial")" = R ]; then
        echo "serial $serial: already revoked"
        return
    fi
    [ -f "$DIR/certs/$serial.pem" ] || die "no copy of certificate $serial in $DIR/certs/ to revoke"
    ossl_ca -revoke "$DIR/certs/$serial.pem" -crl_reason "$REASON" \
        || die "could not revoke $serial (reason '$REASON'?)"
    echo "serial $serial ($(awk -F'\t' -v s="$serial" '$4 == s { print $6 }' "$DIR/index.txt")): revoked"
}

# gencrl: re-signs DIR/crl.pem from the database.
gencrl() {
    ossl_ca -gencrl -crldays "$CRL_DAYS" -out "$TMP/crl.pem" || die "could not sign the CRL"
    chmod 644 "$TMP/crl.pem"
    mv "$TMP/crl.pem" "$DIR/crl.pem"
    local n next
    n=$(awk -F'\t' '$1 == "R"' "$DIR/index.txt" | wc -l)
    next=$(openssl crl -in "$DIR/crl.pem" -noout -nextupdate | sed 's/^nextUpdate=//')
    echo "CRL: $DIR/crl.pem ($((n)) revoked, next update $next)."
    echo "Copy it to the broker's crlfile and reload mosquitto (SIGHUP); re-sign it with"
    echo "'$0 --dir $DIR crl' and copy it again before $next, or every client is refused."
}

# issue NAME OUT_DIR EXT_FILE: key + CSR + certificate signed by the CA and
# recorded in the database. A certificate already in OUT_DIR (re-issue,
# rotation) is recorded first so that it can still be revoked by serial.
issue() {
    local cn="$1" out="$2" ext="$3" old="" f
    ca_db
    mkdir -p "$out"
    for f in "$out/client.pem" "$out/server.pem"; do
        if [ -f "$f" ]; then
            old=$(record "$f")
        fi
    done
    openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/key.tmp"
    openssl pkcs8 -topk8 -nocrypt -in "$TMP/key.tmp" -out "$TMP/client.key"
    openssl req -new -key "$TMP/client.key" -subj "/CN=$cn" -out "$TMP/req.csr"
    ossl_ca -batch -notext -rand_serial -days "$DAYS" -extfile "$ext" \
        -in "$TMP/req.csr" -out "$TMP/client.pem" || die "could not sign the certificate for $cn"
    mv "$TMP/client.key" "$out/client.key"
    mv "$TMP/client.pem" "$out/client.pem"
    rm -f "$ext"
    cp "$DIR/ca.pem" "$out/ca.pem"
    chmod 600 "$out/client.key"
    chmod 644 "$out/client.pem" "$out/ca.pem"
    if [ -n "$old" ] && [ "$(status_of "$old")" = V ]; then
        echo "replaced certificate $old stays valid until revoked; once $cn uses the new one:"
        echo "  $0 --dir $DIR revoke $DIR/certs/$old.pem superseded"
    fi
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
        # mosquitto will not start with a crlfile that does not exist: the
        # first CRL is an empty one.
        ca_db
        gencrl
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
    revoke)
        TARGET="${1:-}"
        REASON="${2:-unspecified}"
        [ -n "$TARGET" ] || die "revoke needs a site id, a bridge name or a certificate file"
        ca_db
        if [ -f "$TARGET" ]; then
            # One certificate, by its file (also one made before the database).
            SERIAL=$(record "$(abspath "$TARGET")")
            revoke_serial "$SERIAL"
        else
            [[ "$TARGET" =~ ^[a-z0-9_.-]+$ ]] \
                || die "'$TARGET' is neither a certificate file nor a site id or bridge name"
            # Certificates of that name issued before the database existed.
            for f in "$DIR/sites/$TARGET/client.pem" "$DIR/bridges/$TARGET/client.pem"; do
                if [ -f "$f" ]; then
                    record "$f" >/dev/null
                fi
            done
            SERIALS=$(awk -F'\t' -v cn="/CN=$TARGET" '$1 == "V" && $6 == cn { print $4 }' "$DIR/index.txt")
            if [ -z "$SERIALS" ]; then
                awk -F'\t' -v cn="/CN=$TARGET" '$1 == "R" && $6 == cn { f = 1 } END { exit !f }' \
                    "$DIR/index.txt" || die "no certificate named '$TARGET' in $DIR/index.txt"
                echo "$TARGET: every certificate already revoked"
            fi
            for s in $SERIALS; do
                revoke_serial "$s"
            done
        fi
        gencrl
        ;;
    crl)
        ca_db
        gencrl
        ;;
    list)
        ca_db
        # Marks expired certificates E (it says nothing when none did).
        ossl_ca -updatedb || true
        printf '%-8s %-14s %-42s %s\n' status expires serial name
        awk -F'\t' '{
            st = $1 == "V" ? "valid" : $1 == "R" ? "revoked" : $1 == "E" ? "expired" : $1
            printf "%-8s %-14s %-42s %s\n", st, $2, $4, substr($6, 5)
        }' "$DIR/index.txt"
        ;;
    *) die "unknown command '$KIND' (ca | server | site | bridge | revoke | crl | list)" ;;
esac
