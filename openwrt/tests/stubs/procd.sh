# shellcheck shell=dash
# Test stand-in for procd's shell API (/lib/functions/procd.sh): records
# every call, one line each, arguments in [brackets], into $PROCD_LOG.

_procd_record() {
	{
		printf '%s' "$1"
		shift
		for a in "$@"; do printf ' [%s]' "$a"; done
		printf '\n'
	} >>"$PROCD_LOG"
}

procd_open_instance() { _procd_record procd_open_instance "$@"; }
procd_close_instance() { _procd_record procd_close_instance "$@"; }
procd_set_param() { _procd_record procd_set_param "$@"; }
procd_append_param() { _procd_record procd_append_param "$@"; }
procd_add_reload_trigger() { _procd_record procd_add_reload_trigger "$@"; }
procd_add_reload_mount_trigger() { _procd_record procd_add_reload_mount_trigger "$@"; }
