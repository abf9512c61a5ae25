# shellcheck shell=dash
# Test stand-in for procd's shell API (/lib/functions/procd.sh): records
# every call, one line each, arguments in [brackets], into $PROCD_LOG.
#
# With $PROCD_STATE set (a directory) it also models what procd itself
# does with the instances a service declares, across calls, as read in
# openwrt/procd (service/service.c, service/instance.c):
#   - rc.common's start, and so `reload` and reload_config of a script
#     without reload_service, is procd_open_service; start_service;
#     procd_close_service, which sends `ubus call service set` with the
#     instances start_service declared ("instances" is always sent, empty
#     when start_service declared none);
#   - service_update() wraps the declared instances in vlist_update() and
#     vlist_flush() (keep_old false): an instance that is running but not
#     declared again is stopped and deleted (instance_stop(in, true));
#   - a declared instance that is not running is started;
#   - a declared instance that is running is compared with its last
#     declaration (instance_config_changed: command, env, user, respawn,
#     term_timeout, reload_signal, and the `file` list with each file's
#     md5, taken when declared): unchanged, it keeps running untouched;
#     changed, instance_restart() sends its reload_signal if it has one
#     (same process; it re-reads its files), else stops and starts it;
#     either way the new declaration replaces the old one;
#   - method `add` (rc_procd with an instance name) stops nothing;
#     procd_kill (rc.common's stop) stops all, or the one named.
# State of each running instance, in $PROCD_STATE/<service>/<instance>/:
#   params  the declaration: procd_set_param/append_param lines, a `file`
#           argument followed by =<checksum of the file>;
#   pid     a number, new at every start and restart (kept on a signal);
#   loaded  a copy of its config file (the argument after --config in its
#           command) as read at start, restart or reload signal: what the
#           agent runs with; absent if the file was.
# What procd did is logged too: "procd: start|keep|restart|stop [NAME]",
# "procd: signal [NAME] [SIG]".
# Written for the tests; not OpenWrt's code.

_procd_record() {
	{
		printf '%s' "$1"
		shift
		for a in "$@"; do printf ' [%s]' "$a"; done
		printf '\n'
	} >>"$PROCD_LOG"
}

_PROCD_SERVICE=
_PROCD_INSTANCE=
_PROCD_SEQ=0

# Checksum of a file's contents, "missing" if it is not there (procd's md5
# of a missing file is all zeroes).
_procd_sum() {
	if [ -f "$1" ]; then
		cksum <"$1" | awk '{ print $1 "-" $2 }'
	else
		echo missing
	fi
}

# Adds one procd_set_param/procd_append_param call to the open declaration.
_procd_declare() {
	local d="$PROCD_STATE/.declared/$_PROCD_INSTANCE" call="$1" type="$2" prev="" a
	[ -n "$PROCD_STATE" ] && [ -n "$_PROCD_INSTANCE" ] || return 0
	shift 2
	{
		printf '%s %s' "$call" "$type"
		for a in "$@"; do
			printf ' [%s]' "$a"
			[ "$type" = file ] && printf '=%s' "$(_procd_sum "$a")"
		done
		printf '\n'
	} >>"$d/params"
	[ "$type" = command ] || return 0
	for a in "$@"; do
		[ "$prev" = --config ] && printf '%s\n' "$a" >"$d/config_path"
		prev=$a
	done
	return 0
}

_procd_event() {
	local what="$1"
	shift
	_procd_record "procd: $what" "$@"
}

# (Re)reads the instance's config file and, unless a signal, gets a new pid.
_procd_spawn() {
	local i="$1" cfg="" n
	if [ "$2" = new ]; then
		n=$(cat "$PROCD_STATE/.pid" 2>/dev/null || echo 100)
		n=$((n + 1))
		echo "$n" >"$PROCD_STATE/.pid"
		echo "$n" >"$i/pid"
	fi
	rm -f "$i/loaded"
	[ -f "$i/config_path" ] && cfg=$(cat "$i/config_path")
	if [ -n "$cfg" ] && [ -f "$cfg" ]; then cp "$cfg" "$i/loaded"; fi
	return 0
}

