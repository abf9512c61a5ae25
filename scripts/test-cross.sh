#!/usr/bin/env bash
# Runs the cross-built release agents (./scripts/build-release.sh) the way a
# gateway would, under qemu-user: aarch64 with qemu-aarch64-static, armv7
# with qemu-arm-static (called explicitly, so binfmt_misc need not be set
# up), and the x86_64 build natively as the baseline. For each binary:
#
#   1. `--version` prints "sitewatch-agent X.Y.Z";
#   2. `check --config examples/agent-local.toml` accepts the example;
#   3. against a throwaway mosquitto on a free loopback port (never the
#      system one on 1883): the retained birth (state online) and a
#      heartbeat reach a subscriber;
#   4. resident memory of the running process after start-up (VmRSS and
#      VmHWM from /proc/PID/status; under emulation that PID is qemu's, so
#      the figure includes qemu itself: compare with the native x86_64 row);
#   5. syslog: with `[syslog] udp = ["127.0.0.1:PORT"]`, a line sent with
#      `logger` over UDP comes out on sitewatch/v1/<site>/log. A binary
#      without the [syslog] table ("unknown setting `syslog`", agents before
#      the syslog receiver landed) fails this step, or is skipped with
#      SITEWATCH_REQUIRE_SYSLOG=0;
#   6. SIGTERM: exit status 0 and the retained status turns offline/shutdown;
#   7. natively, under strace: every system call the agent makes is allowed
#      by SystemCallFilter= in systemd/sitewatch-agent.service;
#   8. with --unit-tests: the agent's unit tests (`cargo test --lib`) built
#      for aarch64 and armv7 and run under qemu-user through the runners in
#      .cargo/config.toml: byte order, 32-bit layouts and alignment of
#      on-disk and ioctl structures (SMART) checked on the real targets.
#      SITEWATCH_CROSS_TEST_ARGS is passed to the test binaries (e.g.
#      "--skip random_operations" or a name filter). Builds with cargo.
#
# Usage: ./scripts/test-cross.sh [--dist DIR] [--target TRIPLE]... [--unit-tests]
# Ends with "N passed, N failed, N skipped"; exit status 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

DIST=dist
TARGETS=()
UNIT_TESTS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --unit-tests) UNIT_TESTS=1; shift ;;
        --dist) DIST="${2:?--dist needs a directory}"; shift 2 ;;
        --target) TARGETS+=("${2:?--target needs a triple}"); shift 2 ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
    [ "$(uname -m)" = x86_64 ] && TARGETS+=(x86_64-unknown-linux-musl)
fi

# qemu-user-static: the emulators; mosquitto(-clients): broker and
# subscriber; bsdutils: util-linux `logger` (-n/-P/-d).
ensure_debian_packages qemu-user-static mosquitto mosquitto-clients bsdutils
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || die "mosquitto not found"

runner_for() {
    case "$1" in
        aarch64-*) echo qemu-aarch64-static ;;
        armv7-*|arm-*) echo qemu-arm-static ;;
        "$(uname -m)"-*) echo "" ;;
        *) die "no emulator known for $1" ;;
    esac
}

