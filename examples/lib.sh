# lib.sh - sourced by examples/*/run.sh: messages, the processes a run
# starts (by pid, in PIDS and NAMES) and their clean-up, and waiting for an
# HTTP endpoint. The script sets LOGDIR, then installs the traps:
#   trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
# shellcheck shell=bash

say() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'run.sh: error: %s\n' "$*" >&2
	exit 1
}

PIDS=()  # every process the run started, by pid
NAMES=() # and what it is, for messages

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	local i pid
	for i in "${!PIDS[@]}"; do
		kill -TERM "${PIDS[$i]}" 2>/dev/null || true
	done
	# wait up to 10 s for them to exit, then force
	for i in "${!PIDS[@]}"; do
		pid="${PIDS[$i]}"
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "run.sh: ${NAMES[$i]} (pid $pid) did not stop; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	if [[ $status -ne 0 ]]; then
		local f
		for f in "$LOGDIR"/*.log; do
			[[ -s "$f" ]] || continue
			printf '\n--- %s (last 30 lines) ---\n' "${f##*/}" >&2
			tail -n 30 "$f" >&2
		done
	fi
	if [[ "${KEEP_LOGS:-0}" == 1 || ($status -ne 0 && -n "$(ls -A "$LOGDIR")") ]]; then
		echo "run.sh: logs kept in $LOGDIR" >&2
	else
		rm -rf "$LOGDIR"
	fi
	exit "$status"
}

# start NAME LOGFILE CMD...: run CMD in the background, remember its pid
start() {
	local name="$1" log="$2"
	shift 2
	"$@" >"$log" 2>&1 &
	PIDS+=("$!")
	NAMES+=("$name")
}

# wait_http NAME PID URL: poll URL until it answers 2xx (at most ~15 s), failing
# early if the process PID is gone
wait_http() {
	local name="$1" pid="$2" url="$3"
	for _ in $(seq 1 75); do
		if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see its log below)"
		sleep 0.2
	done
	die "$name did not answer $url within 15 s"
}
