#!/usr/bin/env bash
# scale.sh - many live sessions through ONE Caddy with caddy-socketio, loopback only:
#
#   1. three bench/bench-node.js nodes (socket.io@4, default pingInterval 25 s) and
#      bin/caddy with bench/e2e-plugin.Caddyfile (socketio + lb_policy socketio)
#   2. SCALE_WS WebSocket sessions (the default transports: a polling handshake, then
#      the upgrade; spread over SCALE_WS_PROCS client processes) and SCALE_POLLING
#      polling-only sessions (SCALE_POLL_PROCS processes; one TCP connection per
#      polling request, engine.io-client's Node default), all opened at once
#      (bench/e2e-client.js --mode hold), every session from its own 127.X.Y.2 address
#   3. once all are ready: hold SCALE_HOLD_S seconds, each socket sending an echo
#      every SCALE_ECHO_EVERY_S; then read the nodes' /__stats (openSessions),
#      Caddy's RSS, goroutines, open files and pins, and let the clients count
#      their live sessions (connected, on the expected transport)
#   4. report: a table, bench/out/scale-<UTC stamp>.{json,md}, and Caddy's heap
#      profile with the sessions open: scale-<stamp>-heap.{pprof,txt}
#   5. optional (SCALE_ECHO_SOCKETS > 0), once the held sessions are released:
#      echo throughput through the same Caddy: SCALE_ECHO_SOCKETS WebSockets run
#      emit-with-ack round trips back to back (bench/e2e-client.js --mode echo,
#      2 s warm-up) for SCALE_ECHO_S seconds, once per payload size in
#      SCALE_ECHO_PAYLOADS; reports round trips/s and Caddy's CPU per round trip
#
# Proxy settings under test (the Caddyfile is then a templated copy in the log
# directory, recorded in the result): SCALE_STREAM_BUFFER=<size> adds
# `stream_buffer_size <size>` to reverse_proxy (the buffer of each direction of a
# proxied WebSocket; unset = Caddy's default, 32 KiB); SCALE_PROTOCOLS="h1" adds the
# global option `servers { protocols h1 }`. Note: with a plain-HTTP site and the
# default protocols, Caddy hands the WebSocket tunnel a bare *net.TCPConn, whose
# ReadFrom/WriteTo make io.CopyBuffer ignore the configured buffer (io.Copy then
# allocates its own 32 KiB per direction); over TLS, or with `protocols h1`, the
# connection is wrapped and the configured size is used. bench/ws-memory.sh
# compares sizes and both cases.
#
# PASS when every session was opened, all are alive at the end (clients' count and
# the nodes' openSessions both equal the number of sessions), no echo failed and
# no session was disconnected. Exit status 0 = pass, 1 = fail, 2 = bad settings.
#
# File descriptors: Caddy holds two per live session (the client's connection and
# the upstream one). The script raises `ulimit -n` to the hard limit; when even that
# is too low for the requested sessions, SCALE_FIT=auto (default) scales both counts
# down, in proportion, to what fits, and says so (the result records requested and
# run sizes); SCALE_FIT=0 runs the requested sizes anyway (expect failures).
#
# SCALE_H2=1: the clients speak HTTP/2 to Caddy, as browsers do over HTTPS: Caddy
# serves bench/scale-h2.Caddyfile (HTTPS from its local CA, GODEBUG=http2xconnect=1,
# `fallback least_conn`), and the sessions are run by bench/h2load (a Go Engine.IO
# client: polling requests as HTTP/2 streams, WebSockets as RFC 8441 extended
# CONNECT streams, at most 100 sessions per client connection pool, each pool from
# its own source address) instead of socket.io-client, which has no HTTP/2 in Node.
# Caddy then holds one upstream connection per session but only a few client
# connections, so the full size fits where two descriptors per session do not.
#
#   bench/scale.sh                                        10,000 + 2,000 sessions
#   SCALE_H2=1 bench/scale.sh                             the same over HTTP/2
#   SCALE_WS=1000 SCALE_POLLING=200 SCALE_HOLD_S=10 bench/scale.sh   a quick check
#
# Environment (defaults in brackets): SCALE_WS [10000] SCALE_POLLING [2000]
#   SCALE_HOLD_S [30] SCALE_ECHO_EVERY_S [10] SCALE_WS_PROCS [4] SCALE_POLL_PROCS [2]
#   SCALE_CONCURRENCY [20 per process] SCALE_CONNECT_TIMEOUT_S [600] SCALE_FIT [auto]
#   SCALE_H2 [0] SCALE_STREAM_BUFFER [unset] SCALE_PROTOCOLS [unset]
#   SCALE_ECHO_SOCKETS [0 = no echo phase] SCALE_ECHO_S [10] SCALE_ECHO_PAYLOADS ["64"]
#   SCALE_CADDY [bin/caddy, built by scripts/build-caddy.sh; a path = use that binary, no build]
#   SCALE_SESSION_TIMEOUT_S [30: one session's connect + upgrade, and an echo's ack]
#   MAX_LOAD [1.0] LOAD_WAIT [1200] SCALE_NODE_PORTS ["3211 3212 3213"]
#   SCALE_HTTP_PORT [8291] SCALE_ADMIN_PORT [2291] SCALE_RESULTS [$BENCH_RESULTS or bench/out;
#   BENCH_RESULTS=bench/results refreshes the committed summary]
#   KEEP_LOGS=1 keep the log directory (kept anyway on failure)
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCRIPT_NAME=scale.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

