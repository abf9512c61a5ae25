#!/usr/bin/env bash
# Tests the one-step central stack (deploy/central, docs/deploy.md):
#
#   1. shellcheck on the stack's scripts;
#   2. deploy/central/init.sh into a scratch directory: .env with random
#      passwords, the CA and the broker, PostgreSQL and bridge certificates,
#      key modes;
#   3. the compose file: `docker-compose config` (Debian's docker-compose,
#      a real Compose implementation: schema, interpolation, references),
#      and `docker compose config` too when that plugin exists; every image
#      pinned to a version; every bind-mounted file exists; Grafana mounts
#      all of grafana/provisioning; a required setting left empty is refused;
#   4. the bridge image (scripts/build-bridge-image.sh, FROM scratch): every
#      blob's digest and size, the config (user, entrypoint, command, port,
#      env) against deploy/bridge/Dockerfile, reproducible bytes, `skopeo
#      inspect`, `umoci unpack` into a runtime bundle whose rootfs holds only
#      the binary, the CA bundle and /etc/sitewatch;
#   5. the image runs: `podman load` and `podman run IMAGE --version` when
#      this machine can run containers; the entrypoint and command of the
#      unpacked bundle (umoci's config.json) run in its rootfs as its user
#      (chroot), with the compose stack's bridge.toml and certificates:
#      `--version`, `check`, and the service itself, which keeps running
#      while the broker and database are unreachable and stops on SIGTERM.
#
# Usage: ./scripts/test-deploy.sh
#   SITEWATCH_BRIDGE_IMAGE_BIN=FILE  use this static bridge binary (else
#                                    build-bridge-image.sh builds one)
# Ends with "scripts/test-deploy.sh: N passed, N failed, N skipped"; exit status 1 if
# anything failed. What this machine cannot do is a loud "skip".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

ensure_debian_packages shellcheck python3 openssl skopeo umoci docker-compose podman ca-certificates binutils

