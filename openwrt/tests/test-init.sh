#!/bin/sh
# shellcheck shell=dash
# Tests openwrt/files/sitewatch.init under a POSIX shell (run it with dash
# or `busybox sh`), with stand-ins for OpenWrt's UCI functions and procd's
# shell API (openwrt/tests/stubs/), against UCI fixtures written here:
#   - the shipped /etc/config/sitewatch (disabled: nothing started);
#   - an enabled config: generated TOML, its mode, procd parameters,
#     reload trigger, the agent's own `check` accepts the file;
#   - hostile values (quotes, backslashes, newlines, tabs, control
#     characters, a TOML injection attempt): the TOML parses (python3
#     tomllib) to exactly the UCI values, nothing injected;
#   - a bad number and a site id the agent rejects: not started, logged;
#     leading zeros dropped; a too large number, a value that is not
#     UTF-8, a syslog host listed twice: refused (found by fuzzing);
#   - disk reporting off; the [syslog] and [outbox] tables; cameras
#     ([rtsp]), [smart] and cleanup roots ([cleanup]); [lte]; [ups] (names, login,
#     its password file watched; off in the shipped config);
#   - reload (start_service again, as rc.common does for `reload`,
#     reload_config and LuCI) against the procd stand-in's model of which
#     instances procd keeps, signals, restarts or stops: a rejected or
#     untranslatable config keeps the agent running on the last good one;
#   - the package's docs: no stale "planned"/"soon", no "uci commit
#     reloads".
#
# Usage: sh openwrt/tests/test-init.sh [AGENT_BINARY]
#   AGENT_BINARY: a sitewatch-agent that runs here (e.g. the x86_64 musl
#   build); without it `check` is a stub that accepts everything and the
#   tests that need the real agent are skipped.
# shellcheck disable=SC2016 # '$NAME' values are read by python from the environment
# Ends with "N passed, N failed, N skipped"; exit status 1 on any failure.
# (No `set -u`: OpenWrt's functions.sh, and so its stand-in, expand unset
# optional arguments.)

HERE=$(cd "$(dirname "$0")" && pwd)
INIT="$HERE/../files/sitewatch.init"
SHIPPED="$HERE/../files/sitewatch.config"
AGENT=${1:-}
PYTHON=${PYTHON:-python3}

