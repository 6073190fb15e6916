#!/usr/bin/env bash
# e2e.sh - end-to-end benchmark: the same Socket.IO cluster (three socket.io@4 nodes,
# bench/bench-node.js) behind, in turn,
#   (a) stock  stock Caddy v2.11.9 (bin/caddy-stock, `STOCK=1 scripts/build-caddy.sh`),
#              reverse_proxy with lb_policy client_ip_hash (bench/e2e-stock.Caddyfile)
#   (b) plugin Caddy with caddy-socketio (bin/caddy): socketio + lb_policy socketio,
#              default fallback client_ip_hash (bench/e2e-plugin.Caddyfile)
#   (c) nginx  Debian's nginx with the Socket.IO docs' recipe: ip_hash upstream,
#              HTTP/1.1, Upgrade/Connection headers (bench/e2e-nginx.conf.in); its
#              own instance, config, pid file and temp dirs under a temp directory
# all in ONE run, on this machine, loopback only. Every round runs the three
# proxies, in a rotated order (round 1: a b c, round 2: b c a, round 3: c a b),
# each one freshly started, through these phases (bench/e2e-client.js, the official
# socket.io-client@4, every session from its own 127.X.Y.1 address in its own /24):
#   1. warm-up: 20 sessions (not recorded); then the proxy's idle RSS
#   2. rss:     E2E_RSS_SESSIONS sessions (default transports, upgraded to WebSocket)
#               held open; RSS of the proxy (nginx: master + workers) minus the
#               idle RSS, per 1,000 sessions
#   3. connect: E2E_CONNECT_SESSIONS sessions, E2E_CONNECT_CONCURRENCY at a time,
#               each timed from io() to connected + upgraded, then closed
#   4. echo:    E2E_ECHO_SOCKETS WebSocket-only sockets, emit-with-ack round trips
#               back to back for E2E_WARMUP_S (unrecorded) + E2E_DURATION_S
#   5. polling: the same with E2E_POLL_SOCKETS polling-only sockets
# The proxy's, the nodes' and the client's CPU time are recorded for every phase.
# Each number is the median over the rounds, given as a ratio to (a).
#
# Before measuring, it waits (up to LOAD_WAIT s) for the 1-minute load average to
# drop below MAX_LOAD: other work on the machine skews every number.
#
#   bench/e2e.sh                     the full run (about 10 minutes with 3 rounds)
#   E2E_SMALL=1 bench/e2e.sh         a quick check with small sizes (1 round)
#   E2E_PROFILE=1 bench/e2e.sh       then one more, unrecorded round with 10 s CPU
#                                    profiles of both Caddys during echo and polling
#
# Writes bench/out/e2e-<UTC stamp>.json (every run's numbers and the medians)
# and bench/out/e2e-<UTC stamp>.md (the tables printed at the end), plus, with
# E2E_PROFILE=1, e2e-<stamp>-pprof-<proxy>-<phase>.{pprof,txt}.
# Exit status: 0 when every phase ran without a failed session (the targets are
# reported, not enforced), 1 otherwise, 2 for bad settings.
#
# Environment (defaults in brackets):
#   E2E_ROUNDS [3]  E2E_PROXIES ["stock plugin nginx"]
#   E2E_RSS_SESSIONS [2000]  E2E_CONNECT_SESSIONS [1000]  E2E_CONNECT_CONCURRENCY [10]
#   E2E_ECHO_SOCKETS [50]  E2E_POLL_SOCKETS [50]  E2E_DURATION_S [10]  E2E_WARMUP_S [2]
#   E2E_PAYLOAD_BYTES [64]  E2E_PROFILE [0]  E2E_SMALL [0]
#   MAX_LOAD [1.0]  LOAD_WAIT [1200]
#   E2E_NODE_PORTS ["3201 3202 3203"]  E2E_HTTP_PORTS ["8281 8282 8283"] (stock plugin nginx)
#   E2E_ADMIN_PORTS ["2281 2282"] (stock plugin)  E2E_RESULTS [$BENCH_RESULTS or bench/out;
#   BENCH_RESULTS=bench/results refreshes the committed summary]
#   KEEP_LOGS=1 keep the log directory (kept anyway on failure)
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCRIPT_NAME=e2e.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if [[ "${E2E_SMALL:-0}" == 1 ]]; then
	: "${E2E_ROUNDS:=1}" "${E2E_RSS_SESSIONS:=200}" "${E2E_CONNECT_SESSIONS:=100}"
	: "${E2E_ECHO_SOCKETS:=20}" "${E2E_POLL_SOCKETS:=10}" "${E2E_DURATION_S:=3}" "${E2E_WARMUP_S:=1}"
	: "${MAX_LOAD:=100}"
