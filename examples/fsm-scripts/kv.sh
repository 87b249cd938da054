#!/usr/bin/env bash
# kv.sh: a replicated key-value store in bash + jq, written as an example of Graft's FSM
# contract (docs/fsm.md). Graft calls it once per operation with one verb:
#
#   apply  stdin: one committed command     stdout: its result      (GRAFT_INDEX, GRAFT_TERM)
#   query  stdin: one read-only command     stdout: its result
#   dump   stdin: nothing                   stdout: the whole state (a JSON object)
#   load   stdin: a former dump, or nothing stdout: nothing; replaces the state (empty: reset)
#
# Commands, one line (`APPLY SET name ada` on the line API sends "SET name ada\n"):
#   SET key value   -> OK            the value is the rest of the line, spaces included
#   GET key         -> value         missing key: exit 1, "no such key" on stderr
#   DEL key         -> 1 or 0        how many keys were removed
#   INCR key        -> new value     a missing key counts as 0; a non-integer: exit 1
# Exit 1 is a deterministic error: the entry still counts as applied and the client gets
# ERR FSM with the message. A query may only GET, so that it never changes the state.
#
# The state is one JSON object in $GRAFT_STATE_DIR/kv.json, replaced atomically (write a
# temporary file, then rename it) so that a crash leaves the old or the new state, never half.
# Each call costs one bash and one jq process start; that start-up is the price of exec mode.
set -euo pipefail

state_dir=${GRAFT_STATE_DIR:?kv.sh: GRAFT_STATE_DIR is not set (graft sets it)}
state=$state_dir/kv.json
[[ -d $state_dir ]] || mkdir -p "$state_dir"

fail() {
	printf 'kv.sh: %s\n' "$1" >&2
	exit "${2:-1}"
}

# Sets op, key, value and has_value from the first line of stdin.
parse_command() {
	local input='' line rest
	IFS= read -r -d '' input || true
	line=${input%%$'\n'*}
	line=${line%$'\r'}
	op=${line%% *}
	op=${op^^}
	rest=${line#"${line%% *}"}
	rest=${rest# }
	key=${rest%% *}
	value=${rest#"$key"}
	has_value=0
	[[ $value == " "* ]] && has_value=1
	value=${value# }
	[[ -n $op ]] || fail "empty command; expected SET, GET, DEL or INCR"
	[[ -n $key ]] || fail "$op needs a key"
	return 0
}

# The state file, or /dev/null before the first write (jq then starts from {}).
source_file() {
	if [[ -f $state ]]; then printf '%s' "$state"; else printf '/dev/null'; fi
}

get() {
	exec jq -nr --arg k "$key" '
		(first(inputs) // {}) as $s
		| if $s | has($k) then $s[$k]
		  else "kv.sh: no such key: \($k)\n" | halt_error(1) end' "$(source_file)"
}

# One jq call computes the reply (first line) and, when the state changes, the new state
# (second line, compact JSON).
write() {
	local out reply new
	out=$(jq -nr --arg op "$op" --arg k "$key" --arg v "$value" '
		(first(inputs) // {}) as $s
		| if $op == "SET" then "OK", ($s | .[$k] = $v | tojson)
		  elif $op == "DEL" then
			if $s | has($k) then "1", ($s | del(.[$k]) | tojson) else "0" end
		  else
			($s[$k] // "0") as $old
			| if ($old | type) == "string" and ($old | test("^-?[0-9]{1,15}$")) then
				(($old | tonumber) + 1 | tostring) as $new | $new, ($s | .[$k] = $new | tojson)
			  else "kv.sh: INCR \($k): not an integer: \($old)\n" | halt_error(1) end
		  end' "$(source_file)") || exit
	reply=${out%%$'\n'*}
	new=${out#*$'\n'}
	if [[ $new != "$out" ]]; then
		printf '%s\n' "$new" >"$state.tmp.$$"
		mv -f "$state.tmp.$$" "$state"
	fi
	printf '%s\n' "$reply"
}

apply() {
	parse_command
	case $op in
	GET) get ;;
	SET) ((has_value)) || fail "usage: SET key value" ;&
	DEL | INCR) write ;;
	*) fail "unknown command '$op'; expected SET, GET, DEL or INCR" ;;
	esac
}

query() {
	parse_command
	[[ $op == GET ]] || fail "a query may only GET (got $op); send writes with APPLY"
	get
}

dump() {
	if [[ -f $state ]]; then exec cat "$state"; fi
	printf '{}\n'
}

load() {
	local tmp=$state.load.$$
	cat >"$tmp"
	if [[ ! -s $tmp ]]; then
		rm -f "$tmp" "$state"
		return 0
	fi
	if ! jq -e 'type == "object"' "$tmp" >/dev/null 2>&1; then
		rm -f "$tmp"
		fail "load: stdin is not a kv.sh dump (one JSON object)"
	fi
	mv -f "$tmp" "$state"
}

case ${1:-} in
apply | query | dump | load) "$1" ;;
*) fail "usage: kv.sh apply|query|dump|load (reads stdin; see the header of this file)" 2 ;;
esac