T=$(mktemp -d /tmp/sitewatch-init-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/etc/config" "$T/bin"
export UCI_CONFIG_DIR="$T/etc/config"
export PROCD_LOG="$T/procd.log"
# The procd stand-in's model of running instances (stubs/procd.sh).
export PROCD_STATE="$T/procd"
export LOGGER_LOG="$T/logger.log"
PATH="$HERE/stubs:$PATH"

if [ -z "$AGENT" ]; then
	# Accepts every config but one with a space in site_id (as the real
	# agent refuses it), so that reloads can be tested without the agent.
	cat >"$T/bin/sitewatch-agent" <<'EOF'
#!/bin/sh
if [ "$1" = check ] && grep -q '^site_id = ".* .*"' "$3"; then
	echo "site_id: only lowercase letters, digits, - and _ (stand-in agent)" >&2
	exit 1
fi
exit 0
EOF
	chmod +x "$T/bin/sitewatch-agent"
	AGENT="$T/bin/sitewatch-agent"
	REAL_AGENT=0
else
	REAL_AGENT=1
fi

PASSED=0
FAILED=0
SKIPPED=0
ok() { PASSED=$((PASSED + 1)); echo "ok    $1"; }
bad() {
	FAILED=$((FAILED + 1))
	echo "FAIL  $1"
	shift
	for f in "$@"; do
		[ -s "$f" ] && { echo "      --- $(basename "$f"):"; sed 's/^/      /' "$f"; }
	done
	return 0
}
skip() { SKIPPED=$((SKIPPED + 1)); echo "skip  $1"; }

# Single-quoted UCI value ('\'' for a quote inside).
uciq() {
	printf "'"
	printf '%s' "$1" | sed "s/'/'\\\\''/g"
	printf "'"
}

# Runs the init script's start as rc.common does for `start` and `reload`
# (rc_procd: procd_open_service, start_service, procd_close_service, which
# adds service_triggers and applies the declared instances to the procd
# stand-in's running ones), in a subshell, against
# $UCI_CONFIG_DIR/sitewatch; start_service's status is in $T/status.
rc_start() {
	: >"$PROCD_LOG"
	: >"$LOGGER_LOG"
	(
		# shellcheck disable=SC1091
		. "$HERE/stubs/functions.sh"
		# shellcheck disable=SC1091
		. "$HERE/stubs/procd.sh"
		# A function, not just PATH: Debian's busybox-static runs its own
		# applets before PATH (FEATURE_SH_STANDALONE), so its logger would
		# bypass the stand-in.
		# shellcheck disable=SC2317 # called by the init script (sw_log)
		logger() { "$HERE/stubs/logger" "$@"; }
		# shellcheck disable=SC1090
		. "$INIT"
		# shellcheck disable=SC2034 # read by the init script's functions
		PROG="$AGENT" CONF_DIR="$T/var/etc/sitewatch" CONF="$T/var/etc/sitewatch/agent.toml" RUN_DIR="$T/var/run/sitewatch"
		procd_open_service sitewatch "$INIT"
		start_service
		echo $? >"$T/status"
		procd_close_service
	) >"$T/stdout" 2>&1
}

# A first start: nothing running, nothing generated yet.
run_init() {
	rm -rf "${T:?}/var" "$PROCD_STATE"
	rc_start
}

procd_has() { grep -qxF -- "$1" "$PROCD_LOG"; }

# python3 tomllib: the file is valid TOML and the checks pass.
toml_check() {
	"$PYTHON" - "$@" <<'EOF'
import os, sys, tomllib
path = sys.argv[1]
with open(path, "rb") as f:
    doc = tomllib.load(f)
env = os.environ
def want(got, exp, what):
    if got != exp:
        sys.exit(f"{what}: got {got!r}, want {exp!r}")
for spec in sys.argv[2:]:
    key, _, exp = spec.partition("=")
    node = doc
    for part in key.split("/"):
        if part.startswith("!"):
            if part[1:] in node:
                sys.exit(f"{key}: present but must not be")
            node = None
            break
        if part not in node:
            sys.exit(f"{key}: missing")
        node = node[part]
    if node is None:
        continue
    if exp.startswith("$"):
        want(node, env[exp[1:]], key)
    elif exp.startswith("@"):
        want(node, [env[v[1:]] if v.startswith("$") else v for v in exp[1:].split(",") if v] , key)
    elif exp in ("true", "false"):
        want(node, exp == "true", key)
    elif exp.isdigit():
        want(node, int(exp), key)
    else:
        want(node, exp, key)
EOF
}

TOML="$T/var/etc/sitewatch/agent.toml"

# 1. The shipped config is disabled: nothing starts.
cp "$SHIPPED" "$UCI_CONFIG_DIR/sitewatch"
run_init
if [ "$(cat "$T/status")" = 0 ] && ! grep -q procd_open_instance "$PROCD_LOG" && grep -q "disabled" "$LOGGER_LOG"; then
	ok "shipped config: disabled, not started, says how to enable"
else
	bad "shipped config: disabled, not started" "$PROCD_LOG" "$LOGGER_LOG" "$T/stdout"
fi
if procd_has "procd_add_reload_trigger [sitewatch]"; then
	ok "service_triggers: procd_add_reload_trigger sitewatch"
else
	bad "service_triggers: procd_add_reload_trigger sitewatch" "$PROCD_LOG"
fi

# 2. The shipped config, enabled, with a local plain-MQTT broker and no
#    certificate files (they do not exist here).
sed -e "/^config agent/,/^config /s/option enabled '0'/option enabled '1'/" \
	-e "s#option url 'mqtts://broker.example.com:8883'#option url 'mqtt://127.0.0.1:1883'#" \
	-e "/option password_file /d" -e "/option ca_file /d" \
	"$SHIPPED" >"$UCI_CONFIG_DIR/sitewatch"
run_init
if [ "$(cat "$T/status")" = 0 ] && [ -f "$TOML" ]; then
	ok "enabled config: started, TOML written"
else
	bad "enabled config: started, TOML written" "$T/stdout" "$LOGGER_LOG"
fi
mode=$(stat -c %a "$TOML" 2>/dev/null || echo missing)
if [ "$mode" = 600 ]; then ok "TOML mode 0600 (umask 077)"; else bad "TOML mode is $mode, want 600"; fi
mode=$(stat -c %a "$T/var/run/sitewatch" 2>/dev/null || echo missing)
if [ "$mode" = 755 ]; then ok "status directory made (0755)"; else bad "status directory is $mode, want 755"; fi
if toml_check "$TOML" site_id=lokasi1 mqtt/url=mqtt://127.0.0.1:1883 mqtt/username=lokasi1 \
	mqtt/keep_alive_secs=30 heartbeat/interval_secs=30 disk/interval_secs=60 \
	disk/mounts=@/,/tmp disk/statvfs_timeout_ms=5000 log/level=info heartbeat/!wan_interface \
	mqtt/!allow_plaintext mqtt/!password mqtt/!ca_file "!syslog" "!outbox" "!ups" >"$T/py" 2>&1; then
	ok "TOML valid (tomllib) with the UCI values"
else
	bad "TOML valid (tomllib) with the UCI values" "$T/py" "$TOML"
fi
for p in "procd_open_instance" \
	"procd_set_param [command] [$AGENT] [--config] [$TOML]" \
	"procd_set_param [respawn] [3600] [5] [0]" \
	"procd_set_param [stdout] [1]" "procd_set_param [stderr] [1]" \
	"procd_set_param [term_timeout] [20]" \
	"procd_set_param [file] [/etc/config/sitewatch] [$TOML]" \
	"procd_close_instance"; do
	if procd_has "$p"; then ok "procd: $p"; else bad "procd: $p" "$PROCD_LOG"; fi
done
if [ "$REAL_AGENT" = 1 ]; then
	if "$AGENT" check --config "$TOML" >"$T/check" 2>&1; then
		ok "sitewatch-agent check accepts the generated TOML"
	else
		bad "sitewatch-agent check accepts the generated TOML" "$T/check" "$TOML"
	fi
else
	skip "sitewatch-agent check (no agent binary given)"
fi

# 2b. Run as an unprivileged user (`option user`): the status directory
#     belongs to it (the agent could not create it under /var/run), and the
#     TOML is readable by its group only. Needs root for chown/chgrp.
if [ "$(id -u)" = 0 ] && getent group daemon >/dev/null && getent passwd daemon >/dev/null; then
	sed -i "/^config agent/a\\	option user 'daemon'" "$UCI_CONFIG_DIR/sitewatch"
	run_init
	owner=$(stat -c '%U %a' "$T/var/run/sitewatch" 2>/dev/null || echo missing)
	if [ "$(cat "$T/status")" = 0 ] && [ "$owner" = "daemon 755" ]; then
		ok "option user: status directory owned by the run user"
	else
		bad "option user: status directory is '$owner', want 'daemon 755'" "$T/stdout" "$LOGGER_LOG"
	fi
	mode=$(stat -c '%a %G' "$TOML" 2>/dev/null || echo missing)
	if [ "$mode" = "640 daemon" ]; then ok "option user: TOML 0640 with the user's group"; else bad "option user: TOML is '$mode'"; fi
	if procd_has "procd_set_param [user] [daemon]"; then ok "procd: runs as daemon"; else bad "procd: runs as daemon" "$PROCD_LOG"; fi
else
	skip "option user (needs root and a daemon user and group)"
	skip "option user: TOML mode"
	skip "option user: procd user"
fi

# 3. Hostile values: quotes, backslashes, newline, tab, \001, a literal
#    "\u0041", non-ASCII, and an attempt to inject allow_plaintext.
HOSTILE_PW=$(printf 'a"b\\c'"'"'d\ne\tf\001g\\u0041 h]\nallow_plaintext = true\n[mqtt]\n#\303\251')
HOSTILE_USER=$(printf 'us\\er"\\"name')
HOSTILE_MOUNT=$(printf '/mnt/we"ird \\path [x]')
export HOSTILE_PW HOSTILE_USER HOSTILE_MOUNT
{
	echo "config agent 'main'"
	echo "	option enabled '1'"
	echo "	option site_id 'hostile'"
	echo "config mqtt 'mqtt'"
	echo "	option url 'mqtt://127.0.0.1:1883'"
	# printf, not echo: dash's echo would interpret the backslashes.
	printf '\toption username %s\n' "$(uciq "$HOSTILE_USER")"
	printf '\toption password %s\n' "$(uciq "$HOSTILE_PW")"
	echo "config disk 'disk'"
	echo "	list mount '/'"
	printf '\tlist mount %s\n' "$(uciq "$HOSTILE_MOUNT")"
} >"$UCI_CONFIG_DIR/sitewatch"
run_init
if [ "$(cat "$T/status")" = 0 ] && toml_check "$TOML" site_id=hostile 'mqtt/password=$HOSTILE_PW' \
	'mqtt/username=$HOSTILE_USER' 'disk/mounts=@/,$HOSTILE_MOUNT' mqtt/!allow_plaintext >"$T/py" 2>&1; then
	ok "hostile values round-trip exactly, nothing injected"
else
	bad "hostile values round-trip exactly, nothing injected" "$T/py" "$TOML" "$T/stdout"
fi
if grep -q 'allow_plaintext' "$TOML"; then
	# Only inside the escaped password string, never as a key.
	if grep -q '^allow_plaintext' "$TOML"; then bad "injected allow_plaintext line" "$TOML"; else ok "no allow_plaintext key line"; fi
else
	bad "hostile password missing from the TOML" "$TOML"
fi
if [ "$REAL_AGENT" = 1 ]; then
	if "$AGENT" check --config "$TOML" >"$T/check" 2>&1; then
		ok "sitewatch-agent check accepts the hostile-value TOML"
	else
		bad "sitewatch-agent check accepts the hostile-value TOML" "$T/check" "$TOML"
	fi
else
	skip "sitewatch-agent check on hostile values (no agent binary given)"
fi

# 3b. Found by fuzzing (fuzz/fuzz_targets/uci_translate.rs): leading zeros
#     are dropped (TOML has none); a number too large for TOML, a value
#     that is not UTF-8 and a syslog host listed twice are refused (and
#     logged, the secret not), not written as a file that is not TOML.
cat >"$UCI_CONFIG_DIR/sitewatch" <<'EOF'
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
	option keep_alive_secs '030'
config disk 'disk'
	option interval_secs '00060'
EOF
run_init
if [ "$(cat "$T/status")" = 0 ] && toml_check "$TOML" mqtt/keep_alive_secs=30 disk/interval_secs=60 >"$T/py" 2>&1; then
	ok "leading zeros dropped: 030 is written 30"
else
	bad "leading zeros dropped: 030 is written 30" "$T/py" "$TOML" "$T/stdout"
fi
refused() {
	run_init
	if [ "$(cat "$T/status")" != 0 ] && ! grep -q procd_open_instance "$PROCD_LOG" \
		&& grep -qF -- "$2" "$LOGGER_LOG" && ! grep -q secret "$LOGGER_LOG" && [ ! -e "$TOML" ]; then
		ok "$1"
	else
		bad "$1" "$LOGGER_LOG" "$PROCD_LOG" "$T/stdout"
	fi
}
base() {
	echo "config agent 'main'"
	echo "	option enabled '1'"
	echo "	option site_id 'lokasi1'"
	echo "config mqtt 'mqtt'"
	echo "	option url 'mqtt://127.0.0.1:1883'"
	echo "	option username 'lokasi1'"
}
{
	base
	echo "config outbox 'outbox'"
	echo "	option disk_max_bytes '99999999999999999999'"
} >"$UCI_CONFIG_DIR/sitewatch"
refused "a number too large for TOML: refused, logged" "disk_max_bytes: '99999999999999999999' is too large"
{
	base
	printf '\toption password %s\n' "$(uciq "$(printf 'caf\351-secret')")"
} >"$UCI_CONFIG_DIR/sitewatch"
refused "a password that is not UTF-8: refused, logged without it" "password: not UTF-8"
{
	base
	echo "config syslog 'syslog'"
	echo "	option enabled '1'"
	for n in nvr-1 nvr-2; do
		echo "config syslog_host"
		echo "	option address '192.168.1.64'"
		echo "	option name '$n'"
	done
} >"$UCI_CONFIG_DIR/sitewatch"
refused "a syslog host listed twice: refused, logged" 'address "192.168.1.64" is listed twice'

# 4. Not a number: refused before anything starts.
cat >"$UCI_CONFIG_DIR/sitewatch" <<'EOF'
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
	option keep_alive_secs '30; rm -rf /'
EOF
run_init
if [ "$(cat "$T/status")" != 0 ] && ! grep -q procd_open_instance "$PROCD_LOG" \
	&& grep -q "keep_alive_secs" "$LOGGER_LOG" && ! ls "$T/var/etc/sitewatch/"*.tmp.* >/dev/null 2>&1; then
	ok "bad number: not started, logged, no temp file left"
else
	bad "bad number: not started, logged, no temp file left" "$LOGGER_LOG" "$PROCD_LOG"
fi

# 5. A config the agent rejects: not started, the agent's words logged.
if [ "$REAL_AGENT" = 1 ]; then
	cat >"$UCI_CONFIG_DIR/sitewatch" <<'EOF'
config agent 'main'
	option enabled '1'
	option site_id 'Lokasi 1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
EOF
	run_init
	if [ "$(cat "$T/status")" != 0 ] && ! grep -q procd_open_instance "$PROCD_LOG" && grep -q "site_id" "$LOGGER_LOG"; then
		ok "rejected config: not started, agent's explanation logged"
	else
		bad "rejected config: not started, agent's explanation logged" "$LOGGER_LOG" "$PROCD_LOG"
	fi
else
	skip "rejected config (no agent binary given)"
fi

# 6. Disk reporting off: mounts = [].
cat >"$UCI_CONFIG_DIR/sitewatch" <<'EOF'
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
config disk 'disk'
	option enabled '0'
	list mount '/'
EOF
run_init
if [ "$(cat "$T/status")" = 0 ] && toml_check "$TOML" disk/mounts=@ >"$T/py" 2>&1; then
	ok "disk off: mounts = []"
else
	bad "disk off: mounts = []" "$T/py" "$TOML"
fi

# 7. [syslog] and [outbox]: tables as the agent's code expects.
cat >"$UCI_CONFIG_DIR/sitewatch" <<'EOF'
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
config syslog 'syslog'
	option enabled '1'
	list udp '127.0.0.1:1514'
	option timezone '+07:00'
	list allow 'private'
	list allow '10.1.0.0/16'
	option rate_limit_per_sec '500'
config syslog_host
	option address '192.168.1.64'
	option name 'nvr-1'
config outbox 'outbox'
	option dir '/mnt/sda1/sitewatch-outbox'
	option memory_max_bytes '1048576'
EOF
run_init
if toml_check "$TOML" syslog/udp=@127.0.0.1:1514 syslog/tcp=@ syslog/timezone=+07:00 \
	syslog/allow=@private,10.1.0.0/16 syslog/rate_limit_per_sec=500 \
	syslog/hosts/192.168.1.64=nvr-1 outbox/dir=/mnt/sda1/sitewatch-outbox \
	outbox/memory_max_bytes=1048576 >"$T/py" 2>&1; then
	ok "[syslog] (tcp off = []) and [outbox] tables"
else
	bad "[syslog] and [outbox] tables" "$T/py" "$TOML"
fi
# The agent's own check on each table alone: skipped while the agent does
# not know the table (an older agent build), a
# failure once it does and rejects what we generate.
table_check() {
	local table="$1" check_rc=0
	if [ "$REAL_AGENT" != 1 ]; then
		skip "agent check of [$table] (no agent binary given)"
		return
	fi
	"$AGENT" check --config "$T/table.toml" >"$T/check" 2>&1 || check_rc=$?
	if grep -q "unknown setting \`$table\`" "$T/check"; then
		skip "agent check of [$table] (this agent build does not have it)"
	elif [ "$check_rc" = 0 ]; then
		ok "agent accepts the generated [$table] table"
	else
		bad "agent accepts the generated [$table] table" "$T/check" "$T/table.toml"
	fi
}
# Same TOML without the other table.
awk '/^\[outbox\]/ { skip = 1 } /^\[/ && !/^\[outbox\]/ { skip = 0 } !skip' "$TOML" >"$T/table.toml"
table_check syslog
awk '/^\[syslog/ { skip = 1 } /^\[/ && !/^\[syslog/ { skip = 0 } !skip' "$TOML" >"$T/table.toml"
table_check outbox

# 7b. Cameras, SMART and cleanup: [rtsp] with [[rtsp.camera]], [smart],
#     [cleanup] with [[cleanup.root]], as the agent's code expects.
mkdir -p "$T/rec"
cat >"$UCI_CONFIG_DIR/sitewatch" <<EOF
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
config rtsp 'rtsp'
	option enabled '1'
	option interval_secs '120'
	option max_concurrent '1'
config camera
	option name 'gate'
	option url 'rtsp://192.168.1.64:554/Streaming/Channels/101'
	option username 'viewer'
	option password 'p"w\\x'
	option transport 'tcp'
	option min_fps '12.5'
config camera
	option name 'dahua-ch1'
	option url 'rtsp://192.168.1.108:554/cam/realmonitor?channel=1&subtype=0'
config smart 'smart'
	option enabled '1'
	list device '/dev/sda'
	option smartctl_fallback '0'
config cleanup 'cleanup'
	option enabled '1'
	option dry_run '1'
config cleanup_root
	option path '$T/rec'
	option high_watermark_pct '90'
	option low_watermark_pct '85'
	list include '*.mp4'
	list include '*.dav'
	option min_age '2d'
	option keep_newest '10'
EOF
run_init
if [ "$(cat "$T/status")" = 0 ] && REC="$T/rec" "$PYTHON" - "$TOML" >"$T/py" 2>&1 <<'EOF'
import os, sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))
cams = doc["rtsp"]["camera"]
assert doc["rtsp"]["interval_secs"] == 120 and doc["rtsp"]["max_concurrent"] == 1, doc["rtsp"]
assert [c["name"] for c in cams] == ["gate", "dahua-ch1"], cams
assert cams[0]["password"] == 'p"w\\x' and cams[0]["min_fps"] == 12.5, cams[0]
assert cams[1]["url"].endswith("channel=1&subtype=0") and "password" not in cams[1], cams[1]
assert doc["smart"] == {"devices": ["/dev/sda"], "smartctl_fallback": False}, doc["smart"]
root = doc["cleanup"]["root"][0]
assert doc["cleanup"]["dry_run"] is True
assert root["path"] == os.environ["REC"] and root["include"] == ["*.mp4", "*.dav"], root
assert (root["high_watermark_pct"], root["low_watermark_pct"], root["min_age"], root["keep_newest"]) == (90, 85, "2d", 10), root
EOF
then
	ok "[rtsp] cameras, [smart] and [cleanup] roots"
