#!/usr/bin/env bash
# Go micro-benchmarks of the socketio policy, the handler and the pin store
# (BENCHMARKS.md, "Go benchmarks"). Every target is a ratio against a
# baseline measured in the same process (Caddy's client_ip_hash and
# round_robin, the handler's next alone, one RWMutex-protected map), never
# a wall-clock figure. Writes:
#
#   bench/out/go-bench-DATE.txt    raw `go test -bench` output
#   bench/out/benchstat-DATE.txt   benchstat comparisons (the summary)
#
# Usage: bench/go-bench.sh [DATE]            DATE defaults to today (UTC)
# Environment:
#   BENCHTIME  -benchtime of every benchmark (default 300ms)
#   COUNT      -count (default 6: benchstat's minimum for a confidence interval)
#   MAX_LOAD   wait until the 1-minute load average is at most this (default 1.5)
#   LOAD_WAIT  give up waiting after this many seconds and run anyway,
#              saying so in the output (default 1200)
#   BENCH_REV  the revision to record, when the tree is not a git checkout
#   BENCH_RESULTS  the directory of the results, relative to the repository root
#              (default bench/out, ignored by git; BENCH_RESULTS=bench/results
#              refreshes the committed summary, the raw output stays ignored)
#
# Bounded: each `go test` is killed after 12 minutes; with the defaults the
# whole run takes about 7 minutes on 2 cores, plus any wait for the load.
set -euo pipefail
cd "$(dirname "$0")/.."

date=${1:-$(date -u +%Y-%m-%d)}
benchtime=${BENCHTIME:-300ms}
count=${COUNT:-6}
max_load=${MAX_LOAD:-1.5}
load_wait=${LOAD_WAIT:-1200}
benchstat_pkg=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

results=${BENCH_RESULTS:-bench/out}
mkdir -p "$results"
raw=$results/go-bench-$date.txt
stat=$results/benchstat-$date.txt

load1() { cut -d' ' -f1 /proc/loadavg; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

# other work on the machine (integration tests) skews every number: before
# each phase, wait for it to finish, up to LOAD_WAIT in all
waited=0
wait_quiet() {
	while above "$(load1)" "$max_load" && ((waited < load_wait)); do
		echo "load average $(load1) > $max_load; waiting (${waited}s of ${load_wait}s)" >&2
		sleep 30
		waited=$((waited + 30))
	done
	echo "# load average before $1: $(cut -d' ' -f1-3 /proc/loadavg) (waited ${waited}s so far)"
}

# fetch benchstat before measuring, so that no download overlaps the run
go run "$benchstat_pkg" -h >/dev/null 2>&1 || true

# BENCH_REV names the code measured when this is not a git checkout
rev=${BENCH_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [[ -z "${BENCH_REV:-}" && -n "$(git status --porcelain -- module selection internal 2>/dev/null)" ]]; then
	rev="$rev (module/, selection/ or internal/ modified)"
fi

# Comment lines ("# ...") are ignored by benchstat; "key: value" lines
# would become configuration keys and split its tables.
{
	echo "# caddy-socketio Go benchmarks, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# revision: $rev"
	echo "# $(go version); nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
	echo "# benchtime $benchtime, count $count; each phase waits for a load average <= $max_load"
	wait_quiet "the policy and handler"
	# the policy and handler, at the default GOMAXPROCS (2 here)
	timeout 12m go test -run '^$' -bench . -benchmem -count "$count" -benchtime "$benchtime" \
		-timeout 12m ./module/ ./selection/ ./internal/engineio/
	wait_quiet "the pin store"
	# the pin store with GOMAXPROCS 1 and 2: parallel lookups must scale
	timeout 12m go test -run '^$' -bench . -benchmem -count "$count" -benchtime "$benchtime" \
		-cpu 1,2 -timeout 12m ./internal/store/memory/
	echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$raw"

benchstat() { go run "$benchstat_pkg" "$@"; }

section() {
	local title=$1
	shift
	printf '## %s\n\nbenchstat %s\n\n' "$title" "$*"
	benchstat "$@" "$raw"
	printf '\n'
}

{
	head -n 4 "$raw"
	grep '^# load average' "$raw"
	printf '\n'
	section "Select: socketio vs client_ip_hash (the same request, same pool)" \
		-filter '.name:Select /policy:(client_ip_hash OR socketio)' -col '/policy@(client_ip_hash socketio)'
	section "Select: socketio vs round_robin (the floor: no request inspection)" \
		-filter '.name:Select /policy:(round_robin OR socketio)' -col '/policy@(round_robin socketio)'
	section "Handler: next alone vs the socketio handler in front of it" \
		-filter '.name:Handler' -col '/handler@(none socketio)'
	section "Pin store lookups vs one RWMutex-protected map (rows ending -2: GOMAXPROCS 2)" \
		-filter '.name:Lookup' -col '/store@(rwmutex_map pins)'
	section "Pin store at GOMAXPROCS 1 (first column) vs 2: parallel rows show scaling" \
		-filter '.name:(Lookup OR Refresh OR Pin OR TouchSweep)' -col /gomaxprocs
	section "Engine.IO query parsing and rendezvous hashing" \
		-filter '.name:(ParseQuery OR Hash)'
} >"$stat"

echo "wrote $raw and $stat"