WORK=$(mktemp -d /tmp/sitewatch-deploy.XXXXXX)
cleanup() {
    if [ -n "${BRIDGE_PID:-}" ]; then kill "$BRIDGE_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PASSED=0 FAILED=0 SKIPPED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok    %s\n' "$1"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'SKIP  %s\n' "$1"; printf 'WARNING: not tested on this machine: %s\n' "$1" >&2; }
fail() {
    FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$1"
    shift
    local f
    for f in "$@"; do [ -s "$f" ] && sed 's/^/      /' "$f" | tail -n 30; done
    return 0
}
# check NAME COMMAND...: pass if the command succeeds, else fail with its output.
check() {
    local name=$1
    shift
    if "$@" >"$WORK/out" 2>&1; then pass "$name"; else fail "$name" "$WORK/out"; fi
}

# ------------------------------------------------------------ 1. shellcheck
check "shellcheck deploy/central, build-bridge-image.sh, test-deploy.sh" \
    shellcheck -x deploy/central/init.sh deploy/central/initdb.d/*.sh \
    scripts/build-bridge-image.sh scripts/test-deploy.sh

# ------------------------------------------------------------- 2. init.sh
ENV=$WORK/.env
check "init.sh: .env with passwords, the CA and the broker, postgres and bridge certificates" deploy/central/init.sh --env "$ENV" --broker-host mqtt.example.test --pki "$WORK/pki"
# The alerting settings a real operator fills in.
sed -i -e "s|^SITEWATCH_TELEGRAM_BOT_TOKEN=.*|SITEWATCH_TELEGRAM_BOT_TOKEN=123456:fake|" \
    -e "s|^SITEWATCH_TELEGRAM_CHAT_ID=.*|SITEWATCH_TELEGRAM_CHAT_ID=-100123|" \
    -e "s|^SITEWATCH_ALERT_EMAILS=.*|SITEWATCH_ALERT_EMAILS=ops@example.test|" \
    -e "s|^SITEWATCH_ALERT_WEBHOOK_URL=.*|SITEWATCH_ALERT_WEBHOOK_URL=https://hooks.example.test/x|" "$ENV"
check "init.sh again: keeps .env and the CA" deploy/central/init.sh --env "$ENV"
env_ok() {
    local mode k
    mode=$(stat -c %a "$ENV")
    [ "$mode" = 600 ] || { echo ".env mode $mode, want 600"; return 1; }
    for k in SITEWATCH_POSTGRES_PASSWORD SITEWATCH_GRAFANA_DB_PASSWORD SITEWATCH_GRAFANA_ADMIN_PASSWORD; do
        grep -Eq "^$k=[0-9a-f]{48}$" "$ENV" || { echo "$k not generated"; return 1; }
    done
    for f in ca.pem crl.pem server/mqtt.example.test/server.pem server/postgres/server.pem \
        bridges/bridge.central/client.pem bridges/bridge.central/client.key; do
        [ -s "$WORK/pki/$f" ] || { echo "missing $f"; return 1; }
    done
    if [ "$(id -u)" -eq 0 ]; then
        [ "$(stat -c %a:%g "$WORK/pki/bridges/bridge.central/client.key")" = 640:65532 ] || { echo "bridge key not 640 group 65532"; return 1; }
        [ "$(stat -c %a:%g "$WORK/pki/server/mqtt.example.test/server.key")" = 640:1883 ] || { echo "broker key not 640 group 1883"; return 1; }
    fi
    openssl verify -CAfile "$WORK/pki/ca.pem" "$WORK/pki/server/mqtt.example.test/server.pem" "$WORK/pki/bridges/bridge.central/client.pem"
}
check ".env is 600 with 48-hex passwords; certificates and key modes" env_ok

# --------------------------------------------------------------- 3. compose
COMPOSE=deploy/central/compose.yaml
check "docker-compose config (schema, interpolation, references)" \
    docker-compose -f "$COMPOSE" --env-file "$ENV" config -q
docker-compose -f "$COMPOSE" --env-file "$ENV" config > "$WORK/resolved.yaml" 2>"$WORK/out" || true
resolved_ok() {
    python3 - "$WORK/resolved.yaml" <<'PY'
import os, re, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
svc = c["services"]
want = {"mosquitto", "postgres", "loki", "grafana", "bridge"}
assert set(svc) == want, f"services {sorted(svc)}"
for name, s in svc.items():
    img = s["image"]
    repo, _, tag = img.rpartition(":")
    assert repo and re.match(r"^\d+\.\d+(\.\d+)?", tag), f"{name}: image {img} is not pinned to a version"
    for v in s.get("volumes", []):
        if isinstance(v, dict) and v.get("type") == "bind":
            assert os.path.exists(v["source"]), f"{name}: {v['source']} does not exist"
        elif isinstance(v, str) and v.startswith("/"):
            src = v.split(":")[0]
            assert os.path.exists(src), f"{name}: {src} does not exist"
g = svc["grafana"]
mounts = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in g["volumes"]]
for d in ("datasources", "dashboards", "alerting"):
    assert f"/etc/grafana/provisioning/{d}" in mounts, f"grafana lacks provisioning/{d}"
assert "/var/lib/grafana/dashboards/sitewatch" in mounts
assert svc["bridge"]["image"].startswith("localhost/sitewatch-bridge:")
env = svc["bridge"]["environment"]
assert env["SITEWATCH_MQTT_URL"] == "mqtts://mqtt.example.test:8883", env["SITEWATCH_MQTT_URL"]
aliases = svc["mosquitto"]["networks"]["default"]["aliases"]
assert "mqtt.example.test" in aliases, aliases
print("ok")
PY
}
check "compose: 5 services, images pinned, bind mounts exist, Grafana gets all provisioning" resolved_ok
refused_ok() {
    sed 's/^SITEWATCH_TELEGRAM_BOT_TOKEN=.*/SITEWATCH_TELEGRAM_BOT_TOKEN=/' "$ENV" > "$WORK/empty.env"
    if docker-compose -f "$COMPOSE" --env-file "$WORK/empty.env" config -q 2>"$WORK/err"; then
        echo "an empty SITEWATCH_TELEGRAM_BOT_TOKEN was accepted"; return 1
    fi
    grep -q "SITEWATCH_TELEGRAM_BOT_TOKEN" "$WORK/err" || { cat "$WORK/err"; return 1; }
}
check "compose: an empty required setting is refused, named" refused_ok
if docker compose version >/dev/null 2>&1; then
    check "docker compose config (Compose v2)" docker compose -f "$COMPOSE" --env-file "$ENV" config -q
else
    skip "docker compose v2 (no compose plugin for the docker CLI here; docker-compose 1.29 checked it)"
fi