else
	bad "[rtsp] cameras, [smart] and [cleanup] roots" "$T/py" "$TOML" "$T/stdout" "$LOGGER_LOG"
fi
cp "$TOML" "$T/table.toml"
# It holds an inline camera password: owner-only, like the generated file.
chmod 600 "$T/table.toml"
table_check rtsp
sed -i "s/option min_fps '12.5'/option min_fps '12,5'/" "$UCI_CONFIG_DIR/sitewatch"
run_init
if [ "$(cat "$T/status")" != 0 ] && grep -q "min_fps: '12,5' is not a number" "$LOGGER_LOG"; then
	ok "a bad camera min_fps stops the start and is logged"
else
	bad "a bad camera min_fps stops the start and is logged" "$LOGGER_LOG" "$T/stdout"
fi

# 7c. [ups]: NUT's upsd, as the agent's code expects; the shipped config
#     has it off (no [ups] table); no name = every UPS upsd lists.
printf 'ups-secret\n' >"$T/ups.pass"
chmod 600 "$T/ups.pass"
cat >"$UCI_CONFIG_DIR/sitewatch" <<EOF
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
config ups 'ups'
	option enabled '1'
	option server '192.168.1.2:3493'
	list name 'rack'
	list name 'nvr-ups'
	option interval_secs '030'
	option timeout_secs '4'
	option username 'monuser'
	option password_file '$T/ups.pass'