WORK=$(mktemp -d /tmp/sitewatch-cross.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

PASSED=0 FAILED=0 SKIPPED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok    %s\n' "$1"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'skip  %s\n' "$1"; }
# fail NAME [FILE...]: prints the tail of each file as evidence.
fail() {
    FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$1"
    shift
    local f
    for f in "$@"; do
        [ -s "$f" ] && { echo "      --- ${f#"$WORK"/} (last lines):"; tail -n 15 "$f" | sed 's/^/      /'; }
    done
    return 0
}

# Waits until FILE contains a line matching the extended regex, or SECS pass.
wait_for_line() {
    local file=$1 re=$2 secs=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        grep -Eq -- "$re" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Starts mosquitto_sub with client id ID on the topics and waits until the
# broker logged the subscription, so nothing published afterwards is missed.
# Sets SUB_PID.
subscribe() {
    local id=$1 count=$2 secs=$3 out=$4 last_topic topic args=()
    shift 4
    for topic in "$@"; do args+=(-t "$topic"); last_topic=$topic; done
    mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i "$id" -v -C "$count" -W "$secs" "${args[@]}" >"$out" 2>&1 &
    SUB_PID=$!
    PIDS+=("$SUB_PID")
    wait_for_line "$WORK/mosquitto.log" "$id [0-9] $last_topic\$" 10 \
        || { echo "subscriber $id did not subscribe" >>"$out"; return 1; }
}

# A throwaway broker for the whole run; it logs subscriptions so that
# subscribe() can wait for them.
MQTT_PORT=$(free_port)
MOSQ_PID=$(start_throwaway_mosquitto "$WORK" "$MQTT_PORT" "$(printf 'log_type %s\n' error warning notice information subscribe)")
PIDS+=("$MOSQ_PID")
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null || { cat "$WORK/mosquitto.log" >&2; die "mosquitto did not start on port $MQTT_PORT"; }
log "Throwaway mosquitto on 127.0.0.1:$MQTT_PORT"

# RSS of the same binary (under the same emulator) blocked in open(2) on a
# FIFO given as its config file: arguments parsed, no runtime, no
# connection. Under qemu this is mostly qemu's own cost, so "running minus
# this" approximates what the agent's runtime adds.
baseline_rss() {
    local out=$1 fifo pid kib=0 i
    shift
    fifo="$out/fifo.toml"
    rm -f "$fifo"; mkfifo "$fifo"
    "$@" check --config "$fifo" >/dev/null 2>&1 &
    pid=$!
    sleep 1
    [ -r "/proc/$pid/status" ] && kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    # Unblock it with an empty config (check then fails; expected).
    : >"$fifo" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "${kib:-0}"
}

RSS_TABLE=()
test_target() {
    local t=$1 bin="$DIST/sitewatch-agent-$1" runner short site out
    short=${t%%-*}
    site="cross-$short"
    out="$WORK/$short"
    mkdir -p "$out"
    log "$t"
    if [ ! -f "$bin" ]; then
        fail "$short: $bin is missing (run ./scripts/build-release.sh)"
        return
    fi
    runner=$(runner_for "$t")
    local run=()
    [ -n "$runner" ] && run=("$runner")
    if [ -n "$runner" ] && ! command -v "$runner" >/dev/null; then
        fail "$short: $runner not found (apt-get install qemu-user-static)"
        return
    fi
    local how=${runner:-native}

    # 1. version
    if "${run[@]}" "$bin" --version >"$out/version" 2>&1 && grep -Eq '^sitewatch-agent [0-9]+\.[0-9]+\.[0-9]+' "$out/version"; then
        pass "$short: --version under $how: $(head -1 "$out/version")"
    else
        fail "$short: --version under $how" "$out/version"
    fi

    # discover: the router builds leave it out (the `discover` feature,
    # build-release.sh) and must say where to find it, not fail obscurely.
    case "$short" in
        aarch64|armv7)
            if ! "${run[@]}" "$bin" discover >"$out/discover" 2>&1 && grep -q 'x86_64 build' "$out/discover"; then
                pass "$short: discover is left out and says where to run it"
            else
                fail "$short: discover should be left out with a plain-words pointer" "$out/discover"
            fi ;;
    esac

    # 2. example config
    if "${run[@]}" "$bin" check --config examples/agent-local.toml >"$out/check-example" 2>&1; then
        pass "$short: check --config examples/agent-local.toml"
    else
        fail "$short: check --config examples/agent-local.toml" "$out/check-example"
    fi

    # The live config; [syslog] only if this build knows the table.
    local syslog_port
    syslog_port=$(free_port)
    write_config() {
        cat <<CONF
site_id = "$site"

[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"
keep_alive_secs = 10

[heartbeat]
interval_secs = 60

[disk]
interval_secs = 60
mounts = ["/"]

[log]
level = "info"
CONF
        if [ "$1" = with-syslog ]; then
            # UDP on a free loopback port, TCP off so nothing binds
            # 0.0.0.0:514 (the default).
            cat <<CONF

[syslog]
udp = ["127.0.0.1:$syslog_port"]
tcp = []
CONF
        fi
    }
    local syslog=no
    # shellcheck disable=SC2016 # the backquotes are literal: the agent's wording
    local unknown_syslog='unknown setting `syslog`'
    write_config with-syslog >"$out/agent-syslog.toml"
    if "${run[@]}" "$bin" check --config "$out/agent-syslog.toml" >"$out/check-syslog" 2>&1; then
        syslog=yes
        write_config with-syslog >"$out/agent.toml"
    elif grep -qF "$unknown_syslog" "$out/check-syslog"; then
        syslog=unsupported
        write_config plain >"$out/agent.toml"
    else
        fail "$short: [syslog] config rejected by check" "$out/check-syslog"
        write_config plain >"$out/agent.toml"
    fi

    # 3. birth and heartbeat
    local sub_ok=1
    subscribe "sub-$site" 2 90 "$out/sub" "sitewatch/v1/$site/status" "sitewatch/v1/$site/heartbeat" || sub_ok=0
    local sub=$SUB_PID
    "${run[@]}" "$bin" --config "$out/agent.toml" >"$out/agent.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    local t0=$SECONDS
    wait "$sub" 2>/dev/null || true
    local elapsed=$((SECONDS - t0))
    if [ "$sub_ok" = 1 ] \
        && grep -q "^sitewatch/v1/$site/status .*\"site\":\"$site\".*\"state\":\"online\"" "$out/sub" \
        && grep -q "^sitewatch/v1/$site/heartbeat .*\"site\":\"$site\"" "$out/sub"; then
        pass "$short: birth and heartbeat received by a subscriber (${elapsed} s after start)"
    else
        fail "$short: birth and heartbeat received by a subscriber" "$out/sub" "$out/agent.log"
    fi

    # 4. resident memory after start-up
    sleep 2
    if kill -0 "$pid" 2>/dev/null && [ -r "/proc/$pid/status" ]; then
        local rss hwm base
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
        base=$(baseline_rss "$out" "${run[@]}" "$bin")
        RSS_TABLE+=("$(printf '%-34s %-20s %8s KiB %8s KiB %8s KiB %8s KiB' "$t" "$how" "$rss" "$hwm" "$base" "$((rss - base))")")
        pass "$short: running after start-up, VmRSS $rss KiB, VmHWM $hwm KiB ($how)"
    else
        fail "$short: agent process gone after start-up" "$out/agent.log"
    fi

    # 5. syslog relay
    case "$syslog" in
        yes)
            local token
            token="cross-$short-$RANDOM$RANDOM"
            if subscribe "log-$site" 1 20 "$out/log-sub" "sitewatch/v1/$site/log"; then
                local logsub=$SUB_PID
                logger -n 127.0.0.1 -P "$syslog_port" -d -t sitewatch-cross "relay test $token"
                sleep 3
                kill -0 "$logsub" 2>/dev/null && logger -n 127.0.0.1 -P "$syslog_port" -d -t sitewatch-cross "relay test $token"
                wait "$logsub" 2>/dev/null || true
            fi
            if grep -q "^sitewatch/v1/$site/log .*$token" "$out/log-sub" 2>/dev/null; then
                pass "$short: [syslog] UDP line relayed on sitewatch/v1/$site/log"
            else
                fail "$short: [syslog] UDP line relayed on sitewatch/v1/$site/log" "$out/log-sub" "$out/agent.log"
            fi
            ;;
        unsupported)
            if [ "${SITEWATCH_REQUIRE_SYSLOG:-1}" = 0 ]; then
                skip "$short: [syslog] relay (this build has no [syslog] table; SITEWATCH_REQUIRE_SYSLOG=0)"
            else
                fail "$short: [syslog] relay: this build has no [syslog] table" "$out/check-syslog"
            fi
            ;;
        *) ;; # already failed above
    esac

    # 6. graceful stop
    kill -TERM "$pid" 2>/dev/null || true
    local i status=
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        fail "$short: still running 20 s after SIGTERM" "$out/agent.log"
        return
    fi
    wait "$pid" 2>/dev/null && status=0 || status=$?
    mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -v -C 1 -W 5 -t "sitewatch/v1/$site/status" >"$out/death" 2>&1 || true
    if [ "$status" = 0 ] && grep -q '"state":"offline".*"reason":"shutdown"\|"reason":"shutdown".*"state":"offline"' "$out/death"; then
        pass "$short: SIGTERM: exit 0, retained status offline/shutdown"
    else
        echo "exit status $status" >>"$out/death"
        fail "$short: SIGTERM: exit 0, retained status offline/shutdown" "$out/death" "$out/agent.log"
    fi
}