# ------------------------------------------------------------------ 4. image
IMG=$WORK/img
BUILD_ARGS=(--out "$IMG")
[ -n "${SITEWATCH_BRIDGE_IMAGE_BIN:-}" ] && BUILD_ARGS+=(--bin "$SITEWATCH_BRIDGE_IMAGE_BIN")
if ! ./scripts/build-bridge-image.sh "${BUILD_ARGS[@]}" >"$WORK/build.log" 2>&1; then
    fail "build-bridge-image.sh" "$WORK/build.log"
    echo "scripts/test-deploy.sh: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    exit 1
fi
pass "build-bridge-image.sh: static binary, OCI layout and archive"
VERSION=$(cargo pkgid -p sitewatch-bridge); VERSION=${VERSION##*[#@]}
LAYOUT=$IMG/image/layout
ARCHIVE=$IMG/image/sitewatch-bridge-$VERSION-amd64.oci.tar
check "OCI layout: every digest and size" python3 scripts/lib/oci_image.py --check "$LAYOUT"
config_ok() {
    python3 scripts/lib/oci_image.py --check "$LAYOUT" > "$WORK/layout.json"
    python3 - "$WORK/layout.json" deploy/bridge/Dockerfile "$VERSION" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["config"]["config"]
df = {}
for line in open(sys.argv[2]):
    line = line.strip()
    if line and not line.startswith("#"):
        k, _, v = line.partition(" ")
        df.setdefault(k, []).append(v)
assert df["FROM"] == ["scratch"], df["FROM"]
assert c["Entrypoint"] == json.loads(df["ENTRYPOINT"][0]), (c["Entrypoint"], df["ENTRYPOINT"])
assert c["Cmd"] == json.loads(df["CMD"][0]), (c["Cmd"], df["CMD"])
assert c["User"] == df["USER"][0], (c["User"], df["USER"])
assert list(c["ExposedPorts"]) == [df["EXPOSE"][0] + "/tcp"], c["ExposedPorts"]
assert c["Env"] == df["ENV"], (c["Env"], df["ENV"])
assert d["config"]["os"] == "linux" and d["config"]["architecture"] == "amd64"
ref = d["index"]["manifests"][0]["annotations"]
assert ref["io.containerd.image.name"] == f"localhost/sitewatch-bridge:{sys.argv[3]}", ref
assert len(d["manifest"]["layers"]) == 1
print(json.dumps(c, indent=1))
PY
}
check "image config = deploy/bridge/Dockerfile (FROM scratch, user, entrypoint, command, port, env)" config_ok
repro_ok() {
    python3 scripts/lib/oci_image.py --bin "$IMG/sitewatch-bridge-x86_64-unknown-linux-musl" --out "$WORK/img2" \
        --tag "$VERSION" --ca-bundle "$IMG/ca-certificates.crt" --created 0 >/dev/null
    python3 scripts/lib/oci_image.py --bin "$IMG/sitewatch-bridge-x86_64-unknown-linux-musl" --out "$WORK/img3" \
        --tag "$VERSION" --ca-bundle "$IMG/ca-certificates.crt" --created 0 >/dev/null
    cmp "$WORK/img2/sitewatch-bridge-$VERSION-amd64.oci.tar" "$WORK/img3/sitewatch-bridge-$VERSION-amd64.oci.tar"
}
check "image bytes are reproducible" repro_ok
check "skopeo inspect oci:layout" sh -c "skopeo inspect 'oci:$LAYOUT:$VERSION' && skopeo inspect --config 'oci:$LAYOUT:$VERSION' | grep -q '\"User\": \"65532:65532\"'"
BUNDLE=$WORK/bundle
unpack_ok() {
    umoci unpack --image "$LAYOUT:$VERSION" "$BUNDLE" >/dev/null
    (cd "$BUNDLE/rootfs" && find . | sort) > "$WORK/rootfs.txt"
    printf '%s\n' . ./etc ./etc/sitewatch ./etc/ssl ./etc/ssl/certs ./etc/ssl/certs/ca-certificates.crt ./sitewatch-bridge | sort > "$WORK/want.txt"
    diff "$WORK/want.txt" "$WORK/rootfs.txt"
    python3 - "$BUNDLE/config.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["process"]
assert p["args"] == ["/sitewatch-bridge", "--config", "/etc/sitewatch/bridge.toml"], p["args"]
assert p["user"]["uid"] == 65532 and p["user"]["gid"] == 65532, p["user"]
PY
}
check "umoci unpack: rootfs is the binary, the CA bundle and /etc/sitewatch; args and user" unpack_ok
SIZE=$(stat -c %s "$ARCHIVE")
LAYER=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["manifest"]["layers"][0]["size"])' "$WORK/layout.json" 2>/dev/null || echo "?")
log "image: layer $LAYER bytes compressed, archive $SIZE bytes"