EOF
run_init
if [ "$(cat "$T/status")" = 0 ] && UPS_PASS="$T/ups.pass" "$PYTHON" - "$TOML" >"$T/py" 2>&1 <<'EOF'
import os, sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))
want = {"server": "192.168.1.2:3493", "names": ["rack", "nvr-ups"], "interval_secs": 30,
        "timeout_secs": 4, "username": "monuser", "password_file": os.environ["UPS_PASS"]}
assert doc["ups"] == want, doc["ups"]
EOF
then
	ok "[ups] with names, login and password file"
else
	bad "[ups] with names, login and password file" "$T/py" "$TOML" "$T/stdout" "$LOGGER_LOG"
fi
if procd_has "procd_set_param [file] [/etc/config/sitewatch] [$TOML] [$T/ups.pass]"; then
	ok "procd: the UPS password file is watched"
else
	bad "procd: the UPS password file is watched" "$PROCD_LOG"
fi
cp "$TOML" "$T/table.toml"
table_check ups
cat >"$UCI_CONFIG_DIR/sitewatch" <<'EOF'
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
config ups 'ups'
	option enabled '1'
EOF
run_init
if [ "$(cat "$T/status")" = 0 ] && toml_check "$TOML" ups/names=@ ups/!server ups/!username >"$T/py" 2>&1; then
	ok "[ups] with defaults: names = [] (every UPS upsd lists)"