# Expands a systemd syscall group (@name) into system call names.
expand_syscalls() {
    local x
    systemd-analyze syscall-filter --no-pager "$1" | awk 'NR > 1 && $1 !~ /^#/ && NF { print $1 }' |
        while read -r x; do
            case "$x" in
                @*) expand_syscalls "$x" ;;
                *) echo "$x" ;;
            esac
        done
}

# 7. Every system call the native agent makes in a run (start, connect,
# birth, heartbeat, disk, [syslog], SIGTERM) is allowed by the
# SystemCallFilter= of systemd/sitewatch-agent.service. The aarch64/armv7
# builds make the same calls under their *at/p* names, which sit in the same
# groups.
syscall_audit() {
    local bin="$DIST/sitewatch-agent-x86_64-unknown-linux-musl" cfg="$WORK/x86_64/agent.toml"
    local unit=systemd/sitewatch-agent.service out="$WORK/audit" name
    name="syscall audit (x86_64, strace) against $unit"
    if [ "$(uname -m)" != x86_64 ] || [ ! -f "$bin" ] || [ ! -f "$cfg" ] || [ ! -f "$unit" ]; then
        skip "$name: needs the native x86_64 run and the unit"
        return
    fi
    ensure_debian_packages strace systemd
    mkdir -p "$out"
    local allow=() deny=() v
    while IFS= read -r v; do
        v=${v#SystemCallFilter=}
        case "$v" in
            "~"*) read -ra words <<<"${v#\~}"; deny+=("${words[@]}") ;;
            *) read -ra words <<<"$v"; allow+=("${words[@]}") ;;
        esac
    done < <(grep '^SystemCallFilter=' "$unit")
    expand_list() { local w; for w in "$@"; do case "$w" in @*) expand_syscalls "$w" ;; *) echo "$w" ;; esac; done; }
    # Always allowed by systemd (systemd.exec(5)).
    { expand_list "${allow[@]}"; printf '%s\n' execve exit exit_group rt_sigreturn sigreturn; } | sort -u >"$out/allow"
    if [ ${#deny[@]} -gt 0 ]; then expand_list "${deny[@]}" | sort -u >"$out/deny"; else : >"$out/deny"; fi
    comm -23 "$out/allow" "$out/deny" >"$out/allowed"

    subscribe "audit-x86_64" 1 60 "$out/sub" "sitewatch/v1/cross-x86_64/heartbeat" || true
    local sub=$SUB_PID
    strace -f -qq -o "$out/strace" "$bin" --config "$cfg" >"$out/agent.log" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    wait "$sub" 2>/dev/null || true
    if grep -q 'udp = \["127.0.0.1:' "$cfg"; then
        local port
        port=$(sed -n 's/^udp = \["127.0.0.1:\([0-9]*\)"\]/\1/p' "$cfg")
        logger -n 127.0.0.1 -P "$port" -d -t sitewatch-cross "syscall audit" || true
    fi
    sleep 2
    local child
    child=$(awk '{ print $1 }' "/proc/$spid/task/$spid/children" 2>/dev/null || true)
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
    local i
    for ((i = 0; i < 200; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$out/strace" | sort -u >"$out/used"
    comm -23 "$out/used" "$out/allowed" >"$out/outside"
    if [ ! -s "$out/used" ] || ! grep -q "^sitewatch/v1/cross-x86_64/heartbeat" "$out/sub"; then
        fail "$name: the traced run did not work" "$out/sub" "$out/agent.log"
    elif [ -s "$out/outside" ]; then
        fail "$name: used but not allowed: $(tr '\n' ' ' <"$out/outside")" "$out/agent.log"
    else
        pass "$name: all $(wc -l <"$out/used") system calls used are allowed"
    fi
}

# 8. Unit tests on the targets, under qemu (the runners in .cargo/config.toml).
unit_tests() {
    local t mode base log_file args=()
    ensure_zigbuild
    base=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    read -ra args <<<"${SITEWATCH_CROSS_TEST_ARGS:-}"
    for t in aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf; do
        log "unit tests for $t under $(runner_for "$t")"
        log_file="$WORK/unit-$t.log"
        mode=$(rust_std_mode "$t")
        local rc=0
        if [ "$mode" = build-std ]; then
            # The test harness needs std with unwinding and the test crate:
            # the default -Zbuild-std set.
            cargo_build_std "$t" "$base" test --locked -p sitewatch-agent --lib -Zbuild-std \
                -- --test-threads=2 ${args[@]+"${args[@]}"} >"$log_file" 2>&1 || rc=$?
        else
            cargo-zigbuild test --target "$t" --locked -p sitewatch-agent --lib \
                -- --test-threads=2 ${args[@]+"${args[@]}"} >"$log_file" 2>&1 || rc=$?
        fi
        local result
        result=$(grep -E '^test result:' "$log_file" | tail -1)
        if [ "$rc" = 0 ] && [ -n "$result" ]; then
            pass "${t%%-*}: agent unit tests under $(runner_for "$t"): ${result#test result: }"
        else
            fail "${t%%-*}: agent unit tests under $(runner_for "$t") (exit $rc)" "$log_file"
        fi
    done
}

for t in "${TARGETS[@]}"; do
    test_target "$t"
done
syscall_audit
[ "$UNIT_TESTS" = 1 ] && unit_tests

if [ ${#RSS_TABLE[@]} -gt 0 ]; then
    echo
    echo "Resident memory after start-up (connected, birth + first heartbeat sent):"
    printf '%-34s %-20s %12s %12s %12s %12s\n' target "run by" VmRSS VmHWM idle-binary "VmRSS-idle"
    printf '%s\n' "${RSS_TABLE[@]}"
    echo "Under qemu-user the PID is qemu's: VmRSS includes the emulator and its"
    echo "translated-code cache. idle-binary: the same command line blocked before"
    echo "reading its config (mostly qemu's own cost under emulation). The native"
    echo "row is the agent alone, the best estimate of its RSS on real hardware."
fi
echo
echo "test-cross: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