WS="${SCALE_WS:-10000}"
POLLING="${SCALE_POLLING:-2000}"
HOLD_S="${SCALE_HOLD_S:-30}"
ECHO_EVERY_S="${SCALE_ECHO_EVERY_S:-10}"
WS_PROCS="${SCALE_WS_PROCS:-4}"
POLL_PROCS="${SCALE_POLL_PROCS:-2}"
CONC="${SCALE_CONCURRENCY:-20}"
CONNECT_TIMEOUT_S="${SCALE_CONNECT_TIMEOUT_S:-600}"
SESSION_TIMEOUT_S="${SCALE_SESSION_TIMEOUT_S:-30}"
FIT="${SCALE_FIT:-auto}"
H2="${SCALE_H2:-0}"
STREAM_BUFFER="${SCALE_STREAM_BUFFER:-}"
PROTOCOLS="${SCALE_PROTOCOLS:-}"
ECHO_SOCKETS="${SCALE_ECHO_SOCKETS:-0}"
ECHO_S="${SCALE_ECHO_S:-10}"
read -r -a ECHO_PAYLOADS <<<"${SCALE_ECHO_PAYLOADS:-64}"
ECHO_NET=240 # echo-phase sessions: 127.240.0.3 ... (beyond the polling range)
MAX_LOAD="${MAX_LOAD:-1.0}"
LOAD_WAIT="${LOAD_WAIT:-1200}"
read -r -a NODE_PORTS <<<"${SCALE_NODE_PORTS:-3211 3212 3213}"
HTTP_PORT="${SCALE_HTTP_PORT:-8291}"
ADMIN_PORT="${SCALE_ADMIN_PORT:-2291}"
RESULTS_DIR="$(results_dir "${SCALE_RESULTS:-}")"
SITE="http://127.0.0.1:$HTTP_PORT"
ADMIN="http://localhost:$ADMIN_PORT"
WS_NET=100   # ws sessions: 127.100.0.2 ...
POLL_NET=180 # polling sessions: 127.180.0.2 ...
FD_MARGIN=1000

for v in WS POLLING HOLD_S ECHO_EVERY_S WS_PROCS POLL_PROCS CONC CONNECT_TIMEOUT_S SESSION_TIMEOUT_S LOAD_WAIT HTTP_PORT ADMIN_PORT ECHO_SOCKETS ECHO_S; do
	is_uint "${!v}" || bad_setting "$v must be a non-negative integer, got '${!v}'"