fi
ROUNDS="${E2E_ROUNDS:-3}"
read -r -a PROXIES <<<"${E2E_PROXIES:-stock plugin nginx}"
RSS_SESSIONS="${E2E_RSS_SESSIONS:-2000}"
CONNECT_SESSIONS="${E2E_CONNECT_SESSIONS:-1000}"
CONNECT_CONC="${E2E_CONNECT_CONCURRENCY:-10}"
ECHO_SOCKETS="${E2E_ECHO_SOCKETS:-50}"
POLL_SOCKETS="${E2E_POLL_SOCKETS:-50}"
DURATION_S="${E2E_DURATION_S:-10}"
WARMUP_S="${E2E_WARMUP_S:-2}"
PAYLOAD_BYTES="${E2E_PAYLOAD_BYTES:-64}"
PROFILE="${E2E_PROFILE:-0}"
MAX_LOAD="${MAX_LOAD:-1.0}"
LOAD_WAIT="${LOAD_WAIT:-1200}"
read -r -a NODE_PORTS <<<"${E2E_NODE_PORTS:-3201 3202 3203}"
read -r -a HTTP_PORTS <<<"${E2E_HTTP_PORTS:-8281 8282 8283}"
read -r -a ADMIN_PORTS <<<"${E2E_ADMIN_PORTS:-2281 2282}"
RESULTS_DIR="$(results_dir "${E2E_RESULTS:-}")"
WARM_SESSIONS=20
SETTLE_S=2 # after the rss sessions are ready, before reading the RSS

# --- settings ---------------------------------------------------------------
for v in ROUNDS RSS_SESSIONS CONNECT_SESSIONS CONNECT_CONC ECHO_SOCKETS POLL_SOCKETS DURATION_S WARMUP_S PAYLOAD_BYTES LOAD_WAIT; do
	is_uint "${!v}" || bad_setting "$v must be a non-negative integer, got '${!v}'"
