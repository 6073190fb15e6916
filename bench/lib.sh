# shellcheck shell=bash
# bench/lib.sh: shell helpers of bench/e2e.sh, bench/scale.sh and bench/soak.sh
# (sourced, not run).
#
# Process bookkeeping: every process a script starts goes through `start NAME LOG
# CMD...`, which records its pid. `stop_proc` / `stop_named` stop one process by
# that pid (SIGTERM, then SIGKILL after 10 s) and reap it, so that a pid is never
# signalled once it is free. The EXIT trap (`lib_cleanup`) stops what is left,
# clients first. Nothing is ever killed by name.
#
# The sourcing script sets LOGDIR (a fresh temporary directory) and SCRIPT_NAME
# before calling anything here, and may set LOG_TAIL_LINES (default 10): how much
# of each log lib_cleanup prints when the script fails.

# results_dir [DIR]: the directory a script writes its results to: DIR (the
# script's own E2E_RESULTS / SCALE_RESULTS / SOAK_RESULTS) when set, else
# BENCH_RESULTS, else bench/out (ignored by git). Relative paths are taken from
# the repository root. To refresh the committed summaries:
#   BENCH_RESULTS=bench/results make e2e
results_dir() {
	local dir="${1:-${BENCH_RESULTS:-bench/out}}"
	[[ "$dir" == /* ]] || dir="$ROOT/$dir"
	printf '%s\n' "$dir"
}

PIDS=()  # pids of the processes started and not reaped yet
NAMES=() # their names, for messages

say() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
	exit 1
}
bad_setting() {
	printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
	exit 2
}
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

# now_ms: wall clock in milliseconds
now_ms() {
	local t="$EPOCHREALTIME"
	echo $((${t%.*} * 1000 + 10#${t#*.} / 1000))
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# shellcheck disable=SC2034 # LOAD_WAITED and LOAD_OK are read by the sourcing script
# wait_for_load MAX SECONDS: wait (checking every 20 s) until the 1-minute load
# average is below MAX, for at most SECONDS; sets LOAD_WAITED (seconds) and
# LOAD_OK (1 when it got below MAX)
wait_for_load() {
	local max="$1" secs="$2"
	LOAD_WAITED=0
	LOAD_OK=1
	while awk -v a="$(load1)" -v b="$max" 'BEGIN { exit !(a >= b) }'; do
		if ((LOAD_WAITED >= secs)); then
			LOAD_OK=0
			note "load average still $(loadavg) after ${secs}s: running anyway (recorded in the results)"
			return 0
		fi
		note "uptime: $(uptime | sed 's/^ *//'); waiting for the load average to drop below $max (${LOAD_WAITED}s of ${secs}s)"
		sleep 20
		LOAD_WAITED=$((LOAD_WAITED + 20))
	done
	note "uptime: $(uptime | sed 's/^ *//')"
}

# start NAME LOGFILE CMD...: run CMD in the background (stdin /dev/null), record its pid
start() {
	local name="$1" log="$2"
	shift 2
	"$@" >"$log" 2>&1 </dev/null &
	PIDS+=("$!")
	NAMES+=("$name")
}

# index_of NAME: the index in PIDS of the live process named NAME
index_of() {
	local i
	for i in "${!NAMES[@]}"; do
		if [[ "${NAMES[$i]}" == "$1" ]]; then
			echo "$i"
			return 0
		fi
	done
	return 1
}
pid_of() {
	local i
	i="$(index_of "$1")" || return 1
	echo "${PIDS[$i]}"
}

# stop_proc INDEX [SIGNAL]: signal PIDS[INDEX] (default TERM), wait up to 10 s, then
# SIGKILL; reap it and forget it
stop_proc() {
	local i="$1" sig="${2:-TERM}" pid="${PIDS[$1]}"
	kill "-$sig" "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "$SCRIPT_NAME: ${NAMES[$i]} (pid $pid) did not stop; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	unset "PIDS[$i]" "NAMES[$i]"
}
stop_named() {
	local i
	i="$(index_of "$1")" || return 0
	stop_proc "$i" "${2:-TERM}"
}

# wait_exit NAME SECONDS: wait for the process NAME to exit by itself, reap it and
# forget it; returns its exit status (124 if it was still running: then it is stopped)
wait_exit() {
	local name="$1" secs="$2" i pid rc=0
	i="$(index_of "$name")" || return 0
	pid="${PIDS[$i]}"
	for _ in $(seq 1 $((secs * 10))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		stop_proc "$i"
		return 124
	fi
	wait "$pid" 2>/dev/null || rc=$?
	unset "PIDS[$i]" "NAMES[$i]"
	return "$rc"
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
lib_cleanup() {
	local status=$?
	trap - EXIT INT TERM
	local i
	# clients first, then proxies, then the nodes
	for i in "${!PIDS[@]}"; do
		if [[ "${NAMES[$i]}" == clients* ]]; then stop_proc "$i"; fi
	done
	for i in "${!PIDS[@]}"; do
		if [[ "${NAMES[$i]}" != node* ]]; then stop_proc "$i"; fi
	done
	for i in "${!PIDS[@]}"; do
		stop_proc "$i"
	done
	if [[ $status -ne 0 ]]; then
		local f lines="${LOG_TAIL_LINES:-10}"
		for f in "$LOGDIR"/*.log "$LOGDIR"/*.out; do
			[[ -s "$f" ]] || continue
			printf '\n--- %s (last %s lines) ---\n' "${f##*/}" "$lines" >&2
			tail -n "$lines" "$f" | cut -c1-400 >&2
		done
	fi
	if [[ "${KEEP_LOGS:-0}" == 1 || $status -ne 0 ]]; then
		echo "$SCRIPT_NAME: logs kept in $LOGDIR" >&2
	else
		rm -rf "$LOGDIR"
	fi
	exit "$status"
}

port_in_use() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_http NAME URL SECONDS [CURL_ARGS...]: poll URL until it answers 2xx,
# failing early if the process NAME is gone
wait_http() {
	local name="$1" url="$2" secs="$3" pid
	shift 3
	pid="$(pid_of "$name")" || die "$name is not running"
	for _ in $(seq 1 $((secs * 5))); do
		curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see its log below)"
		sleep 0.2
	done
	die "$name did not answer $url within $secs s"
}

# wait_line FILE PATTERN NAME SECONDS: wait until FILE has a line matching PATTERN
# (grep -E), failing if the process NAME exits first or the time runs out
wait_line() {
	local file="$1" pattern="$2" name="$3" secs="$4" pid
	pid="$(pid_of "$name")" || {
		grep -qE "$pattern" "$file" 2>/dev/null && return 0
		die "$name is not running and printed no line matching $pattern"
	}
	for _ in $(seq 1 $((secs * 10))); do
		grep -qE "$pattern" "$file" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || {
			grep -qE "$pattern" "$file" 2>/dev/null && return 0
			die "$name exited without printing a line matching $pattern"
		}
		sleep 0.1
	done
	die "$name printed no line matching $pattern within $secs s"
}

# rss_kib PID...: the sum of the processes' VmRSS (KiB)
rss_kib() {
	local p sum=0 v
	for p in "$@"; do
		v="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)"
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# children PID: the pids of PID's children
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

# nodes_open PORT...: the sum of the nodes' /__stats openSessions ("?" when one does not answer)
nodes_open() {
	local p sum=0 v
	for p in "$@"; do
		v="$(curl -fsS --max-time 3 "http://127.0.0.1:$p/__stats" 2>/dev/null | sed -n 's/.*"openSessions":\([0-9]*\).*/\1/p')"
		[[ -n "$v" ]] || {
			echo "?"
			return 0
		}
		sum=$((sum + v))
	done
	echo "$sum"
}

# wait_nodes_idle SECONDS PORT...: wait until the nodes hold no session
wait_nodes_idle() {
	local secs="$1" n
	shift
	for _ in $(seq 1 $((secs * 5))); do
		n="$(nodes_open "$@")"
		[[ "$n" == 0 ]] && return 0
		sleep 0.2
	done
	note "warning: the nodes still hold $n sessions after ${secs}s"
	return 0
}

# machine_info: one JSON object describing this machine and the tools
machine_info() {
	local cpu mem kernel gov nodev gov_s nginxv
	cpu="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //; s/"/\\"/g')"
	mem="$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	kernel="$(uname -r)"
	gov="$(go version 2>/dev/null | awk '{print $3}')"
	nodev="$(node --version 2>/dev/null)"
	nginxv="$(nginx -v 2>&1 | sed -n 's/.*nginx\///p')"
	gov_s="$(ulimit -Hn)"
	printf '{"nproc":%d,"cpu":"%s","memory":"%s","kernel":"%s","go":"%s","node":"%s","nginx":"%s","socketio":"%s","socketioClient":"%s","nofileHard":"%s"}' \
		"$(nproc)" "$cpu" "$mem" "$kernel" "$gov" "$nodev" "${nginxv:-none}" \
		"$(node -p 'require("./node_modules/socket.io/package.json").version' 2>/dev/null)" \
		"$(node -p 'require("./node_modules/socket.io-client/package.json").version' 2>/dev/null)" "$gov_s"
}