else
	bad "[ups] with defaults: names = [] (every UPS upsd lists)" "$T/py" "$TOML"
fi
echo "	option interval_secs '15s'" >>"$UCI_CONFIG_DIR/sitewatch"
run_init
if [ "$(cat "$T/status")" != 0 ] && grep -q "ups.interval_secs: '15s' is not a whole number" "$LOGGER_LOG"; then
	ok "a bad [ups] interval stops the start and is logged"
else
	bad "a bad [ups] interval stops the start and is logged" "$LOGGER_LOG" "$T/stdout"
fi

# 7d. [reach] with one [[reach.target]] per `config target` section; the
#     shipped config has it off (no [reach] table).
cat >"$UCI_CONFIG_DIR/sitewatch" <<EOF
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
config reach 'reach'
	option enabled '1'
	option interval_secs '20'
	option count '2'
	option timeout_ms '500'
config target
	option name 'NVR'
	option address '192.168.1.10'
config target
	option name 'NVR web'
	option address '192.168.1.10'
	option kind 'tcp'
	option port '80'
EOF
run_init
if [ "$(cat "$T/status")" = 0 ] && "$PYTHON" - "$TOML" >"$T/py" 2>&1 <<'EOF'
import sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))
r = doc["reach"]
assert (r["interval_secs"], r["count"], r["timeout_ms"]) == (20, 2, 500), r
assert r["target"] == [{"name": "NVR", "address": "192.168.1.10"},
                       {"name": "NVR web", "address": "192.168.1.10", "kind": "tcp", "port": 80}], r["target"]