done
((ROUNDS >= 1 && ROUNDS <= 9)) || bad_setting "E2E_ROUNDS must be 1..9"
((RSS_SESSIONS >= 10 && RSS_SESSIONS <= 8000)) || bad_setting "E2E_RSS_SESSIONS must be 10..8000 (2 fds per session in the proxy)"
((CONNECT_SESSIONS >= 10 && CONNECT_SESSIONS <= 20000)) || bad_setting "E2E_CONNECT_SESSIONS must be 10..20000"
((CONNECT_CONC >= 1 && CONNECT_CONC <= 200)) || bad_setting "E2E_CONNECT_CONCURRENCY must be 1..200"
((ECHO_SOCKETS >= 1 && ECHO_SOCKETS <= 200)) || bad_setting "E2E_ECHO_SOCKETS must be 1..200"
((POLL_SOCKETS >= 1 && POLL_SOCKETS <= 200)) || bad_setting "E2E_POLL_SOCKETS must be 1..200"
((DURATION_S >= 1 && DURATION_S <= 120 && WARMUP_S <= 60)) || bad_setting "E2E_DURATION_S must be 1..120, E2E_WARMUP_S 0..60"
[[ "$PROFILE" == 0 || "$PROFILE" == 1 ]] || bad_setting "E2E_PROFILE must be 0 or 1"
[[ "$MAX_LOAD" =~ ^[0-9]+(\.[0-9]+)?$ ]] || bad_setting "MAX_LOAD must be a number"
[[ ${#NODE_PORTS[@]} -eq 3 && ${#HTTP_PORTS[@]} -eq 3 && ${#ADMIN_PORTS[@]} -eq 2 ]] ||
	bad_setting "E2E_NODE_PORTS and E2E_HTTP_PORTS name 3 ports, E2E_ADMIN_PORTS 2"
for p in "${NODE_PORTS[@]}" "${HTTP_PORTS[@]}" "${ADMIN_PORTS[@]}"; do
	if ! is_uint "$p" || ((p < 1024 || p > 65535)); then bad_setting "bad port '$p'"; fi
done
((${#PROXIES[@]} >= 1)) || bad_setting "E2E_PROXIES is empty"
for p in "${PROXIES[@]}"; do
	[[ "$p" == stock || "$p" == plugin || "$p" == nginx ]] || bad_setting "E2E_PROXIES: unknown proxy '$p' (stock, plugin, nginx)"
done
for tool in node npm go curl timeout ps; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done

# proxy name -> index into the port lists, label
proxy_index() { case "$1" in stock) echo 0 ;; plugin) echo 1 ;; nginx) echo 2 ;; esac }

# Source addresses: every round has its own block of second octets, shared by the
# proxies of that round, so that (a) and (b) place the same clients on the same
# nodes (their client-IP hashing is the same; nginx's ip_hash is its own). Each
# proxy listens on its own port, so no TCP 4-tuple is reused within a run.
# 127.(16 + round * SPAN + …).Y.1
WARM_OFF=0
ECHO_OFF=32
POLL_OFF=$((ECHO_OFF + ECHO_SOCKETS))
RSS_OFF=512
CONNECT_OFF=$((RSS_OFF + RSS_SESSIONS))
SPAN=$(((CONNECT_OFF + CONNECT_SESSIONS + 255) / 256))
BLOCKS=$((ROUNDS + 1)) # + the profile round
((16 + BLOCKS * SPAN <= 254)) || bad_setting "too many sessions for the 127.x source addresses: lower E2E_ROUNDS, E2E_RSS_SESSIONS or E2E_CONNECT_SESSIONS"
addr_net() { echo $((16 + $1 * SPAN)); } # ROUND (0-based)

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/caddy-socketio-e2e.XXXXXX")"
chmod 755 "$LOGDIR" # nginx workers run as another user
trap lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
T_START="$(now_ms)"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
FAILED=0

say "End-to-end benchmark: ${PROXIES[*]}, $ROUNDS round(s) (logs in $LOGDIR)"
note "rss $RSS_SESSIONS sessions; connect $CONNECT_SESSIONS sessions, $CONNECT_CONC at a time; echo $ECHO_SOCKETS websocket sockets, polling $POLL_SOCKETS polling sockets, ${WARMUP_S}s + ${DURATION_S}s each"

# --- binaries ---------------------------------------------------------------
say "Node.js packages, bin/caddy, bin/caddy-stock, nginx"
timeout 600 scripts/npm-ci-if-needed.sh
timeout 900 scripts/build-caddy.sh
STOCK=1 timeout 900 scripts/build-caddy.sh
CADDY="$ROOT/bin/caddy"
CADDY_STOCK="$ROOT/bin/caddy-stock"
# what is measured: the commit, uncommitted changes to the plugin's sources (tests
# aside) when bin/caddy was built, and the binaries' checksums
REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain -- module selection caddysocketio.go go.mod go.sum 2>/dev/null | grep -v '_test\.go$' || true)" ]]; then
	REVISION="$REVISION + uncommitted changes to the plugin's sources"
fi
SUM_CADDY="$(sha256sum "$CADDY" | cut -c1-16)"
SUM_STOCK="$(sha256sum "$CADDY_STOCK" | cut -c1-16)"
# (the module lists are read whole: `| grep -q` would end the pipe early, failing it under pipefail)
modules="$("$CADDY" list-modules)"
grep -qx http.handlers.socketio <<<"$modules" || die "$CADDY has no socketio handler"
modules="$("$CADDY_STOCK" list-modules)"
if grep -q socketio <<<"$modules"; then die "$CADDY_STOCK is not stock: it has socketio modules"; fi
if [[ " ${PROXIES[*]} " == *" nginx "* ]] && ! command -v nginx >/dev/null 2>&1; then
	note "nginx is missing: installing Debian's nginx (apt-get); its service is not started or used"
	sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get install -y -qq nginx >/dev/null
	command -v nginx >/dev/null 2>&1 || die "nginx could not be installed"
fi
for p in stock plugin; do
	i="$(proxy_index $p)"
	bin="$CADDY"
	[[ $p == stock ]] && bin="$CADDY_STOCK"
	env E2E_ADMIN_PORT="${ADMIN_PORTS[$i]}" E2E_HTTP_PORT="${HTTP_PORTS[$i]}" E2E_NODE1_PORT="${NODE_PORTS[0]}" \
		E2E_NODE2_PORT="${NODE_PORTS[1]}" E2E_NODE3_PORT="${NODE_PORTS[2]}" \
		"$bin" adapt --config "$ROOT/bench/e2e-$p.Caddyfile" --validate >/dev/null 2>"$LOGDIR/adapt-$p.log" ||
		die "bench/e2e-$p.Caddyfile does not validate: $(tail -n 3 "$LOGDIR/adapt-$p.log")"
done

say "Checking that the ports are free"
for port in "${NODE_PORTS[@]}" "${HTTP_PORTS[@]}" "${ADMIN_PORTS[@]}"; do
	port_in_use "$port" && die "port $port on 127.0.0.1 is in use (another run?); set E2E_NODE_PORTS / E2E_HTTP_PORTS / E2E_ADMIN_PORTS"
done

# file descriptors: the proxies hold 2 per session; raise the soft limit to the hard one
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
((NOFILE >= 2 * RSS_SESSIONS + 1000)) || bad_setting "ulimit -n is $NOFILE: too low for $RSS_SESSIONS sessions (2 per session in the proxy); lower E2E_RSS_SESSIONS"
note "ulimit -n $NOFILE"

# --- the cluster --------------------------------------------------------------
say "Starting 3 bench-node.js nodes on 127.0.0.1:${NODE_PORTS[*]}"
for n in 1 2 3; do
	start "node$n" "$LOGDIR/node$n.log" env PORT="${NODE_PORTS[$((n - 1))]}" NODE_NAME="node$n" node "$ROOT/bench/bench-node.js"
done
for n in 1 2 3; do wait_http "node$n" "http://127.0.0.1:${NODE_PORTS[$((n - 1))]}/__health" 15; done
NODE_PIDS=("$(pid_of node1)" "$(pid_of node2)" "$(pid_of node3)")
note "pids ${NODE_PIDS[*]}"

# --- proxies ------------------------------------------------------------------
PROXY_PIDS=()
# start_proxy PROXY RUNTAG: start it, wait until it proxies, set PROXY_PIDS
start_proxy() {
	local p="$1" tag="$2" i bin dir pid
	i="$(proxy_index "$p")"
	case "$p" in
	stock | plugin)
		bin="$CADDY"
		[[ $p == stock ]] && bin="$CADDY_STOCK"
		start "proxy-$p" "$LOGDIR/$tag-proxy.log" env E2E_ADMIN_PORT="${ADMIN_PORTS[$i]}" E2E_HTTP_PORT="${HTTP_PORTS[$i]}" \
			E2E_NODE1_PORT="${NODE_PORTS[0]}" E2E_NODE2_PORT="${NODE_PORTS[1]}" E2E_NODE3_PORT="${NODE_PORTS[2]}" \
			"$bin" run --config "$ROOT/bench/e2e-$p.Caddyfile" --adapter caddyfile
		pid="$(pid_of "proxy-$p")"
		wait_http "proxy-$p" "http://localhost:${ADMIN_PORTS[$i]}/config/" 20
		[[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$bin")" ]] ||
			die "pid $pid is not $bin"
		;;
	nginx)
		dir="$LOGDIR/$tag-nginx"
		mkdir -p "$dir"
		chmod 755 "$dir"
		sed -e "s|@DIR@|$dir|g; s|@NOFILE@|$NOFILE|; s|@USER@|www-data|; s|@WORKER_CONNECTIONS@|$((NOFILE - 100))|" \
			-e "s|@NODE1_PORT@|${NODE_PORTS[0]}|; s|@NODE2_PORT@|${NODE_PORTS[1]}|; s|@NODE3_PORT@|${NODE_PORTS[2]}|" \
			-e "s|@HTTP_PORT@|${HTTP_PORTS[$i]}|" "$ROOT/bench/e2e-nginx.conf.in" >"$dir/nginx.conf"
		nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$LOGDIR/$tag-nginx-test.log" ||
			die "nginx rejects $dir/nginx.conf: $(tail -n 3 "$LOGDIR/$tag-nginx-test.log")"
		start "proxy-$p" "$LOGDIR/$tag-proxy.log" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
		pid="$(pid_of "proxy-$p")"
		;;
	esac
	wait_http "proxy-$p" "http://127.0.0.1:${HTTP_PORTS[$i]}/__health" 20
	PROXY_PIDS=("$pid")
	if [[ $p == nginx ]]; then
		local w
		for w in $(children "$pid"); do PROXY_PIDS+=("$w"); done
		((${#PROXY_PIDS[@]} >= 2)) || die "nginx (pid $pid) has no worker processes"
	fi
}
# nodes_counter FIELD: the nodes' /__stats FIELD, space-separated (? when one does not answer)
nodes_counter() {
	local p v out=""
	for p in "${NODE_PORTS[@]}"; do
		v="$(curl -fsS --max-time 3 "http://127.0.0.1:$p/__stats" 2>/dev/null | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p")"
		out+="${v:-?} "
	done
	echo "${out% }"
}
# delta "A B C" "D E F": "[D-A,E-B,F-C]" (JSON)
delta() {
	local -a a b
	read -r -a a <<<"$1"
	read -r -a b <<<"$2"
	if [[ "$1$2" == *"?"* ]]; then
		echo null
		return
	fi
	echo "[$((b[0] - a[0])),$((b[1] - a[1])),$((b[2] - a[2]))]"
}
cpu_pids() {
	local out="" p
	for p in "${PROXY_PIDS[@]}"; do out+="proxy:$p,"; done
	for p in "${NODE_PIDS[@]}"; do out+="nodes:$p,"; done
	echo "${out%,}"
}

# client TAG PHASE NET ARGS...: run bench/e2e-client.js to completion (bounded by its
# watchdog and by wait_exit), its output in $LOGDIR/TAG-PHASE.out
client() {
	local tag="$1" phase="$2" net="$3" rc=0
	shift 3
	start "clients-$tag-$phase" "$LOGDIR/$tag-$phase.out" node "$ROOT/bench/e2e-client.js" --addr-net "$net" "$@"
	wait_exit "clients-$tag-$phase" 600 || rc=$?
	if ((rc != 0)) || ! grep -q '"event":"result"' "$LOGDIR/$tag-$phase.out"; then
		note "warning: $tag $phase: client exit $rc, $(tail -c 300 "$LOGDIR/$tag-$phase.out")"
		FAILED=1
		return 0
	fi
	local failed
	failed="$(sed -n 's/.*"event":"result".*"\(failed\|setupFailed\)":\([0-9]*\).*/\2/p' "$LOGDIR/$tag-$phase.out")"
	if [[ -n "$failed" && "$failed" != 0 ]]; then
		note "warning: $tag $phase: $failed sessions failed"
		FAILED=1
	fi
}

# one_run ROUND(0-based) POSITION PROXY: every phase against a fresh PROXY
one_run() {
	local r="$1" pos="$2" p="$3" tag net i site t0 idle loaded open_loaded load_before pid
	tag="r$((r + 1))-$p"
	net="$(addr_net "$r")"
	i="$(proxy_index "$p")"
	site="http://127.0.0.1:${HTTP_PORTS[$i]}"
	load_before="$(loadavg)"
	t0="$(now_ms)"
	start_proxy "$p" "$tag"
	note "$(printf '%-6s' "$p") pids ${PROXY_PIDS[*]}; load $load_before"
	client "$tag" warm "$net" --url "$site" --mode connect --count "$WARM_SESSIONS" --concurrency 5 --addr-offset "$WARM_OFF"
	wait_nodes_idle 20 "${NODE_PORTS[@]}"
	sleep 1
	idle="$(rss_kib "${PROXY_PIDS[@]}")"

	# rss: hold RSS_SESSIONS sessions, read the RSS, release them
	start "clients-$tag-rss" "$LOGDIR/$tag-rss.out" node "$ROOT/bench/e2e-client.js" --addr-net "$net" --url "$site" \
		--mode hold --count "$RSS_SESSIONS" --concurrency 20 --addr-offset "$RSS_OFF" --hold-ms 300000 --cpu-pids "$(cpu_pids)"
	wait_line "$LOGDIR/$tag-rss.out" '"event":"ready"' "clients-$tag-rss" 300
	sleep "$SETTLE_S"
	loaded="$(rss_kib "${PROXY_PIDS[@]}")"
	open_loaded="$(nodes_open "${NODE_PORTS[@]}")"
	if pid="$(pid_of "clients-$tag-rss")"; then kill -USR2 "$pid" 2>/dev/null || true; fi
	wait_exit "clients-$tag-rss" 60 || note "warning: $tag rss: the client did not exit cleanly"
	grep -q '"event":"result"' "$LOGDIR/$tag-rss.out" || FAILED=1
	wait_nodes_idle 30 "${NODE_PORTS[@]}"
	note "       rss: idle $idle KiB, $open_loaded sessions open: $loaded KiB"

	local h0 h1 e0 e1 e2 e3
	h0="$(nodes_counter handshakes)"
	client "$tag" connect "$net" --url "$site" --mode connect --count "$CONNECT_SESSIONS" \
		--concurrency "$CONNECT_CONC" --addr-offset "$CONNECT_OFF" --cpu-pids "$(cpu_pids)"
	h1="$(nodes_counter handshakes)"
	wait_nodes_idle 30 "${NODE_PORTS[@]}"
	e0="$(nodes_counter echoes)"
	client "$tag" echo "$net" --url "$site" --mode echo --transports websocket --count "$ECHO_SOCKETS" \
		--concurrency 10 --addr-offset "$ECHO_OFF" --warmup-ms $((WARMUP_S * 1000)) --duration-ms $((DURATION_S * 1000)) \
		--payload-bytes "$PAYLOAD_BYTES" --cpu-pids "$(cpu_pids)"
	e1="$(nodes_counter echoes)"
	wait_nodes_idle 30 "${NODE_PORTS[@]}"
	e2="$(nodes_counter echoes)"
	client "$tag" polling "$net" --url "$site" --mode echo --transports polling --count "$POLL_SOCKETS" \
		--concurrency 10 --addr-offset "$POLL_OFF" --warmup-ms $((WARMUP_S * 1000)) --duration-ms $((DURATION_S * 1000)) \
		--payload-bytes "$PAYLOAD_BYTES" --cpu-pids "$(cpu_pids)"
	e3="$(nodes_counter echoes)"
	wait_nodes_idle 30 "${NODE_PORTS[@]}"
	local end_rss
	end_rss="$(rss_kib "${PROXY_PIDS[@]}")"
	stop_named "proxy-$p"
	printf '{"round":%d,"position":%d,"proxy":"%s","addrNet":%d,"loadBefore":"%s","loadAfter":"%s","rssIdleKiB":%d,"rssLoadedKiB":%d,"rssSessions":%d,"openSessionsLoaded":"%s","rssEndKiB":%d,"proxyProcesses":%d,"ms":%d,' \
		$((r + 1)) "$pos" "$p" "$net" "$load_before" "$(loadavg)" "$idle" "$loaded" "$RSS_SESSIONS" "$open_loaded" "$end_rss" \
		"${#PROXY_PIDS[@]}" $(($(now_ms) - t0)) >"$LOGDIR/run-$tag.json"
	# per node: handshakes of the connect phase, echoes of the echo and polling phases
	printf '"perNode":{"connectHandshakes":%s,"echo":%s,"polling":%s}}\n' "$(delta "$h0" "$h1")" "$(delta "$e0" "$e1")" \
		"$(delta "$e2" "$e3")" >>"$LOGDIR/run-$tag.json"
	note "       $(node "$ROOT/bench/e2e-report.js" --brief "$LOGDIR" "$tag")"
}

# --- measured rounds ------------------------------------------------------------
say "Waiting for a quiet machine (1-minute load average < $MAX_LOAD, at most ${LOAD_WAIT}s)"
wait_for_load "$MAX_LOAD" "$LOAD_WAIT"
LOAD_START="$(loadavg)"
for ((r = 0; r < ROUNDS; r++)); do
	order=()
	for ((k = 0; k < ${#PROXIES[@]}; k++)); do order+=("${PROXIES[$(((k + r) % ${#PROXIES[@]}))]}"); done
	say "Round $((r + 1)) of $ROUNDS: ${order[*]}"
	for ((k = 0; k < ${#order[@]}; k++)); do one_run "$r" "$k" "${order[$k]}"; done
done
LOAD_END="$(loadavg)"

# --- profiles (unrecorded) --------------------------------------------------------
if [[ "$PROFILE" == 1 ]]; then
	say "Profiles: one more round, not recorded: 10 s CPU profiles of both Caddys during echo and polling"
	for p in stock plugin; do
		[[ " ${PROXIES[*]} " == *" $p "* ]] || continue
		i="$(proxy_index "$p")"
		tag="prof-$p"
		net="$(addr_net "$ROUNDS")"
		start_proxy "$p" "$tag"
		bin="$CADDY"
		[[ $p == stock ]] && bin="$CADDY_STOCK"
		for phase in echo polling; do
			tr=websocket off=$ECHO_OFF n=$ECHO_SOCKETS
			[[ $phase == polling ]] && tr=polling off=$POLL_OFF n=$POLL_SOCKETS
			prof="$RESULTS_DIR/e2e-$STAMP-pprof-$p-$phase"
			mkdir -p "$RESULTS_DIR"
			start "clients-$tag-$phase" "$LOGDIR/$tag-$phase.out" node "$ROOT/bench/e2e-client.js" --addr-net "$net" \
				--url "http://127.0.0.1:${HTTP_PORTS[$i]}" --mode echo --transports "$tr" --count "$n" --concurrency 10 \
				--addr-offset "$off" --warmup-ms 3000 --duration-ms 12000 --payload-bytes "$PAYLOAD_BYTES" --cpu-pids "$(cpu_pids)"
			sleep 3
			start "pprof-$tag-$phase" "$LOGDIR/$tag-$phase-pprof.log" curl -fsS --max-time 30 -o "$prof.pprof" \
				"http://localhost:${ADMIN_PORTS[$i]}/debug/pprof/profile?seconds=10"
			wait_exit "pprof-$tag-$phase" 40 || note "warning: the profile of $p $phase failed"
			wait_exit "clients-$tag-$phase" 120 || true
			wait_nodes_idle 30 "${NODE_PORTS[@]}"
			if [[ -s "$prof.pprof" ]]; then
				{
					timeout 120 go tool pprof -top -nodecount=60 "$bin" "$prof.pprof" 2>/dev/null || true
					# the plugin's own work (an upper bound: the wrapped ResponseWriter's calls count too):
					# 1. the handler outside reverse_proxy (classify, refuse, read POST bodies)
					printf '\n# the socketio handler outside reverse_proxy\n'
					timeout 120 go tool pprof -top -nodecount=20 -focus=caddy-socketio \
						-ignore='reverseproxy\.\(\*Handler\)\.ServeHTTP' "$bin" "$prof.pprof" 2>/dev/null || true
					# 2. inside reverse_proxy: the policy (Select, pin store) and the handshake watcher
					printf '\n# lb_policy socketio (Select, pins) and the handshake watcher (exchange)\n'
					timeout 120 go tool pprof -top -nodecount=20 \
						-focus='caddy-socketio/caddy-socketio/(selection|module\.\(\*(exchange|SocketIOSelection)\))' \
						"$bin" "$prof.pprof" 2>/dev/null || true
				} >"$prof.txt"
				note "$p $phase: $prof.pprof ($(sed -n 's/^Duration.*Total samples = \(.*\)/\1/p' "$prof.txt" | head -1))"
			fi
		done
		stop_named "proxy-$p"
	done
fi

# --- report -------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
RESULT_FILE="$RESULTS_DIR/e2e-$STAMP.json"
MD_FILE="$RESULTS_DIR/e2e-$STAMP.md"
say "Results"
meta="$(
	printf '{"stamp":"%s","date":"%s","machine":%s,' "$STAMP" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(machine_info)"
	printf '"caddy":"%s","caddyStock":"%s",' "$("$CADDY" version | cut -d' ' -f1)" "$("$CADDY_STOCK" version | cut -d' ' -f1)"
	printf '"revision":"%s","sha256":{"caddy":"%s","caddyStock":"%s"},' "$REVISION" "$SUM_CADDY" "$SUM_STOCK"
	printf '"settings":{"rounds":%d,"proxies":"%s","rssSessions":%d,"connectSessions":%d,"connectConcurrency":%d,' \
		"$ROUNDS" "${PROXIES[*]}" "$RSS_SESSIONS" "$CONNECT_SESSIONS" "$CONNECT_CONC"
	printf '"echoSockets":%d,"pollSockets":%d,"durationS":%d,"warmupS":%d,"payloadBytes":%d,"maxLoad":"%s","nofile":%d},' \
		"$ECHO_SOCKETS" "$POLL_SOCKETS" "$DURATION_S" "$WARMUP_S" "$PAYLOAD_BYTES" "$MAX_LOAD" "$NOFILE"
	printf '"load":{"waitedS":%d,"belowMax":%s,"start":"%s","end":"%s"},"totalS":%d,"failed":%s}' \
		"$LOAD_WAITED" "$([[ $LOAD_OK == 1 ]] && echo true || echo false)" "$LOAD_START" "$LOAD_END" \
		$((($(now_ms) - T_START) / 1000)) "$([[ $FAILED == 1 ]] && echo true || echo false)"
)"
E2E_META="$meta" node "$ROOT/bench/e2e-report.js" --final "$LOGDIR" "$RESULT_FILE" "$MD_FILE"
note "saved $RESULT_FILE and $MD_FILE"
if [[ $FAILED == 1 ]]; then
	echo "$SCRIPT_NAME: some sessions failed (see the warnings above and the logs)" >&2
	exit 1
fi
