# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it; do not run it.
# Keeps the scripts working on a fresh Debian/Ubuntu machine with Rust installed.

# Debian packages the tests and the demo need (real services, no mocks).
SITEWATCH_DEB_PACKAGES=(mosquitto mosquitto-clients postgresql postgresql-client syslog-ng-core bsdutils smartmontools
    nut-server)

# The real RTSP server of the RTSP probe tests (scripts/rtsp-test-server.py,
# run with /usr/bin/python3) and ffprobe for scripts/bench/rtsp.sh:
# x264enc is in -ugly, x265enc in -bad, the RTP payloaders in -good.
SITEWATCH_RTSP_PACKAGES=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad ffmpeg)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get that waits up to 5 min for another apt/dpkg (unattended-upgrades,
# a parallel test run) instead of failing on its lock.
apt_get() {
    as_root apt-get -o DPkg::Lock::Timeout=300 "$@"
}

# Runs "$@" up to 3 times, 10 s apart, refreshing the package lists before
# each retry: a mirror hiccup or lists that moved on between an update and
# a download must not fail a test run.
apt_retry() {
    local n
    for n in 1 2 3; do
        "$@" && return 0
        [ "$n" -eq 3 ] && break
        log "'$*' failed (try $n of 3); refreshing the package lists and retrying in 10 s"
        sleep 10
        apt_get update -qq || true
    done
    return 1
}

# PostgreSQL server binaries are not on PATH on Debian.
pg_bindir() {
    if [ -n "${SITEWATCH_PG_BINDIR:-}" ]; then echo "$SITEWATCH_PG_BINDIR"; return; fi
    local d
    d=$(printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -1 || true)
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
        apt_get update -qq || true
        # If apt starts the system services, they are left alone: our tests
        # and the demo never use them.
        DEBIAN_FRONTEND=noninteractive apt_retry apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
    [ -x "$(pg_bindir)/initdb" ] || die "PostgreSQL server binaries not found (set SITEWATCH_PG_BINDIR)"
    ensure_debian_packages "${SITEWATCH_RTSP_PACKAGES[@]}"
    /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null \
        || die "/usr/bin/python3 cannot load GstRtspServer (python3-gi, gir1.2-gst-rtsp-server-1.0)"
    # The Grafana provisioning tests read YAML with python3's PyYAML.
    if ! python3 -c 'import yaml' 2>/dev/null; then
        log "Installing PyYAML for python3"
        python3 -m pip install --quiet pyyaml 2>/dev/null \
            || apt_retry apt_get install -y -qq python3-yaml >/dev/null \
            || die "python3 cannot import yaml: install python3-yaml or pip install pyyaml"
    fi
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

# Installs the named Debian packages that are missing (cross-build, emulation
# and packaging tools; used by build-release.sh, test-cross.sh and
# test-packaging.sh). Like ensure_system_packages, it never starts services.
ensure_debian_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get; install them by hand"
    log "Installing system packages: ${missing[*]}"
    apt_get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt_retry apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

# Pinned cross-linking tools, both wheels from PyPI (no compiling, no
# toolchain download at build time): cargo-zigbuild drives cargo with zig as
# the C compiler and linker; ziglang ships zig with musl libc and crt objects
# for every target.
SITEWATCH_ZIGBUILD_VERSION=${SITEWATCH_ZIGBUILD_VERSION:-0.24.1}
SITEWATCH_ZIGLANG_VERSION=${SITEWATCH_ZIGLANG_VERSION:-0.17.1}

# Makes `cargo zigbuild` available: a Python venv under
# $SITEWATCH_TOOLS_DIR (default ~/.cache/sitewatch/tools) holding the pinned
# cargo-zigbuild and ziglang, prepended to PATH (its python3 is the one
# cargo-zigbuild asks for `-m ziglang`). Reused when the versions match.
ensure_zigbuild() {
    local dir=${SITEWATCH_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sitewatch/tools}
    local venv="$dir/zigbuild-$SITEWATCH_ZIGBUILD_VERSION-zig-$SITEWATCH_ZIGLANG_VERSION"
    if [ ! -x "$venv/bin/cargo-zigbuild" ] || ! "$venv/bin/python3" -m ziglang version >/dev/null 2>&1; then
        command -v python3 >/dev/null || ensure_debian_packages python3
        # Debian's python3 creates venvs only with python3-venv (ensurepip).
        python3 -c 'import ensurepip, venv' 2>/dev/null || ensure_debian_packages python3-venv
        log "Installing cargo-zigbuild $SITEWATCH_ZIGBUILD_VERSION and ziglang $SITEWATCH_ZIGLANG_VERSION (PyPI) into $venv"
        rm -rf "$venv"
        mkdir -p "$dir"
        python3 -m venv "$venv" || die "python3 -m venv $venv failed"
        "$venv/bin/python3" -m pip install -q --disable-pip-version-check \
            "cargo-zigbuild==$SITEWATCH_ZIGBUILD_VERSION" "ziglang==$SITEWATCH_ZIGLANG_VERSION" \
            || die "pip install cargo-zigbuild/ziglang failed"
    fi
    export PATH="$venv/bin:$PATH"
    command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild is not on PATH after installing it"
}

# Runs a command as the postgres user when root (initdb and postgres refuse
# to run as root), as is otherwise.
run_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_throwaway_mosquitto DIR PORT [EXTRA_CONFIG_LINES]
# Starts mosquitto in the background on 127.0.0.1:PORT with its config and
# log in DIR; prints its PID. Anonymous access: for local demos and benches.
start_throwaway_mosquitto() {
    local dir="$1" port="$2" extra="${3:-}"
    local bin
    bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    cat > "$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_dest file $dir/mosquitto.log
user $(id -un)
$extra
CONF
    "$bin" -c "$dir/mosquitto.conf" >/dev/null 2>&1 &
    echo $!
}

# start_throwaway_postgres DIR PORT [POSTGRES_OPTIONS]
# initdb in DIR/pg and starts it on 127.0.0.1:PORT (socket in DIR/pg); waits
# until it accepts connections. Stop it with stop_throwaway_postgres DIR.
start_throwaway_postgres() {
    local dir="$1" port="$2" opts="${3:-}"
    local bindir
    bindir=$(pg_bindir)
    mkdir -p "$dir/pg"
    chmod 755 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pg"
    run_as_pg "$bindir/initdb" -D "$dir/pg" -U postgres -A trust --no-sync -E UTF8 --locale=C \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    run_as_pg "$bindir/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir/pg $opts" start >/dev/null \
        || { cat "$dir/pg/server.log" >&2; die "PostgreSQL did not start"; }
}

# stop_throwaway_postgres DIR
stop_throwaway_postgres() {
    local dir="$1"
    [ -f "$dir/pg/postmaster.pid" ] && run_as_pg "$(pg_bindir)/pg_ctl" -D "$dir/pg" -m fast stop >/dev/null 2>&1
    return 0
}

# How to get TARGET's standard library: prints "prebuilt" when rustup has it
# (installing it if it can) and "build-std" when std must be compiled from
# source with -Zbuild-std (rustup has no rust-std for the target here, as
# for armv7-unknown-linux-musleabihf on some machines), or always with
# SITEWATCH_FORCE_BUILD_STD=1.
rust_std_mode() {
    local t=$1
    if [ "${SITEWATCH_FORCE_BUILD_STD:-0}" = 1 ]; then echo build-std; return; fi
    if rustup target list --installed | grep -qx "$t"; then echo prebuilt; return; fi
    log "rustup target add $t"
    if rustup target add "$t" >/dev/null 2>&1; then echo prebuilt; else echo build-std; fi
}

# Makes sure TOOLCHAIN has rust-src (needed by -Zbuild-std).
ensure_rust_src() {
    local tc=$1
    rustup toolchain list | grep -q "^$tc" || die "toolchain $tc is not installed (rustup toolchain install $tc)"
    if ! rustup component list --toolchain "$tc" --installed | grep -q '^rust-src'; then
        log "rustup component add rust-src --toolchain $tc"
        rustup component add rust-src --toolchain "$tc" || die "cannot install rust-src for $tc; -Zbuild-std needs it"
    fi
}

# Runs a cargo-zigbuild command (build, test, ...) for TARGET whose std is
# built from source: -Zbuild-std with RUSTC_BOOTSTRAP=1 (it is unstable) on
# $SITEWATCH_BUILD_STD_TOOLCHAIN (default: the active toolchain, so every
# target is built by one compiler version), in its own target directory
# BASE_TARGET_DIR/build-std (RUSTC_BOOTSTRAP changes host build-script
# fingerprints, which would otherwise rebuild the other targets from
# scratch), and with -Clink-self-contained=no (no rust-std means no
# self-contained musl crt1.o/libc.a from rustup; zig supplies its own).
#   cargo_build_std TARGET BASE_TARGET_DIR SUBCOMMAND [ARGS...]
cargo_build_std() {
    local t=$1 base=$2 sub=$3 tc flags_var
    shift 3
    tc=${SITEWATCH_BUILD_STD_TOOLCHAIN:-$(rustup show active-toolchain | awk '{print $1}')}
    ensure_rust_src "$tc"
    flags_var="CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
    env RUSTUP_TOOLCHAIN="$tc" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$base/build-std" \
        "$flags_var=${!flags_var:-} -Clink-self-contained=no" \
        cargo-zigbuild "$sub" --target "$t" "$@"
}