EOF
then
	ok "[reach] with its [[reach.target]] entries"
else
	bad "[reach] with its [[reach.target]] entries" "$T/py" "$TOML" "$T/stdout" "$LOGGER_LOG"
fi
cp "$TOML" "$T/table.toml"
table_check reach
sed -i "s/option port '80'/option port 'http'/" "$UCI_CONFIG_DIR/sitewatch"
run_init
if [ "$(cat "$T/status")" != 0 ] && grep -q "port: 'http' is not a whole number" "$LOGGER_LOG"; then
	ok "a bad target port stops the start and is logged"
else
	bad "a bad target port stops the start and is logged" "$LOGGER_LOG" "$T/stdout"
fi

# 7e. [lte]: the LTE modem through ModemManager (off in the shipped config).
cat >"$UCI_CONFIG_DIR/sitewatch" <<EOF
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
config lte 'lte'
	option enabled '1'
	option modem '0'
	option interval_secs '090'
EOF
run_init
if [ "$(cat "$T/status")" = 0 ] && "$PYTHON" - "$TOML" >"$T/py" 2>&1 <<'EOF'
import sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))
assert doc["lte"] == {"modem": "0", "interval_secs": 90}, doc["lte"]
EOF
then
	ok "[lte] with modem and interval"
else
	bad "[lte] with modem and interval" "$T/py" "$TOML" "$T/stdout" "$LOGGER_LOG"
fi
cp "$TOML" "$T/table.toml"
table_check lte
sed -i "s/option interval_secs '090'/option interval_secs '1m'/" "$UCI_CONFIG_DIR/sitewatch"
run_init
if [ "$(cat "$T/status")" != 0 ] && grep -q "lte.interval_secs: '1m' is not a whole number" "$LOGGER_LOG"; then
	ok "a bad [lte] interval stops the start and is logged"
else
	bad "a bad [lte] interval stops the start and is logged" "$LOGGER_LOG" "$T/stdout"
fi

