# shellcheck shell=dash
# shellcheck disable=SC2034,SC2154
# Test stand-in for OpenWrt's /lib/functions.sh (UCI part) with the same
# calling conventions: config_load reads a config file in /etc/config
# syntax (from $UCI_CONFIG_DIR instead of `uci export`) through the
# config/option/list callbacks; values are kept in CONFIG_<section>_<option>
# variables; lists as <option>_ITEM<n> plus <option>_LENGTH; anonymous
# sections get cfg<N> names; config_get, config_get_bool,
# config_list_foreach and config_foreach behave as OpenWrt's.
# Written for the tests; not OpenWrt's code.

CONFIG_SECTIONS=
CONFIG_NUM_SECTIONS=0
CONFIG_SECTION=
# Every variable name a load has set, so the next load can unset exactly
# those (scanning `set` output misreads multi-line or non-UTF-8 values).
CONFIG_VARS=

_cfg_set() {
	export "CONFIG_${1}_${2}=${3}"
	CONFIG_VARS="$CONFIG_VARS CONFIG_${1}_${2}"
}

config() {
	CONFIG_NUM_SECTIONS=$((CONFIG_NUM_SECTIONS + 1))
	CONFIG_SECTION="${2:-cfg$CONFIG_NUM_SECTIONS}"
	CONFIG_SECTIONS="${CONFIG_SECTIONS:+$CONFIG_SECTIONS }$CONFIG_SECTION"
	_cfg_set "$CONFIG_SECTION" TYPE "$1"
}

option() {
	local name="$1"
	shift
	_cfg_set "$CONFIG_SECTION" "$name" "$*"
}

list() {
	local name="$1" len
	shift
	config_get len "$CONFIG_SECTION" "${name}_LENGTH" 0
	len=$((len + 1))
	_cfg_set "$CONFIG_SECTION" "${name}_ITEM$len" "$*"
	_cfg_set "$CONFIG_SECTION" "${name}_LENGTH" "$len"
}

config_load() {
	local file="$UCI_CONFIG_DIR/$1"
	# Forget a previous load (OpenWrt's reset_cb/config_load do the same).
	for v in $CONFIG_VARS; do
		unset "$v"
	done
	CONFIG_VARS=
	CONFIG_SECTIONS=
	CONFIG_NUM_SECTIONS=0
	[ -f "$file" ] || return 1
	# shellcheck disable=SC1090
	. "$file"
}

# config_get VAR SECTION OPTION [DEFAULT]   or   config_get SECTION OPTION
config_get() {
	case "$2${3:-$1}" in
		*[!A-Za-z0-9_]*) return 0 ;;
	esac
	case "$3" in
		"") eval "echo \"\${CONFIG_${1}_${2}:-\${4}}\"" ;;
		*) eval "export -- \"${1}=\${CONFIG_${2}_${3}:-\${4}}\"" ;;
	esac
}

config_get_bool() {
	local _tmp
	config_get _tmp "$2" "$3" "$4"
	case "$_tmp" in
		1 | on | true | yes | enabled) _tmp=1 ;;
		0 | off | false | no | disabled) _tmp=0 ;;
		*) _tmp="$4" ;;
	esac
	export "$1=$_tmp"
}

config_list_foreach() {
	[ "$#" -ge 3 ] || return 0
	local section="$1" opt="$2" fn="$3" len val c=1
	shift 3
	config_get len "$section" "${opt}_LENGTH"
	[ -n "$len" ] || return 0
	while [ "$c" -le "$len" ]; do
		config_get val "$section" "${opt}_ITEM$c"
		eval "$fn \"\$val\" \"\$@\""
		c=$((c + 1))
	done
}

config_foreach() {
	local fn="$1" type="$2" section cfgtype
	shift 2
	for section in $CONFIG_SECTIONS; do
		config_get cfgtype "$section" TYPE
		[ -n "$type" ] && [ "$cfgtype" != "$type" ] && continue
		eval "$fn \"\$section\" \"\$@\""
	done
}