# -------------------------------------------------------------------- 5. run
if podman load -i "$ARCHIVE" >"$WORK/out" 2>&1; then
    pass "podman load"
    if podman run --rm "localhost/sitewatch-bridge:$VERSION" --version >"$WORK/run.out" 2>&1; then
        if grep -q "sitewatch-bridge" "$WORK/run.out"; then
            pass "podman run IMAGE --version"
        else
            fail "podman run IMAGE --version" "$WORK/run.out"
        fi
    else
        skip "podman run: this machine cannot run containers ($(tail -1 "$WORK/run.out")); the entrypoint runs through chroot below"
    fi
    podman rmi "localhost/sitewatch-bridge:$VERSION" >/dev/null 2>&1 || true
else
    fail "podman load" "$WORK/out"
fi
if docker info >/dev/null 2>&1; then
    check "docker load" docker load -i "$ARCHIVE"
else
    skip "docker load/run: no docker daemon on this machine (the CLI only)"
fi

# The bundle's own process (umoci's config.json) in its rootfs, as its user.
if [ "$(id -u)" -ne 0 ]; then
    skip "running the entrypoint in the unpacked rootfs (chroot needs root)"
else
    R=$BUNDLE/rootfs
    mkdir -p "$R/etc/sitewatch/tls"
    cp deploy/central/bridge.toml "$R/etc/sitewatch/bridge.toml"
    cp "$WORK/pki/bridges/bridge.central/"{ca.pem,client.pem} "$R/etc/sitewatch/tls/"
    install -m 640 -g 65532 "$WORK/pki/bridges/bridge.central/client.key" "$R/etc/sitewatch/tls/client.key"
    mapfile -t ARGS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["process"]["args"]))' "$BUNDLE/config.json")
    mapfile -t ENVS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["process"]["env"]))' "$BUNDLE/config.json")
    version_ok() { env -i "${ENVS[@]}" chroot --userspec=65532:65532 "$R" "${ARGS[0]}" --version | grep -q "^sitewatch-bridge "; }
    check "entrypoint --version in the rootfs as 65532" version_ok
    check_cfg() {
        env -i "${ENVS[@]}" SITEWATCH_POSTGRES_URL=postgresql://sitewatch:x@postgres:5432/sitewatch \
            chroot --userspec=65532:65532 "$R" "${ARGS[0]}" check "${ARGS[@]:1}"
    }
    check "entrypoint check ${ARGS[*]:1} (the compose stack's bridge.toml and certificates)" check_cfg
    # The service as the image starts it, with nothing to connect to: it
    # must keep trying (not exit) and stop cleanly on SIGTERM.
    service_ok() {
        env -i "${ENVS[@]}" SITEWATCH_MQTT_URL=mqtts://127.0.0.1:1 \
            SITEWATCH_POSTGRES_URL=postgresql://sitewatch:x@127.0.0.1:1/sitewatch RUST_LOG=info \
            chroot --userspec=65532:65532 "$R" "${ARGS[@]}" >"$WORK/service.log" 2>&1 &
        BRIDGE_PID=$!
        sleep 5
        if ! kill -0 "$BRIDGE_PID" 2>/dev/null; then
            wait "$BRIDGE_PID"; echo "exited with $? within 5 s"; cat "$WORK/service.log"; BRIDGE_PID=; return 1
        fi
        kill -TERM "$BRIDGE_PID"
        local rc=0
        wait "$BRIDGE_PID" || rc=$?
        BRIDGE_PID=
        [ -s "$WORK/service.log" ] || { echo "no log"; return 1; }
        [ "$rc" -ne 78 ] || { echo "exit 78: config refused"; cat "$WORK/service.log"; return 1; }
        head -n 5 "$WORK/service.log"
    }
    check "entrypoint + command run: keeps retrying the unreachable broker/database, stops on SIGTERM" service_ok
    [ -s "$WORK/service.log" ] && sed 's/^/      /' "$WORK/service.log" | head -n 4
fi

printf '\nscripts/test-deploy.sh: %d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
[ "$FAILED" -eq 0 ]