# 8. Certificate and password files are watched: replacing one and running
#    reload restarts the agent (procd compares file hashes).
if command -v openssl >/dev/null 2>&1 \
	&& openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=sitewatch-test \
		-days 2 -keyout "$T/ca.key" -out "$T/ca.pem" >/dev/null 2>&1; then
	printf 'secret\n' >"$T/mqtt-password"
	# Readable by its owner only: the agent refuses a world-readable one.
	chmod 600 "$T/mqtt-password"
	cat >"$UCI_CONFIG_DIR/sitewatch" <<EOF
config agent 'main'
	option enabled '1'
	option site_id 'lokasi1'
config mqtt 'mqtt'
	option url 'mqtts://127.0.0.1:8883'
	option username 'lokasi1'
	option password_file '$T/mqtt-password'
	option ca_file '$T/ca.pem'
EOF
	run_init
	if [ "$(cat "$T/status")" = 0 ] && procd_has "procd_set_param [file] [/etc/config/sitewatch] [$TOML] [$T/mqtt-password] [$T/ca.pem]"; then
		ok "procd file param watches the password and CA files"
	else
		bad "procd file param watches the password and CA files" "$PROCD_LOG" "$T/stdout"
	fi
else
	skip "watched files (no openssl to make a test CA)"
fi

# 9. The stand-in itself: a second config_load in the same shell forgets
#    the first, even after a value with a newline and a byte that is not
#    UTF-8 (it used to rebuild the names from `set | sed` output, which a
#    UTF-8 sed misreads: the subshell died; the fuzz target relies on it).
printf "config agent 'main'\n\toption site_id '\377a\nb'\n\tlist host 'h1'\n" >"$UCI_CONFIG_DIR/first"
printf "config agent 'main'\n\tlist host 'h2'\n" >"$UCI_CONFIG_DIR/second"
reload_out=$(
	export LC_ALL=C.UTF-8
	# shellcheck disable=SC1091
	. "$HERE/stubs/functions.sh"
	config_load first
	config_load second
	site='' n='' h='' # set by config_get
	config_get site main site_id none
	config_get n main host_LENGTH
	config_get h main host_ITEM1
	echo "$site $n $h"
) 2>&1
if [ "$reload_out" = "none 1 h2" ]; then
	ok "stand-in config_load: a second load forgets the first"
else
	bad "stand-in config_load: a second load forgets the first (got: $reload_out)"
fi