# Applies the declarations as procd's service_update() does.
_procd_apply() {
	local method="$1" svc="$PROCD_STATE/$_PROCD_SERVICE" decl="$PROCD_STATE/.declared"
	local d name sig
	mkdir -p "$svc" "$decl"
	if [ "$method" = set ]; then
		for d in "$svc"/*; do
			[ -d "$d" ] || continue
			name=${d##*/}
			[ -d "$decl/$name" ] && continue
			rm -rf "$d"
			_procd_event stop "$name"
		done
	fi
	for d in "$decl"/*; do
		[ -d "$d" ] || continue
		name=${d##*/}
		if [ ! -d "$svc/$name" ]; then
			mv "$d" "$svc/$name"
			_procd_spawn "$svc/$name" new
			_procd_event start "$name"
		elif cmp -s "$d/params" "$svc/$name/params"; then
			_procd_event keep "$name"
		else
			# instance_restart() uses the running instance's reload_signal.
			sig=$(sed -n 's/^procd_set_param reload_signal \[\(.*\)\]$/\1/p' "$svc/$name/params")
			cp "$svc/$name/pid" "$d/pid"
			rm -rf "${svc:?}/$name"
			mv "$d" "$svc/$name"
			if [ -n "$sig" ]; then
				_procd_spawn "$svc/$name" signal
				_procd_event signal "$name" "$sig"
			else
				_procd_spawn "$svc/$name" new
				_procd_event restart "$name"
			fi
		fi
	done
	rm -rf "$decl"
}

procd_open_service() {
	_procd_record procd_open_service "$@"
	_PROCD_SERVICE="$1"
	_PROCD_INSTANCE=
	_PROCD_SEQ=0
	[ -n "$PROCD_STATE" ] || return 0
	rm -rf "$PROCD_STATE/.declared"
	mkdir -p "$PROCD_STATE/.declared"
}

# procd.sh's _procd_close_service adds the triggers to the same message,
# then sends `set` (or the method given).
procd_close_service() {
	_procd_record procd_close_service "$@"
	if command -v service_triggers >/dev/null 2>&1; then service_triggers; fi
	[ -n "$PROCD_STATE" ] && [ -n "$_PROCD_SERVICE" ] || return 0
	_procd_apply "${1:-set}"
}

procd_open_instance() {
	_procd_record procd_open_instance "$@"
	_PROCD_SEQ=$((_PROCD_SEQ + 1))
	_PROCD_INSTANCE="${1:-instance$_PROCD_SEQ}"
	[ -n "$PROCD_STATE" ] || return 0
	mkdir -p "$PROCD_STATE/.declared/$_PROCD_INSTANCE"
	: >"$PROCD_STATE/.declared/$_PROCD_INSTANCE/params"
}

procd_close_instance() {
	_procd_record procd_close_instance "$@"
	_PROCD_INSTANCE=
}

procd_set_param() {
	_procd_record procd_set_param "$@"
	_procd_declare procd_set_param "$@"
}

procd_append_param() {
	_procd_record procd_append_param "$@"
	_procd_declare procd_append_param "$@"
}

procd_kill() {
	local d
	_procd_record procd_kill "$@"
	[ -n "$PROCD_STATE" ] || return 0
	for d in "$PROCD_STATE/$1"/*; do
		[ -d "$d" ] || continue
		[ -z "$2" ] || [ "${d##*/}" = "$2" ] || continue
		rm -rf "$d"
		_procd_event stop "${d##*/}"
	done
}

procd_add_reload_trigger() { _procd_record procd_add_reload_trigger "$@"; }
procd_add_reload_mount_trigger() { _procd_record procd_add_reload_mount_trigger "$@"; }
