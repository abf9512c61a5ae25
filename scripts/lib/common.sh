# Shared helpers for scripts/*.sh. Source it; do not run it.
# Keeps the scripts working on a fresh Debian/Ubuntu machine with Rust installed.

# Debian packages the tests and the demo need (real services, no mocks).
SITEWATCH_DEB_PACKAGES=(mosquitto mosquitto-clients postgresql postgresql-client)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# PostgreSQL server binaries are not on PATH on Debian.
pg_bindir() {
    if [ -n "${SITEWATCH_PG_BINDIR:-}" ]; then echo "$SITEWATCH_PG_BINDIR"; return; fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$d" ] && { echo "$d"; return; }
    command -v pg_config >/dev/null && pg_config --bindir
}

# Installs the Debian packages that are missing. Does not start or enable the
# system services: tests and the demo run their own throwaway instances.
ensure_system_packages() {
    command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs first"
    local missing=()
    for p in "${SITEWATCH_DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get; install them by hand"
        log "Installing system packages: ${missing[*]}"
        as_root apt-get update -qq
        # If apt starts the system services, they are left alone: our tests
        # and the demo never use them.
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    [ -x "$(pg_bindir)/initdb" ] || die "PostgreSQL server binaries not found (set SITEWATCH_PG_BINDIR)"
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || die "mosquitto not found"
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( (RANDOM % 20000) + 30000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free port found"
}