# 9b. The procd stand-in itself (stubs/procd.sh), as procd's service_update:
#     an instance whose declaration changed and that has no reload_signal
#     is restarted (a new process); one not declared again is stopped.
stand_in_out=$(
	rm -rf "$PROCD_STATE"
	: >"$PROCD_LOG"
	echo a >"$T/x.conf"
	# shellcheck disable=SC1091
	. "$HERE/stubs/procd.sh"
	svc_declare() {
		procd_open_service svc
		for i in "$@"; do
			procd_open_instance "$i"
			procd_set_param command /bin/x --config "$T/x.conf"
			procd_set_param file "$T/x.conf"
			procd_close_instance
		done
		procd_close_service
	}
	svc_declare one two
	p1=$(cat "$PROCD_STATE/svc/one/pid") p2=$(cat "$PROCD_STATE/svc/two/pid")
	echo b >"$T/x.conf"
	svc_declare one
	printf '%s %s %s %s\n' "$([ "$(cat "$PROCD_STATE/svc/one/pid")" != "$p1" ] && echo restarted)" \
		"$(cat "$PROCD_STATE/svc/one/loaded")" "$([ -d "$PROCD_STATE/svc/two" ] || echo stopped)" \
		"$([ "$p1" != "$p2" ] && echo two-pids)"
	grep -c '^procd: \(restart \[one\]\|stop \[two\]\)$' "$PROCD_LOG"
) 2>&1
if [ "$stand_in_out" = "restarted b stopped two-pids
2" ]; then
	ok "stand-in procd: a changed instance restarts, one not declared again stops"
else
	bad "stand-in procd: a changed instance restarts, one not declared again stops (got: $stand_in_out)"
fi

# 10. Reload: `/etc/init.d/sitewatch reload`, reload_config and LuCI run
#     start_service again, and procd stops every instance it does not
#     declare again. A config the agent rejects, or that cannot be
#     translated, must neither stop the agent nor replace its config file:
#     it keeps running with the last good one, and the log says why. A good
#     change reaches the running agent as SIGHUP (same process).
INST="$PROCD_STATE/sitewatch/instance1"
# UCI config: heartbeat interval, site_id, keep-alive, enabled.
reload_uci() {
	cat >"$UCI_CONFIG_DIR/sitewatch" <<EOF
config agent 'main'
	option enabled '${4:-1}'
	option site_id '$2'
config mqtt 'mqtt'
	option url 'mqtt://127.0.0.1:1883'
	option keep_alive_secs '$3'
config heartbeat 'heartbeat'
	option interval_secs '$1'
	option wan_interface 'lo'
EOF
}
# The agent runs as process $1 (not restarted) with a config whose
# heartbeat interval is $2, which is also the config file on disk.
agent_runs() {
	[ -f "$INST/pid" ] && [ "$(cat "$INST/pid")" = "$1" ] && [ -f "$INST/loaded" ] \
		&& toml_check "$INST/loaded" "heartbeat/interval_secs=$2" heartbeat/wan_interface=lo >"$T/py" 2>&1 \
		&& cmp -s "$INST/loaded" "$TOML"
}
no_leftovers() { ! ls "$T/var/etc/sitewatch/"*.new* "$T/var/etc/sitewatch/"*.tmp.* >/dev/null 2>&1; }

reload_uci 30 lokasi1 30
run_init
pid=$(cat "$INST/pid" 2>/dev/null)
if [ -n "$pid" ] && agent_runs "$pid" 30 && procd_has "procd: start [instance1]"; then
	ok "reload: first start runs the agent with the generated config"
else
	bad "reload: first start runs the agent with the generated config" "$PROCD_LOG" "$LOGGER_LOG" "$T/py"
fi
rc_start
if agent_runs "$pid" 30 && procd_has "procd: keep [instance1]"; then
	ok "reload, nothing changed: the agent is left alone"
else
	bad "reload, nothing changed: the agent is left alone" "$PROCD_LOG" "$LOGGER_LOG"
fi
reload_uci 45 lokasi1 30
rc_start
if agent_runs "$pid" 45 && procd_has "procd: signal [instance1] [HUP]"; then
	ok "reload with a good change: SIGHUP, the same process reads the new config"
else
	bad "reload with a good change: SIGHUP, the same process reads the new config" "$PROCD_LOG" "$LOGGER_LOG" "$T/py"
fi
cp "$TOML" "$T/good.toml"
bad_reload() {
	local what="$1" why="$2"
	shift 2
	reload_uci "$@"
	rc_start
	if agent_runs "$pid" 45 && cmp -s "$TOML" "$T/good.toml" && ! grep -q '^procd: stop' "$PROCD_LOG" \
		&& [ "$(cat "$T/status")" != 0 ] && grep -qF -- "$why" "$LOGGER_LOG" \
		&& grep -q "the agent stays on the last good config" "$LOGGER_LOG" && no_leftovers; then
		ok "reload, $what: the agent keeps running with the last good config, logged"
	else
		bad "reload, $what: the agent keeps running with the last good config, logged" \
			"$PROCD_LOG" "$LOGGER_LOG" "$T/py" "$T/stdout"
		find "$T/var/etc/sitewatch" "$INST" 2>&1 | sed 's/^/      /'
	fi
}
bad_reload "a config the agent rejects" "site_id" 60 "Lokasi 1" 30
bad_reload "a value that cannot be translated" "keep_alive_secs" 60 lokasi1 "30s"
reload_uci 60 lokasi1 30
rc_start
if agent_runs "$pid" 60 && procd_has "procd: signal [instance1] [HUP]" && no_leftovers; then
	ok "reload after the fix: the same process reads the corrected config"
else
	bad "reload after the fix: the same process reads the corrected config" "$PROCD_LOG" "$LOGGER_LOG" "$T/py"
fi
reload_uci 60 lokasi1 30 0
rc_start
if [ ! -d "$INST" ] && procd_has "procd: stop [instance1]"; then
	ok "reload with enabled=0: the agent is stopped"
else
	bad "reload with enabled=0: the agent is stopped" "$PROCD_LOG" "$LOGGER_LOG"
fi
# No last good config (the first start, /var/etc is in RAM): not started.
reload_uci 60 "Lokasi 1" 30
run_init
if [ ! -d "$INST" ] && [ ! -e "$TOML" ] && [ "$(cat "$T/status")" != 0 ] \
	&& grep -q "not started" "$LOGGER_LOG" && no_leftovers; then
	ok "first start with a rejected config: not started, logged"
else
	bad "first start with a rejected config: not started, logged" "$PROCD_LOG" "$LOGGER_LOG"
fi

# 11. The package's files and the install guide promise nothing untrue:
#     no word that promises future work (the regex below; cameras, SMART,
#     cleanup, SIGHUP reload exist), and none of the phrasings that said a
#     `uci commit` reloads the service (from a shell it reloads nothing).
doc_words() {
	local f
	for f in "$@"; do
		[ -f "$f" ] || { echo "$f: missing"; continue; }
		grep -H -n -i -w -E 'planned|soon|not in this [v]ersion' "$f"
		grep -H -n -i -E 'reloads? (the service )?by itself|reloaded on .uci commit|config change reloads' "$f" \
			| grep -v -i 'nothing by itself'
	done
}
doc_words "$HERE/../README.md" "$HERE/../Makefile" "$HERE/../files/sitewatch.init" \
	"$HERE/../files/sitewatch.config" "$HERE/../../docs/install-openwrt.md" >"$T/words"
if [ ! -s "$T/words" ]; then
	ok "OpenWrt docs: no planned/soon/not-in-this-version, no 'uci commit reloads'"
else
	bad "OpenWrt docs: no planned/soon/not-in-this-version, no 'uci commit reloads'" "$T/words"
fi

echo
echo "init: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