done
((WS + POLLING >= 1)) || bad_setting "no sessions"
((WS <= 20000 && POLLING <= 15000)) || bad_setting "SCALE_WS at most 20000, SCALE_POLLING at most 15000 (source addresses)"
((WS_PROCS >= 1 && WS_PROCS <= 16 && POLL_PROCS >= 1 && POLL_PROCS <= 16)) || bad_setting "SCALE_WS_PROCS and SCALE_POLL_PROCS must be 1..16"
((HOLD_S >= 5 && HOLD_S <= 600)) || bad_setting "SCALE_HOLD_S must be 5..600"
((ECHO_EVERY_S >= 1 && ECHO_EVERY_S <= 600)) || bad_setting "SCALE_ECHO_EVERY_S must be 1..600"
((CONC >= 1 && CONC <= 200)) || bad_setting "SCALE_CONCURRENCY must be 1..200"
((CONNECT_TIMEOUT_S >= 30 && CONNECT_TIMEOUT_S <= 3600)) || bad_setting "SCALE_CONNECT_TIMEOUT_S must be 30..3600"
((SESSION_TIMEOUT_S >= 5 && SESSION_TIMEOUT_S <= 120)) || bad_setting "SCALE_SESSION_TIMEOUT_S must be 5..120"
[[ "$FIT" == auto || "$FIT" == 0 ]] || bad_setting "SCALE_FIT must be auto or 0"
[[ "$H2" == 0 || "$H2" == 1 ]] || bad_setting "SCALE_H2 must be 0 or 1"
[[ -z "$STREAM_BUFFER" || "$STREAM_BUFFER" =~ ^[0-9]+([KkMm]i?B|B)?$ ]] || bad_setting "SCALE_STREAM_BUFFER must be a size such as 8KiB, got '$STREAM_BUFFER'"
[[ -z "$PROTOCOLS" || "$PROTOCOLS" =~ ^(h1|h2|h2c|h3)( (h1|h2|h2c|h3))*$ ]] || bad_setting "SCALE_PROTOCOLS must list h1 h2 h2c h3, got '$PROTOCOLS'"
((ECHO_SOCKETS <= 1000)) || bad_setting "SCALE_ECHO_SOCKETS must be 0..1000"
((ECHO_S >= 2 && ECHO_S <= 120)) || bad_setting "SCALE_ECHO_S must be 2..120"
((${#ECHO_PAYLOADS[@]} >= 1 && ${#ECHO_PAYLOADS[@]} <= 4)) || bad_setting "SCALE_ECHO_PAYLOADS must name 1..4 sizes"
for p in "${ECHO_PAYLOADS[@]}"; do
	is_uint "$p" && ((p >= 1 && p <= 1048576)) || bad_setting "SCALE_ECHO_PAYLOADS: sizes in bytes, 1..1048576, got '$p'"
done
if [[ "$H2" == 1 ]]; then
	SITE="https://127.0.0.1:$HTTP_PORT"
	CADDYFILE=bench/scale-h2.Caddyfile
	PROTOCOL=HTTP/2
	CLIENT=bench/h2load
	PER_SESSION_FDS=1 # the upstream connection; client connections are shared
else
	CADDYFILE=bench/e2e-plugin.Caddyfile
	PROTOCOL=HTTP/1.1
	CLIENT=bench/e2e-client.js
	PER_SESSION_FDS=2
fi
[[ "$H2" == 0 || "$ECHO_SOCKETS" == 0 ]] || bad_setting "SCALE_ECHO_SOCKETS needs SCALE_H2=0 (the echo phase runs bench/e2e-client.js)"
[[ ${#NODE_PORTS[@]} -eq 3 ]] || bad_setting "SCALE_NODE_PORTS must name 3 ports"
for tool in node npm go curl timeout ps; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/caddy-socketio-scale.XXXXXX")"
trap lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
T_START="$(now_ms)"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

# --- file descriptors -------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
REQ_WS=$WS REQ_POLLING=$POLLING
need=$((PER_SESSION_FDS * (WS + POLLING) + FD_MARGIN))
SCALED=false
if ((need > NOFILE)); then
	if [[ "$FIT" == auto ]]; then
		WS=$((WS * (NOFILE - FD_MARGIN) / (need - FD_MARGIN)))
		POLLING=$((POLLING * (NOFILE - FD_MARGIN) / (need - FD_MARGIN)))
		SCALED=true
		say "WARNING: Caddy needs about $need open files for $REQ_WS + $REQ_POLLING sessions ($PER_SESSION_FDS per session), but"
		note "ulimit -n is at most $NOFILE here (hard limit; raising it needs CAP_SYS_RESOURCE). Scaled down to"
		note "$WS websocket + $POLLING polling sessions (SCALE_FIT=0 runs the requested sizes anyway)."
	else
		say "WARNING: Caddy needs about $need open files, ulimit -n is $NOFILE: sessions beyond it will fail"
	fi
fi
WS_ADDR_LAST=$((WS_NET + (WS >> 8)))
POLL_ADDR_LAST=$((POLL_NET + (POLLING >> 8)))
((WS_ADDR_LAST < POLL_NET && POLL_ADDR_LAST <= 254)) || bad_setting "too many sessions for the source address ranges"

say "Scale: $WS websocket + $POLLING polling-only sessions through one Caddy with the plugin, over $PROTOCOL, hold ${HOLD_S}s (logs in $LOGDIR)"
note "ulimit -n $NOFILE (hard $(ulimit -Hn)); client processes: $WS_PROCS websocket, $POLL_PROCS polling, $CONC connects at a time each"

say "Node.js packages and bin/caddy"
timeout 600 scripts/npm-ci-if-needed.sh
if [[ -n "${SCALE_CADDY:-}" ]]; then
	CADDY="$(readlink -f "$SCALE_CADDY")"
	[[ -x "$CADDY" ]] || bad_setting "SCALE_CADDY: $SCALE_CADDY is not an executable"
	note "using $CADDY (SCALE_CADDY; not rebuilt)"
else
	timeout 900 scripts/build-caddy.sh
	CADDY="$ROOT/bin/caddy"
fi
# what is measured: the commit, uncommitted changes to the plugin's sources (tests aside)
REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain -- module selection caddysocketio.go go.mod go.sum 2>/dev/null | grep -v '_test\.go$' || true)" ]]; then
	REVISION="$REVISION + uncommitted changes to the plugin's sources"
fi
SUM_CADDY="$(sha256sum "$CADDY" | cut -c1-16)"
modules="$("$CADDY" list-modules)" # read whole: `| grep -q` would fail the pipe under pipefail
grep -qx http.handlers.socketio <<<"$modules" || die "$CADDY has no socketio handler"
CADDY_ENV=(env E2E_ADMIN_PORT="$ADMIN_PORT" E2E_HTTP_PORT="$HTTP_PORT" E2E_NODE1_PORT="${NODE_PORTS[0]}"
	E2E_NODE2_PORT="${NODE_PORTS[1]}" E2E_NODE3_PORT="${NODE_PORTS[2]}")
# the proxy settings under test: a templated copy of the Caddyfile
if [[ -n "$STREAM_BUFFER$PROTOCOLS" ]]; then
	TEMPLATED="$LOGDIR/scale.Caddyfile"
	awk -v sbs="$STREAM_BUFFER" -v protos="$PROTOCOLS" '
		{ print }
		protos != "" && !g && /^\{[ \t]*$/ { print "\tservers {\n\t\tprotocols " protos "\n\t}"; g = 1 }
		sbs != "" && !r && /^[ \t]*lb_policy / { print "\t\tstream_buffer_size " sbs; r = 1 }
	' "$CADDYFILE" >"$TEMPLATED"
	[[ -z "$STREAM_BUFFER" ]] || grep -q "stream_buffer_size $STREAM_BUFFER\$" "$TEMPLATED" || die "could not template stream_buffer_size into $CADDYFILE"
	[[ -z "$PROTOCOLS" ]] || grep -q "protocols $PROTOCOLS\$" "$TEMPLATED" || die "could not template protocols into $CADDYFILE"
	note "proxy settings under test:${STREAM_BUFFER:+ stream_buffer_size $STREAM_BUFFER}${PROTOCOLS:+ protocols $PROTOCOLS} ($TEMPLATED)"
	CADDYFILE_NAME="$CADDYFILE (templated:${STREAM_BUFFER:+ stream_buffer_size $STREAM_BUFFER}${PROTOCOLS:+ protocols $PROTOCOLS})"
	CADDYFILE="$TEMPLATED"
else
	CADDYFILE_NAME="$CADDYFILE"
fi
SITE_CURL=()
if [[ "$H2" == 1 ]]; then
	# Caddy's local CA and certificates live in the run's own directory
	CADDY_ENV+=(SCALE_DATA_DIR="$LOGDIR/caddy-data" GODEBUG=http2xconnect=1)
	CA="$LOGDIR/caddy-data/pki/authorities/local/root.crt"
	SITE_CURL=(--cacert "$CA")
	H2LOAD="$LOGDIR/h2load"
	go build -o "$H2LOAD" ./bench/h2load || die "building bench/h2load failed"
fi
"${CADDY_ENV[@]}" "$CADDY" adapt --config "$CADDYFILE" --validate >/dev/null 2>"$LOGDIR/adapt.log" ||
	die "$CADDYFILE does not validate: $(tail -n 3 "$LOGDIR/adapt.log")"
for port in "${NODE_PORTS[@]}" "$HTTP_PORT" "$ADMIN_PORT"; do
	port_in_use "$port" && die "port $port on 127.0.0.1 is in use; set SCALE_NODE_PORTS / SCALE_HTTP_PORT / SCALE_ADMIN_PORT"
done

say "Waiting for a quiet machine (1-minute load average < $MAX_LOAD, at most ${LOAD_WAIT}s)"
wait_for_load "$MAX_LOAD" "$LOAD_WAIT"
LOAD_START="$(loadavg)"

say "Starting 3 bench-node.js nodes and Caddy"
for n in 1 2 3; do
	start "node$n" "$LOGDIR/node$n.log" env PORT="${NODE_PORTS[$((n - 1))]}" NODE_NAME="node$n" node "$ROOT/bench/bench-node.js"
done
for n in 1 2 3; do wait_http "node$n" "http://127.0.0.1:${NODE_PORTS[$((n - 1))]}/__health" 15; done
start caddy "$LOGDIR/caddy.log" "${CADDY_ENV[@]}" "$CADDY" run --config "$CADDYFILE" --adapter caddyfile
CADDY_PID="$(pid_of caddy)"
wait_http caddy "$ADMIN/config/" 20
wait_http caddy "$SITE/__health" 20 "${SITE_CURL[@]}"
[[ "$(readlink "/proc/$CADDY_PID/exe" 2>/dev/null)" == "$(readlink -f "$CADDY")" ]] || die "pid $CADDY_PID is not $CADDY"
CADDY_NOFILE="$(awk '/^Max open files/ {print $4}' "/proc/$CADDY_PID/limits")"
sleep 1
RSS_IDLE="$(rss_kib "$CADDY_PID")"
# Go's own account after a collection (the heap profile's gc=1), for the per-session
# memory next to RSS: heap and stacks in use
curl -fsS --max-time 10 -o /dev/null "$ADMIN/debug/pprof/heap?gc=1" 2>/dev/null || true
curl -fsS --max-time 10 "$ADMIN/debug/vars" >"$LOGDIR/idle-vars.json" 2>/dev/null || echo null >"$LOGDIR/idle-vars.json"
note "nodes ${NODE_PORTS[*]}, Caddy pid $CADDY_PID (open files limit $CADDY_NOFILE), idle RSS $RSS_IDLE KiB; load $(loadavg)"

# --- sessions ---------------------------------------------------------------------
CLIENTS=()
CPU_PIDS="caddy:$CADDY_PID,nodes:$(pid_of node1),nodes:$(pid_of node2),nodes:$(pid_of node3)"
# launch KIND PROCS TOTAL NET ARGS...: PROCS client processes sharing TOTAL sessions
launch() {
	local kind="$1" procs="$2" total="$3" net="$4" k count off=0 h2transport=websocket
	shift 4
	[[ "$kind" == polling ]] && h2transport=polling
	for ((k = 0; k < procs; k++)); do
		count=$(((total + k) / procs)) # an even split
		((count > 0)) || continue
		if [[ "$H2" == 1 ]]; then
			# one source network per process: its client pools dial from 127.NET+k.x.y
			start "clients-$kind-$k" "$LOGDIR/clients-$kind-$k.out" "$H2LOAD" -url "$SITE/socket.io/" -ca "$CA" \
				-transport "$h2transport" -count "$count" -concurrency "$CONC" -addr-net $((net + k)) \
				-hold $((CONNECT_TIMEOUT_S + HOLD_S + 120))s -echo-every "${ECHO_EVERY_S}s" \
				-timeout "${SESSION_TIMEOUT_S}s" -max $((CONNECT_TIMEOUT_S + HOLD_S + 180))s
			CLIENTS+=("clients-$kind-$k")
			continue
		fi
		start "clients-$kind-$k" "$LOGDIR/clients-$kind-$k.out" node "$ROOT/bench/e2e-client.js" --url "$SITE" --mode hold \
			--count "$count" --concurrency "$CONC" --addr-net "$net" --addr-offset "$off" --addr-host 2 \
			--hold-ms $(((CONNECT_TIMEOUT_S + HOLD_S + 120) * 1000)) --echo-every-ms $((ECHO_EVERY_S * 1000)) \
			--timeout-ms $((SESSION_TIMEOUT_S * 1000)) --max-ms $(((CONNECT_TIMEOUT_S + HOLD_S + 180) * 1000)) --cpu-pids "$CPU_PIDS" "$@"
		CLIENTS+=("clients-$kind-$k")
		off=$((off + count))
	done
}
say "Opening $WS websocket sessions and $POLLING polling-only sessions"
T_OPEN="$(now_ms)"
((WS > 0)) && launch ws "$WS_PROCS" "$WS" "$WS_NET" --transports polling,websocket --keep-alive 1
((POLLING > 0)) && launch polling "$POLL_PROCS" "$POLLING" "$POLL_NET" --transports polling --keep-alive 0
RSS_MAX="$RSS_IDLE"
deadline=$(($(now_ms) + CONNECT_TIMEOUT_S * 1000))
while :; do
	ready=0
	for c in "${CLIENTS[@]}"; do
		grep -q '"event":"ready"' "$LOGDIR/$c.out" 2>/dev/null && ready=$((ready + 1))
		if ! grep -q '"event":"ready"' "$LOGDIR/$c.out" 2>/dev/null && ! kill -0 "$(pid_of "$c")" 2>/dev/null; then
			die "$c exited before it was ready: $(tail -c 300 "$LOGDIR/$c.out")"
		fi
	done
	r="$(rss_kib "$CADDY_PID")"
	((r > RSS_MAX)) && RSS_MAX=$r
	((ready == ${#CLIENTS[@]})) && break
	(($(now_ms) < deadline)) || die "not every client process was ready within ${CONNECT_TIMEOUT_S}s"
	printf '    %5.0fs: %d of %d client processes ready; nodes hold %s sessions; Caddy RSS %d KiB, %s open files; load %s\n' \
		"$((($(now_ms) - T_OPEN) / 1000))" "$ready" "${#CLIENTS[@]}" "$(nodes_open "${NODE_PORTS[@]}")" "$r" \
		"$(find "/proc/$CADDY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" "$(loadavg)" >&2
	sleep 5
done
T_READY="$(now_ms)"
OPEN_S=$(((T_READY - T_OPEN) / 1000))
note "every client process is ready after ${OPEN_S}s; nodes hold $(nodes_open "${NODE_PORTS[@]}") sessions"

say "Holding for ${HOLD_S}s (an echo per socket every ${ECHO_EVERY_S}s)"
hold_end=$((T_READY + HOLD_S * 1000))
while (($(now_ms) < hold_end)); do
	r="$(rss_kib "$CADDY_PID")"
	((r > RSS_MAX)) && RSS_MAX=$r
	sleep 2
done
# the last look, before the clients are released
for n in 1 2 3; do
	curl -fsS --max-time 5 "http://127.0.0.1:${NODE_PORTS[$((n - 1))]}/__stats" >"$LOGDIR/end-node$n.json" 2>/dev/null || echo null >"$LOGDIR/end-node$n.json"
done
RSS_END="$(rss_kib "$CADDY_PID")"
((RSS_END > RSS_MAX)) && RSS_MAX=$RSS_END
FDS_END="$(find "/proc/$CADDY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
THREADS_END="$(awk '/^Threads:/ {print $2}' "/proc/$CADDY_PID/status")"
curl -fsS --max-time 10 "$ADMIN/debug/pprof/goroutine?debug=1" 2>/dev/null | sed -n '1s/^goroutine profile: total //p' >"$LOGDIR/end-goroutines" || true
curl -fsS --max-time 10 "$ADMIN/socketio/sessions" >"$LOGDIR/end-pins.json" 2>/dev/null || echo null >"$LOGDIR/end-pins.json"
curl -fsS --max-time 10 "$ADMIN/debug/vars" >"$LOGDIR/end-vars.json" 2>/dev/null || echo null >"$LOGDIR/end-vars.json"
mkdir -p "$RESULTS_DIR"
HEAP="$RESULTS_DIR/scale-$STAMP-heap"
if curl -fsS --max-time 20 -o "$HEAP.pprof" "$ADMIN/debug/pprof/heap?gc=1" 2>/dev/null; then
	timeout 120 go tool pprof -sample_index=inuse_space -top -nodecount=30 "$CADDY" "$HEAP.pprof" >"$HEAP.txt" 2>/dev/null || true
fi
curl -fsS --max-time 10 "$ADMIN/debug/vars" >"$LOGDIR/end-vars-gc.json" 2>/dev/null || echo null >"$LOGDIR/end-vars-gc.json"
CADDY_CPU_S="$(awk '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / 100 }' "/proc/$CADDY_PID/stat")"
note "Caddy RSS $RSS_END KiB (max $RSS_MAX), $FDS_END open files, $THREADS_END threads; load $(loadavg)"

say "Releasing the clients"
for c in "${CLIENTS[@]}"; do kill -USR2 "$(pid_of "$c")" 2>/dev/null || true; done
rc_all=0
for c in "${CLIENTS[@]}"; do
	rc=0
	wait_exit "$c" 120 || rc=$?
	((rc == 0)) || {
		note "$c exited with status $rc"
		rc_all=1
	}
done
sleep 2
RSS_AFTER="$(rss_kib "$CADDY_PID")"
OPEN_AFTER="$(nodes_open "${NODE_PORTS[@]}")"

# --- echo throughput (optional) -----------------------------------------------------
ECHO_FILES=()
if ((ECHO_SOCKETS > 0)); then
	wait_nodes_idle 30 "${NODE_PORTS[@]}"
	for p in "${ECHO_PAYLOADS[@]}"; do
		say "Echo throughput: $ECHO_SOCKETS websockets, $p-byte payloads, round trips back to back for ${ECHO_S}s (after 2 s of warm-up)"
		start "clients-echo-$p" "$LOGDIR/echo-$p.out" node "$ROOT/bench/e2e-client.js" --url "$SITE" --mode echo \
			--count "$ECHO_SOCKETS" --concurrency "$CONC" --addr-net "$ECHO_NET" --addr-host 3 --transports polling,websocket \
			--keep-alive 1 --warmup-ms 2000 --duration-ms $((ECHO_S * 1000)) --payload-bytes "$p" \
			--timeout-ms $((SESSION_TIMEOUT_S * 1000)) --max-ms $(((ECHO_S + 150) * 1000)) --cpu-pids "$CPU_PIDS"
		rc=0
		wait_exit "clients-echo-$p" $((ECHO_S + 180)) || rc=$?
		((rc == 0)) || note "clients-echo-$p exited with status $rc"
		ECHO_FILES+=("echo-$p.out")
		note "$(sed -n 's/.*"roundTripsPerS":\([0-9.]*\).*/\1 round trips\/s/p' "$LOGDIR/echo-$p.out" | tail -n 1)"
		wait_nodes_idle 30 "${NODE_PORTS[@]}"
	done
fi
LOAD_END="$(loadavg)"

# --- report -------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
RESULT_FILE="$RESULTS_DIR/scale-$STAMP.json"
say "Results"
SCALE_META="$(
	printf '{"stamp":"%s","date":"%s","machine":%s,"caddy":"%s","revision":"%s","sha256":"%s",' "$STAMP" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		"$(machine_info)" "$("$CADDY" version | cut -d' ' -f1)" "$REVISION" "$SUM_CADDY"
	printf '"protocol":"%s","client":"%s","caddyfile":"%s","streamBufferSize":"%s","serverProtocols":"%s",' "$PROTOCOL" "$CLIENT" "$CADDYFILE_NAME" \
		"${STREAM_BUFFER:-default}" "${PROTOCOLS:-default}"
	printf '"requested":{"websocket":%d,"polling":%d},"run":{"websocket":%d,"polling":%d},"scaledDown":%s,"nofile":%d,"caddyNofile":"%s",' \
		"$REQ_WS" "$REQ_POLLING" "$WS" "$POLLING" "$SCALED" "$NOFILE" "$CADDY_NOFILE"
	printf '"holdS":%d,"echoEveryS":%d,"openS":%d,"clientProcesses":{"websocket":%d,"polling":%d},"concurrencyPerProcess":%d,' \
		"$HOLD_S" "$ECHO_EVERY_S" "$OPEN_S" "$WS_PROCS" "$POLL_PROCS" "$CONC"
	printf '"caddyRssKiB":{"idle":%d,"end":%d,"max":%d,"afterRelease":%d},"caddyOpenFiles":%d,"caddyThreads":%d,"caddyCpuS":%s,' \
		"$RSS_IDLE" "$RSS_END" "$RSS_MAX" "$RSS_AFTER" "$FDS_END" "$THREADS_END" "$CADDY_CPU_S"
	printf '"caddyGoroutines":"%s","openSessionsAfterRelease":"%s","clientsExitOk":%s,' "$(cat "$LOGDIR/end-goroutines" 2>/dev/null)" "$OPEN_AFTER" \
		"$([[ $rc_all == 0 ]] && echo true || echo false)"
	printf '"load":{"waitedS":%d,"belowMax":%s,"start":"%s","end":"%s"},"totalS":%d}' "$LOAD_WAITED" \
		"$([[ $LOAD_OK == 1 ]] && echo true || echo false)" "$LOAD_START" "$LOAD_END" $((($(now_ms) - T_START) / 1000))
)"
rc=0
SCALE_META="$SCALE_META" SCALE_LOGDIR="$LOGDIR" SCALE_RESULT_FILE="$RESULT_FILE" SCALE_CLIENTS="${CLIENTS[*]}" SCALE_ECHO_FILES="${ECHO_FILES[*]}" node - <<'EOF' || rc=$?
"use strict";
const fs = require("fs");
const path = require("path");
const dir = process.env.SCALE_LOGDIR;
const meta = JSON.parse(process.env.SCALE_META);
const read = (f) => {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
  } catch (_) {
    return null;
  }
};
const lines = (f) => {
  const out = {};
  for (const l of fs.readFileSync(path.join(dir, f), "utf8").split("\n")) {
    if (!l.startsWith("{")) continue;
    try {
      const o = JSON.parse(l);
      out[o.event] = o;
    } catch (_) {}
  }
  return out;
};
const inc = (m, k, n = 1) => (m[k] = (m[k] || 0) + n);
const kinds = { ws: { want: meta.run.websocket }, polling: { want: meta.run.polling } };
for (const k of Object.keys(kinds)) Object.assign(kinds[k], { ready: 0, failed: 0, alive: 0, connected: 0, echoOk: 0, echoFailed: 0, disconnects: {}, errors: {}, byTransport: {}, readyP99: [], processes: 0 });
for (const c of process.env.SCALE_CLIENTS.split(" ").filter(Boolean)) {
  const kind = c.split("-")[1];
  const o = lines(`${c}.out`);
  const K = kinds[kind];
  K.processes++;
  if (o.ready) K.readyP99.push(o.ready.readyMs.p99);
  const r = o.result;
  if (!r) {
    K.missingResult = (K.missingResult || 0) + 1;
    continue;
  }
  K.ready += r.ready;
  K.failed += r.failed;
  K.alive += r.aliveAtEnd;
  K.connected += r.connectedAtEnd;
  K.echoOk += r.echoOk;
  K.echoFailed += r.echoFailed;
  for (const [a, b] of Object.entries(r.disconnects)) inc(K.disconnects, a, b);
  for (const [a, b] of Object.entries(r.errors)) inc(K.errors, a, b);
  for (const [a, b] of Object.entries(r.byTransportAtEnd)) inc(K.byTransport, a, b);
}
const nodes = [1, 2, 3].map((n) => read(`end-node${n}.json`));
const openSessions = nodes.reduce((a, n) => a + (n ? n.openSessions : NaN), 0);
const want = meta.run.websocket + meta.run.polling;
const alive = kinds.ws.alive + kinds.polling.alive;
const pins = read("end-pins.json");
const vars = read("end-vars.json");
const varsIdle = read("idle-vars.json");
const varsGc = read("end-vars-gc.json");
const goInuse = (v) => (v && v.memstats ? v.memstats.HeapInuse + v.memstats.StackInuse : null);
const perSessionKiB = (a, b, n) => (a === null || b === null || !n ? null : Math.round(((b - a) / 1024 / n) * 10) / 10);
const perK = (kib, n) => (n ? Math.round(((kib * 1000) / n / 1024) * 100) / 100 : null);
const problems = [];
if (kinds.ws.ready + kinds.polling.ready !== want) problems.push(`${want - kinds.ws.ready - kinds.polling.ready} sessions never became ready`);
if (alive !== want) problems.push(`${want - alive} sessions not alive at the end (clients' count)`);
if (openSessions !== want) problems.push(`the nodes hold ${openSessions} sessions, want ${want}`);
const echoFailed = kinds.ws.echoFailed + kinds.polling.echoFailed;
if (echoFailed) problems.push(`${echoFailed} echoes failed`);
const disc = Object.values(kinds.ws.disconnects).concat(Object.values(kinds.polling.disconnects)).reduce((a, b) => a + b, 0);
if (disc) problems.push(`${disc} disconnects during the hold`);
if (!meta.clientsExitOk || kinds.ws.missingResult || kinds.polling.missingResult) problems.push("a client process failed");
const echo = [];
for (const f of (process.env.SCALE_ECHO_FILES || "").split(" ").filter(Boolean)) {
  const r = lines(f).result;
  if (!r) {
    problems.push(`echo phase ${f}: no result`);
    continue;
  }
  const caddyCpuS = r.cpu && r.cpu.processes ? r.cpu.processes.caddy : null;
  const errs = Object.values(r.errors || {}).reduce((a, b) => a + b, 0);
  if (r.setupFailed || r.disconnected || errs) problems.push(`echo phase ${f}: ${r.setupFailed} sessions failed, ${r.disconnected} disconnects, ${errs} errors`);
  echo.push({
    payloadBytes: r.payloadBytes,
    sockets: r.sockets,
    durationMs: r.durationMs,
    roundTrips: r.roundTrips,
    roundTripsPerS: r.roundTripsPerS,
    latencyMs: r.latencyMs,
    caddyCpuS,
    caddyCpuUsPerRoundTrip: caddyCpuS !== null && r.roundTrips ? Math.round((caddyCpuS * 1e6) / r.roundTrips * 10) / 10 : null,
    machineBusyFraction: r.cpu ? r.cpu.machineBusyFraction : null,
    setupFailed: r.setupFailed,
    disconnected: r.disconnected,
    errors: r.errors,
  });
}
const result = {
  ...meta,
  ok: problems.length === 0,
  problems,
  sessions: { want, ready: kinds.ws.ready + kinds.polling.ready, aliveAtEnd: alive, nodesOpenSessions: openSessions },
  clients: kinds,
  nodes: nodes.map((n) => n && { node: n.node, openSessions: n.openSessions, openSockets: n.openSockets, handshakes: n.handshakes, upgrades: n.upgrades, echoes: n.echoes, disconnects: n.disconnects, connectionErrors: n.connectionErrors }),
  caddyRssPer1kMiB: perK(meta.caddyRssKiB.end - meta.caddyRssKiB.idle, want),
  caddyRssPerSessionKiB: want ? Math.round(((meta.caddyRssKiB.end - meta.caddyRssKiB.idle) / want) * 10) / 10 : null,
  caddyGoInuseAfterGcMiB: { idle: goInuse(varsIdle) === null ? null : Math.round((goInuse(varsIdle) / 1048576) * 10) / 10, end: goInuse(varsGc) === null ? null : Math.round((goInuse(varsGc) / 1048576) * 10) / 10 },
  caddyGoInusePerSessionKiB: perSessionKiB(goInuse(varsIdle), goInuse(varsGc), want),
  caddyHeapAllocMiB: vars && vars.memstats ? Math.round((vars.memstats.HeapAlloc / 1048576) * 10) / 10 : null,
  caddySysMiB: vars && vars.memstats ? Math.round((vars.memstats.Sys / 1048576) * 10) / 10 : null,
  echo,
  pins: pins && { pins: pins.pins, byUpstream: pins.by_upstream, pinned: pins.pinned, dropped: pins.dropped, expired: pins.expired, evicted: pins.evicted },
};
fs.writeFileSync(process.env.SCALE_RESULT_FILE, JSON.stringify(result, null, 1) + "\n");
const rows = [
  ["sessions requested", `${meta.requested.websocket} websocket + ${meta.requested.polling} polling`],
  ["sessions run", `${meta.run.websocket} websocket + ${meta.run.polling} polling${meta.scaledDown ? ` (scaled down: ulimit -n ${meta.nofile})` : ""}`],
  ["ready (opened)", `${result.sessions.ready} of ${want} in ${meta.openS} s (failed: ws ${kinds.ws.failed}, polling ${kinds.polling.failed})`],
  ["alive at the end (clients)", `${alive} of ${want} (ws on websocket ${kinds.ws.alive}, polling ${kinds.polling.alive}) after a ${meta.holdS} s hold`],
  ["open sessions (nodes' /__stats)", `${openSessions} (${nodes.map((n) => (n ? `${n.node} ${n.openSessions}` : "?")).join(", ")})`],
  ["echoes ok / failed", `${kinds.ws.echoOk + kinds.polling.echoOk} / ${echoFailed}`],
  ["disconnects during the hold", `${disc}`],
  ["Caddy RSS", `idle ${(meta.caddyRssKiB.idle / 1024).toFixed(1)} MiB, with the sessions ${(meta.caddyRssKiB.end / 1024).toFixed(1)} MiB (max ${(meta.caddyRssKiB.max / 1024).toFixed(1)}), after release ${(meta.caddyRssKiB.afterRelease / 1024).toFixed(1)} MiB`],
  ["Caddy RSS per 1,000 sessions", `${result.caddyRssPer1kMiB} MiB (${result.caddyRssPerSessionKiB} KiB per session)`],
  ["Caddy Go heap + stacks in use after a GC", `idle ${result.caddyGoInuseAfterGcMiB.idle} MiB, with the sessions ${result.caddyGoInuseAfterGcMiB.end} MiB: ${result.caddyGoInusePerSessionKiB} KiB per session`],
  ["Caddy Go heap / Sys", `${result.caddyHeapAllocMiB} / ${result.caddySysMiB} MiB`],
  ["Caddy goroutines, open files, threads", `${meta.caddyGoroutines}, ${meta.caddyOpenFiles} (limit ${meta.caddyNofile}), ${meta.caddyThreads}`],
  ["pins", pins ? `${pins.pins} (${Object.entries(pins.by_upstream || {}).map(([k, v]) => `${k} ${v}`).join(", ")})` : "unavailable"],
  ["load average", `${meta.load.start} at the start, ${meta.load.end} at the end`],
];
if (meta.streamBufferSize !== "default" || meta.serverProtocols !== "default") rows.splice(2, 0, ["proxy settings", `stream_buffer_size ${meta.streamBufferSize}, protocols ${meta.serverProtocols}`]);
for (const e of echo)
  rows.push([`echo, ${e.payloadBytes} B payload`, `${e.roundTripsPerS} round trips/s over ${e.sockets} websockets (p50 ${e.latencyMs.p50} ms); Caddy CPU ${e.caddyCpuUsPerRoundTrip} µs per round trip; machine ${Math.round(e.machineBusyFraction * 100)} % busy`]);
let md = `Scale run ${meta.stamp} (revision ${meta.revision}): one Caddy with the plugin (${meta.caddyfile}), three socket.io@4 nodes; clients ${meta.client} over ${meta.protocol}.\n\n| | |\n|---|---|\n`;
for (const [k, v] of rows) md += `| ${k} | ${v} |\n`;
md += `| verdict | ${result.ok ? "PASS" : "FAIL"}${meta.scaledDown ? " at the scaled-down size" : ""}${problems.length ? ": " + problems.join("; ") : ""} |\n`;
fs.writeFileSync(process.env.SCALE_RESULT_FILE.replace(/\.json$/, ".md"), md);
let out = md;
out += `\n${result.ok ? "SCALE OK" : "SCALE FAILED"}${meta.scaledDown ? " (at the scaled-down size)" : ""}; saved ${process.env.SCALE_RESULT_FILE} and .md\n`;
process.stdout.write(out);
process.exit(result.ok ? 0 : 1);
EOF
exit "$rc"
