#!/usr/bin/env bash
# soak.sh - a bounded soak of caddy-socketio, on one machine, loopback only:
#
#   1. npm ci (if needed) and build bin/caddy with scripts/build-caddy.sh
#      (skipped when up to date)
#   2. start three caddytest/testdata/sio-node.js nodes (pingInterval and
#      pingTimeout 5 s) and bin/caddy with bench/soak.Caddyfile (socketio handler,
#      lb_policy socketio { fallback least_conn }, the recommended settings of
#      Caddyfile.example)
#   3. connect SOAK_SESSIONS socket.io clients (caddytest/testdata/sio-clients.js,
#      all with --reconnect and an echo every second), each from its own
#      127.x.y.z address: 40% default transports (polling, then the upgrade to
#      WebSocket), 40% polling only, 20% WebSocket only; keep them SOAK_SECONDS
#   4. at 1/3 of the run: one `caddy reload` with a changed configuration (the
#      policy's ttl); at 2/3: restart node2 (SIGTERM, then start it again on the
#      same port)
#   5. report: a table, one JSON line on stdout (also saved to
#      bench/out/soak-<UTC date and time>.json; see SOAK_RESULTS)
#
# A session is LOST when its client is not connected at the end, or when it was
# disconnected for any other reason than the restart of node2: only a client that
# was on node2 may be disconnected, once. The clients report their disconnects
# without a time, so the nodes' own counts (/__stats) are checked as well: no
# socket may be disconnected on any node before the restart, nor on node1, node3
# or the restarted node2 after it. Unexplained disconnects = the larger of the two
# counts. Exit status: 0 when no session was lost, 1 when some were (or the reload
# or the restart did not happen), 2 for bad settings.
#
# Works from any directory:  bench/soak.sh   (or: make soak)
# Environment:
#   SOAK_SECONDS    length of the soak after every client connected (default 120, at least 20)
#   SOAK_SESSIONS   number of clients (default 500)
#   SOAK_ADMIN_PORT Caddy admin API on localhost (default 2119)
#   SOAK_HTTP_PORT  the site, http://127.0.0.1:PORT (default 8180)
#   SOAK_NODE_PORTS the three nodes' ports (default "3101 3102 3103")
#   SOAK_RESULTS    directory of the JSON results (default $BENCH_RESULTS, else bench/out;
#                   BENCH_RESULTS=bench/results refreshes the committed summary)
#   SOAK_CADDYFILE  another Caddyfile to soak (default <repo>/bench/soak.Caddyfile;
#                   it must read the same SOAK_* placeholders)
#   KEEP_LOGS=1     keep the log directory (it is kept anyway when the run fails)
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SOAK_SECONDS="${SOAK_SECONDS:-120}"
SOAK_SESSIONS="${SOAK_SESSIONS:-500}"
SOAK_ADMIN_PORT="${SOAK_ADMIN_PORT:-2119}"
SOAK_HTTP_PORT="${SOAK_HTTP_PORT:-8180}"
read -r -a NODE_PORTS <<<"${SOAK_NODE_PORTS:-3101 3102 3103}"

CADDY="$ROOT/bin/caddy"
CADDYFILE="${SOAK_CADDYFILE:-$ROOT/bench/soak.Caddyfile}"
SITE="http://127.0.0.1:$SOAK_HTTP_PORT"
ADMIN="http://localhost:$SOAK_ADMIN_PORT"
NODE_SCRIPT="$ROOT/caddytest/testdata/sio-node.js"
CLIENT_SCRIPT="$ROOT/caddytest/testdata/sio-clients.js"
SIO_OPTIONS='{"pingInterval":5000,"pingTimeout":5000}'
TTL_BEFORE=90s # the policy's ttl at the start ...
TTL_AFTER=95s  # ... and after the reload (a changed config: a real reload)
ECHO_MS=1000
CONNECT_TIMEOUT_MS=10000
CONCURRENCY=20
RESTART_NODE=2 # node2

SCRIPT_NAME=soak.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
RESULTS_DIR="$(results_dir "${SOAK_RESULTS:-}")"

if ! is_uint "$SOAK_SECONDS" || ((SOAK_SECONDS < 20)); then
	bad_setting "SOAK_SECONDS must be a number >= 20, got '$SOAK_SECONDS'"
fi
if ! is_uint "$SOAK_SESSIONS" || ((SOAK_SESSIONS < 3 || SOAK_SESSIONS > 60000)); then
	bad_setting "SOAK_SESSIONS must be a number from 3 to 60000, got '$SOAK_SESSIONS'"
fi
[[ ${#NODE_PORTS[@]} -eq 3 ]] || bad_setting "SOAK_NODE_PORTS must name 3 ports, got '${NODE_PORTS[*]}'"
for p in "$SOAK_ADMIN_PORT" "$SOAK_HTTP_PORT" "${NODE_PORTS[@]}"; do
	if ! is_uint "$p" || ((p < 1 || p > 65535)); then bad_setting "bad port '$p'"; fi
done
for tool in node npm go curl timeout; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done

# Client groups: name, share of the sessions (the default group takes the rest),
# transports, extra flags, and a /16 of 127.0.0.0/8 for the source addresses.
GROUPS_NAME=(default polling websocket)
GROUPS_TRANSPORTS=("polling,websocket" polling websocket)
GROUPS_FLAGS=("--expect-upgrade" "" "")
GROUPS_NET=(127.10 127.11 127.12)
n_polling=$((SOAK_SESSIONS * 40 / 100))
n_websocket=$((SOAK_SESSIONS * 20 / 100))
GROUPS_COUNT=($((SOAK_SESSIONS - n_polling - n_websocket)) "$n_polling" "$n_websocket")

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/caddy-socketio-soak.XXXXXX")"
T_START="$(now_ms)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
elapsed() { printf '%6.1fs' "$(($(now_ms) - T_START))e-3"; }

LOG_TAIL_LINES=20
trap lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_node() {
	local n="$1"
	start "node$n" "$LOGDIR/node$n.log" env PORT="${NODE_PORTS[$((n - 1))]}" NODE_NAME="node$n" \
		SIO_OPTIONS="$SIO_OPTIONS" node "$NODE_SCRIPT"
}

# the environment bench/soak.Caddyfile reads (an `env` command line, so that a
# process started with it is Caddy itself, not a shell around it)
CADDY_ENV=(env SOAK_ADMIN_PORT="$SOAK_ADMIN_PORT" SOAK_HTTP_PORT="$SOAK_HTTP_PORT"
	SOAK_NODE1_PORT="${NODE_PORTS[0]}" SOAK_NODE2_PORT="${NODE_PORTS[1]}" SOAK_NODE3_PORT="${NODE_PORTS[2]}")

# snapshot TAG: every node's /__stats, the pin store and Caddy's RSS, into $LOGDIR/snap-TAG-*
snapshot() {
	local tag="$1" n
	now_ms >"$LOGDIR/snap-$tag-at"
	for n in 1 2 3; do
		curl -fsS --max-time 3 "http://127.0.0.1:${NODE_PORTS[$((n - 1))]}/__stats" >"$LOGDIR/snap-$tag-node$n.json" 2>/dev/null ||
			echo null >"$LOGDIR/snap-$tag-node$n.json"
	done
	pins "$LOGDIR/snap-$tag-pins.json"
	rss >"$LOGDIR/snap-$tag-rss"
	# Go runtime: goroutines and heap (Caddy's admin API serves pprof and expvar)
	curl -fsS --max-time 3 "$ADMIN/debug/pprof/goroutine?debug=1" >"$LOGDIR/snap-$tag-goroutines.txt" 2>/dev/null || true
	sed -n '1s/^goroutine profile: total //p' "$LOGDIR/snap-$tag-goroutines.txt" >"$LOGDIR/snap-$tag-goroutines"
	curl -fsS --max-time 3 "$ADMIN/debug/vars" >"$LOGDIR/snap-$tag-vars.json" 2>/dev/null || echo null >"$LOGDIR/snap-$tag-vars.json"
	echo "$(($(now_ms) - $(cat "$LOGDIR/snap-$tag-at"))) ms" >"$LOGDIR/snap-$tag-took"
}
pins() {
	curl -fsS --max-time 3 "$ADMIN/socketio/sessions" >"$1" 2>/dev/null || echo null >"$1"
}
rss() {
	awk '/^VmRSS:/ {print $2}' "/proc/$CADDY_PID/status" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------------------
say "Soak: $SOAK_SESSIONS sessions for ${SOAK_SECONDS}s (load average $(loadavg); logs in $LOGDIR)"
note "groups: default (polling then websocket) ${GROUPS_COUNT[0]}, polling only ${GROUPS_COUNT[1]}, websocket only ${GROUPS_COUNT[2]}"

say "Node.js packages and bin/caddy"
timeout 600 scripts/npm-ci-if-needed.sh
timeout 900 scripts/build-caddy.sh
modules="$("$CADDY" list-modules | grep socketio || true)"
for id in http.handlers.socketio http.reverse_proxy.selection_policies.socketio; do
	grep -qx "$id" <<<"$modules" || die "module $id is missing from $CADDY"
done
"${CADDY_ENV[@]}" SOAK_TTL="$TTL_BEFORE" "$CADDY" adapt --config "$CADDYFILE" --validate >/dev/null 2>"$LOGDIR/adapt.log" ||
	die "$CADDYFILE does not validate: $(tail -n 3 "$LOGDIR/adapt.log")"

say "Checking that the ports are free"
for port in "${NODE_PORTS[@]}" "$SOAK_HTTP_PORT" "$SOAK_ADMIN_PORT"; do
	if port_in_use "$port"; then
		die "port $port on 127.0.0.1 is in use (another soak or test run?); free it or set SOAK_ADMIN_PORT / SOAK_HTTP_PORT / SOAK_NODE_PORTS ('ss -ltnp' shows who holds it)"
	fi
done
note "127.0.0.1 ports ${NODE_PORTS[*]} $SOAK_HTTP_PORT $SOAK_ADMIN_PORT are free"

say "Starting 3 sio-node.js nodes on 127.0.0.1:${NODE_PORTS[*]} (SIO_OPTIONS=$SIO_OPTIONS)"
for n in 1 2 3; do start_node "$n"; done
for n in 1 2 3; do wait_http "node$n" "http://127.0.0.1:${NODE_PORTS[$((n - 1))]}/__health" 15; done
note "pids: node1 ${PIDS[0]}, node2 ${PIDS[1]}, node3 ${PIDS[2]}"

say "Starting Caddy (${CADDYFILE#"$ROOT"/}, ttl $TTL_BEFORE) on $SITE, admin $ADMIN"
start caddy "$LOGDIR/caddy.log" "${CADDY_ENV[@]}" SOAK_TTL="$TTL_BEFORE" "$CADDY" run --config "$CADDYFILE" --adapter caddyfile
CADDY_PID="${PIDS[$(index_of caddy)]}"
sleep 0.2
[[ "$(readlink "/proc/$CADDY_PID/exe" 2>/dev/null)" == "$(readlink -f "$CADDY")" ]] ||
	die "pid $CADDY_PID is not $CADDY (it is $(readlink "/proc/$CADDY_PID/exe" 2>/dev/null || echo gone))"
wait_http caddy "$ADMIN/config/" 20
wait_http caddy "$SITE/__health" 20
RSS_IDLE="$(rss)"
note "Caddy pid $CADDY_PID, RSS ${RSS_IDLE} KiB"
snapshot idle

# ---------------------------------------------------------------------------
say "Connecting $SOAK_SESSIONS clients (--reconnect, echo every ${ECHO_MS} ms, hold ${SOAK_SECONDS}s)"
ip_of() { echo "$(($1 >> 24 & 255)).$(($1 >> 16 & 255)).$(($1 >> 8 & 255)).$(($1 & 255))"; }
ready_deadline_s=30
for g in 0 1 2; do
	count="${GROUPS_COUNT[$g]}"
	((count > 0)) || continue
	IFS=. read -r a b <<<"${GROUPS_NET[$g]}"
	first=$(((a << 24) | (b << 16) | 1))
	range="$(ip_of "$first")-$(ip_of $((first + count - 1)))"
	note "${GROUPS_NAME[$g]}: $count clients, transports ${GROUPS_TRANSPORTS[$g]}, from $range"
	# shellcheck disable=SC2086 # GROUPS_FLAGS may be empty or several words
	start "clients-${GROUPS_NAME[$g]}" "$LOGDIR/clients-${GROUPS_NAME[$g]}.out" \
		node "$CLIENT_SCRIPT" --url "$SITE" --count "$count" --transports "${GROUPS_TRANSPORTS[$g]}" \
		--local-address-range "$range" --reconnect --concurrency "$CONCURRENCY" \
		--connect-timeout-ms "$CONNECT_TIMEOUT_MS" --hold-ms $((SOAK_SECONDS * 1000)) \
		--echo-interval-ms "$ECHO_MS" ${GROUPS_FLAGS[$g]}
	# the clients' stderr goes to the same file; their stdout lines are JSON
	waves=$(((count + CONCURRENCY - 1) / CONCURRENCY))
	if ((waves * CONNECT_TIMEOUT_MS / 1000 + 30 > ready_deadline_s)); then
		ready_deadline_s=$((waves * CONNECT_TIMEOUT_MS / 1000 + 30))
	fi
done

# wait for every group's "ready" line (the end of its connect phase)
declare -A READY_AT=()
deadline=$(($(now_ms) + ready_deadline_s * 1000))
while :; do
	for g in 0 1 2; do
		name="${GROUPS_NAME[$g]}"
		((GROUPS_COUNT[g] > 0)) || continue
		[[ -n "${READY_AT[$name]:-}" ]] && continue
		if grep -q '"event":"ready"' "$LOGDIR/clients-$name.out" 2>/dev/null; then
			READY_AT[$name]="$(now_ms)"
			note "$(elapsed) $name: $(grep -m1 '"event":"ready"' "$LOGDIR/clients-$name.out")"
		elif ! index_of "clients-$name" >/dev/null || ! kill -0 "${PIDS[$(index_of "clients-$name")]}" 2>/dev/null; then
			die "clients-$name exited before its connect phase ended"
		fi
	done
	n_ready=${#READY_AT[@]}
	n_groups=0
	for c in "${GROUPS_COUNT[@]}"; do
		if ((c > 0)); then n_groups=$((n_groups + 1)); fi
	done
	if ((n_ready == n_groups)); then break; fi
	(($(now_ms) < deadline)) || die "the clients did not finish connecting within ${ready_deadline_s}s"
	sleep 0.2
done
T0="$(printf '%s\n' "${READY_AT[@]}" | sort -n | tail -n1)"       # every group holds from here
FIRST_READY="$(printf '%s\n' "${READY_AT[@]}" | sort -n | head -n1)" # the first hold ends S after this
snapshot start
RSS_START="$(cat "$LOGDIR/snap-start-rss")"
note "Caddy RSS ${RSS_START} KiB; pins: $(cat "$LOGDIR/snap-start-pins.json")"

# ---------------------------------------------------------------------------
T_RELOAD=$((T0 + SOAK_SECONDS * 1000 / 3))
T_RESTART=$((T0 + SOAK_SECONDS * 2000 / 3))
T_FINAL=$((FIRST_READY + SOAK_SECONDS * 1000 - 2000)) # last look at the nodes before any hold ends
say "Holding: reload at +$((SOAK_SECONDS / 3))s, restart node$RESTART_NODE at +$((SOAK_SECONDS * 2 / 3))s"
RSS_MAX="$RSS_START"
next_rss=$(($(now_ms) + 5000))
done_reload=0 done_restart=0 done_final=0
RELOAD_MS=-1 RELOAD_RC=-1 RESTART_DOWN_MS=-1 FINAL_LATE_MS=0
while ((done_final == 0)); do
	now="$(now_ms)"
	if ((now >= next_rss)); then
		r="$(rss)"
		if ((r > RSS_MAX)); then RSS_MAX="$r"; fi
		echo "$(((now - T0) / 1000)) $r" >>"$LOGDIR/rss.txt"
		next_rss=$((now + 5000))
	fi
	if ((done_reload == 0 && now >= T_RELOAD)); then
		done_reload=1
		snapshot prereload
		note "$(elapsed) caddy reload (snapshot took $(cat "$LOGDIR/snap-prereload-took")) (ttl $TTL_BEFORE -> $TTL_AFTER)"
		t="$(now_ms)"
		RELOAD_RC=0
		"${CADDY_ENV[@]}" SOAK_TTL="$TTL_AFTER" timeout 60 "$CADDY" reload --config "$CADDYFILE" --adapter caddyfile \
			--address "localhost:$SOAK_ADMIN_PORT" >"$LOGDIR/reload.log" 2>&1 || RELOAD_RC=$?
		RELOAD_MS=$(($(now_ms) - t))
		snapshot postreload
		note "$(elapsed) reload exit $RELOAD_RC in ${RELOAD_MS} ms; pins: $(cat "$LOGDIR/snap-postreload-pins.json")"
		continue
	fi
	if ((done_restart == 0 && now >= T_RESTART)); then
		done_restart=1
		snapshot prerestart
		note "$(elapsed) restarting node$RESTART_NODE, pid ${PIDS[$(index_of "node$RESTART_NODE")]} (SIGTERM, then start again on port ${NODE_PORTS[$((RESTART_NODE - 1))]}; snapshot took $(cat "$LOGDIR/snap-prerestart-took"))"
		t="$(now_ms)"
		stop_proc "$(index_of "node$RESTART_NODE")"
		mv "$LOGDIR/node$RESTART_NODE.log" "$LOGDIR/node$RESTART_NODE-before-restart.log"
		start_node "$RESTART_NODE"
		wait_http "node$RESTART_NODE" "http://127.0.0.1:${NODE_PORTS[$((RESTART_NODE - 1))]}/__health" 15
		RESTART_DOWN_MS=$(($(now_ms) - t))
		snapshot postrestart
		note "$(elapsed) node$RESTART_NODE (pid ${PIDS[$(index_of "node$RESTART_NODE")]}) is back after ${RESTART_DOWN_MS} ms; pins: $(cat "$LOGDIR/snap-postrestart-pins.json")"
		continue
	fi
	if ((done_restart == 1 && now >= T_FINAL)); then
		done_final=1
		FINAL_LATE_MS=$((now - T_FINAL))
		snapshot final
		note "$(elapsed) last look before the holds end; pins: $(cat "$LOGDIR/snap-final-pins.json")"
		break
	fi
	sleep 0.25
done

# ---------------------------------------------------------------------------
say "Waiting for the clients' results"
deadline=$(($(now_ms) + 60000)) # the holds end within ~2 s; echoes in flight take <= 5.5 s more
for g in 0 1 2; do
	name="${GROUPS_NAME[$g]}"
	((GROUPS_COUNT[g] > 0)) || continue
	i="$(index_of "clients-$name")" || continue
	pid="${PIDS[$i]}"
	while kill -0 "$pid" 2>/dev/null && (($(now_ms) < deadline)); do sleep 0.25; done
	kill -0 "$pid" 2>/dev/null && die "clients-$name did not finish within 60 s of the end of the soak"
	rc=0
	wait "$pid" || rc=$?
	unset "PIDS[$i]" "NAMES[$i]"
	((rc == 0)) || die "clients-$name exited with status $rc (3 = its watchdog fired)"
	grep -q '"event":"result"' "$LOGDIR/clients-$name.out" || die "clients-$name printed no result"
done
sleep 2 # let Caddy close the connections the clients left
snapshot end
T_END="$(now_ms)"

# ---------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULT_FILE="$RESULTS_DIR/soak-$STAMP.json"
say "Results"
rc=0
SOAK_LOGDIR="$LOGDIR" SOAK_RESULT_FILE="$RESULT_FILE" SOAK_STAMP="$STAMP" \
	SOAK_META="$(
		printf '{"seconds":%d,"sessions":%d,"groupNames":["%s","%s","%s"],"groupCounts":[%d,%d,%d],' \
			"$SOAK_SECONDS" "$SOAK_SESSIONS" "${GROUPS_NAME[@]}" "${GROUPS_COUNT[@]}"
		printf '"groupTransports":["%s","%s","%s"],"restartNode":"node%d",' "${GROUPS_TRANSPORTS[@]}" "$RESTART_NODE"
		printf '"ttlBefore":"%s","ttlAfter":"%s","sioOptions":%s,"site":"%s","admin":"%s",' \
			"$TTL_BEFORE" "$TTL_AFTER" "$SIO_OPTIONS" "$SITE" "$ADMIN"
		printf '"tStart":%d,"t0":%d,"firstReady":%d,"tReload":%d,"tRestart":%d,"tFinal":%d,"tEnd":%d,' \
			"$T_START" "$T0" "$FIRST_READY" "$T_RELOAD" "$T_RESTART" "$T_FINAL" "$T_END"
		printf '"reloadMs":%d,"reloadExit":%d,"restartDownMs":%d,"finalLateMs":%d,' \
			"$RELOAD_MS" "$RELOAD_RC" "$RESTART_DOWN_MS" "$FINAL_LATE_MS"
		printf '"rssIdle":%d,"rssStart":%d,"rssMax":%d,"loadBefore":"%s","loadAfter":"%s"}' \
			"$RSS_IDLE" "$RSS_START" "$RSS_MAX" "$LOAD_BEFORE" "$(loadavg)"
	)" node - <<'EOF' || rc=$?
"use strict";
const fs = require("fs");
const path = require("path");
const dir = process.env.SOAK_LOGDIR;
const meta = JSON.parse(process.env.SOAK_META);
const read = (f) => {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
  } catch (_) {
    return null;
  }
};
const readNum = (f) => {
  try {
    return Number(fs.readFileSync(path.join(dir, f), "utf8").trim());
  } catch (_) {
    return null;
  }
};
const nodes = ["node1", "node2", "node3"];
const snap = (tag) => ({
  nodes: Object.fromEntries(nodes.map((n) => [n, read(`snap-${tag}-${n}.json`)])),
  pins: read(`snap-${tag}-pins.json`),
  rss: readNum(`snap-${tag}-rss`),
  goroutines: readNum(`snap-${tag}-goroutines`),
  heapKiB: ((v) => (v && v.memstats ? Math.round(v.memstats.HeapAlloc / 1024) : null))(read(`snap-${tag}-vars.json`)),
  at: readNum(`snap-${tag}-at`),
});
const S = Object.fromEntries(["idle", "start", "prereload", "postreload", "prerestart", "postrestart", "final", "end"].map((t) => [t, snap(t)]));
const inc = (m, k, n = 1) => (m[k] = (m[k] || 0) + n);
const addAll = (into, m) => {
  for (const [k, v] of Object.entries(m || {})) inc(into, k, v);
};

// --- clients ---
const groups = [];
for (let g = 0; g < 3; g++) {
  if (meta.groupCounts[g] === 0) continue;
  const name = meta.groupNames[g];
  const lines = fs.readFileSync(path.join(dir, `clients-${name}.out`), "utf8").split("\n");
  let result = null;
  for (const l of lines) {
    if (!l.startsWith("{")) continue;
    try {
      const o = JSON.parse(l);
      if (o.event === "result") result = o;
    } catch (_) {}
  }
  if (!result) throw new Error(`no result from clients-${name}`);
  groups.push({ name, transports: meta.groupTransports[g], result });
}
const restartNode = meta.restartNode;
const sum = (f) => groups.reduce((a, g) => a + f(g.result), 0);
const tot = {
  started: sum((r) => r.total),
  connected: sum((r) => r.connected),
  aliveAtEnd: sum((r) => r.aliveAtEnd),
  upgraded: sum((r) => r.upgraded),
  reconnects: sum((r) => r.reconnects),
  reconnectAttempts: sum((r) => r.reconnectAttempts),
  echoOk: sum((r) => r.echoOk),
  echoFailed: sum((r) => r.echoFailed),
  echoSkipped: sum((r) => r.echoSkipped),
  echoNodeMismatch: sum((r) => r.echoNodeMismatch),
};
const disconnectReasons = {};
const disconnectDetails = {};
const echoErrors = {};
const connectErrors = {};
let disconnects = 0;
const perGroup = {};
const lostClients = [];
let brokenByRestart = 0, brokenReconnected = 0, brokenNotAlive = 0;
let unexplainedClients = 0, notAlive = 0, onRestartNodeAtStart = 0;
for (const g of groups) {
  const r = g.result;
  for (const p of ["disconnectsDuringConnect", "disconnectsDuringHold"]) {
    disconnects += r[p].count;
    addAll(disconnectReasons, r[p].reasons);
    addAll(disconnectDetails, r[p].details);
  }
  addAll(echoErrors, r.echoErrors);
  for (const e of r.connectErrors) inc(connectErrors, e.message, e.count);
  const pg = (perGroup[g.name] = {
    transports: g.transports, started: r.total, connected: r.connected, upgraded: r.upgraded,
    aliveAtEnd: r.aliveAtEnd, disconnects: r.disconnectsDuringConnect.count + r.disconnectsDuringHold.count,
    reconnects: r.reconnects, echoOk: r.echoOk, echoFailed: r.echoFailed, lost: 0,
    perNode: r.perNode, perNodeAtEnd: r.perNodeAtEnd, transportsAtEnd: r.transportsAtEnd,
  });
  r.clients.forEach((c, i) => {
    const d = c.disconnects || [];
    const alive = !!c.node && c.alive !== false && !c.error;
    if (c.node === restartNode) onRestartNodeAtStart++;
    // explained: never disconnected, or disconnected exactly once while on the
    // restarted node (its first node; a client that moved before the restart
    // has >= 1 other disconnect)
    const explained = d.length === 0 || (d.length === 1 && c.node === restartNode);
    if (d.length === 1 && c.node === restartNode) {
      brokenByRestart++;
      if (alive) brokenReconnected++;
      else brokenNotAlive++;
    }
    let why = null;
    if (!alive) {
      notAlive++;
      why = c.error ? `never connected: ${c.error}` : "not connected at the end";
    } else if (!explained) {
      unexplainedClients++;
      why = "disconnect not explained by the restart";
    }
    if (why) {
      pg.lost++;
      lostClients.push({ group: g.name, i, why, ...c });
    }
  });
}

// --- server side: socket.io disconnects outside the restart of node2 ---
// every node counts from its start; node2's counters before the restart are in
// the pre-restart snapshot, the restarted node2's in the final one.
const st = (tag, n) => S[tag].nodes[n] || {};
const val = (o, f) => (o && typeof o[f] === "number" ? o[f] : 0);
const serverUnexpected = {};
const serverUnexpectedReasons = {};
const before = st("prerestart", restartNode);
serverUnexpected[`${restartNode} before the restart`] = val(before, "ioDisconnections");
addAll(serverUnexpectedReasons, before.disconnectReasons);
serverUnexpected[`${restartNode} after the restart`] = val(st("final", restartNode), "ioDisconnections");
addAll(serverUnexpectedReasons, st("final", restartNode).disconnectReasons);
for (const n of nodes.filter((n) => n !== restartNode)) {
  serverUnexpected[n] = val(st("final", n), "ioDisconnections");
  addAll(serverUnexpectedReasons, st("final", n).disconnectReasons);
}
const serverUnexpectedTotal = Object.values(serverUnexpected).reduce((a, b) => a + b, 0);
// disconnects (all nodes) between the reload and the restart: the reload's own
const reloadWindow = nodes.reduce((a, n) => a + val(st("prerestart", n), "ioDisconnections") - val(st("prereload", n), "ioDisconnections"), 0);
const sessionsOnRestartNode = val(before, "openSockets");

// "Session ID unknown" (engine.io code 1) answers of every node
const code1 = (o) => (o && o.connectionErrors && o.connectionErrors.byCode && o.connectionErrors.byCode["1"]) || 0;
const sessionIdUnknown = {};
for (const n of nodes) {
  sessionIdUnknown[n] = n === restartNode ? code1(st("prerestart", n)) + code1(st("end", n)) : code1(st("end", n));
}
const sessionIdUnknownTotal = Object.values(sessionIdUnknown).reduce((a, b) => a + b, 0);
const otherErrors = {};
for (const n of nodes) {
  const ends = n === restartNode ? [st("prerestart", n), st("end", n)] : [st("end", n)];
  for (const o of ends) {
    for (const [k, v] of Object.entries((o.connectionErrors && o.connectionErrors.byCode) || {})) if (k !== "1") inc(otherErrors, `${n} code ${k}`, v);
  }
}

const unexplained = Math.max(unexplainedClients, serverUnexpectedTotal);
const lost = notAlive + unexplained;
// the soak itself must have happened as planned
const problems = [];
const ttlBefore = S.prereload.pins && S.prereload.pins.ttl;
const ttlAfter = S.postreload.pins && S.postreload.pins.ttl;
if (meta.reloadExit !== 0) problems.push(`caddy reload failed (exit ${meta.reloadExit}, see reload.log)`);
else if (!ttlBefore || ttlBefore === ttlAfter) problems.push(`the reload did not change the policy's ttl (${ttlBefore} -> ${ttlAfter}): not a real reload`);
if (meta.restartDownMs < 0) problems.push(`${meta.restartNode} was not restarted`);
if (tot.started !== meta.sessions) problems.push(`${tot.started} clients ran, ${meta.sessions} were asked for`);

const pinView = (p) =>
  p && { ttl: p.ttl, pins: p.pins, tombstones: p.tombstones, by_upstream: p.by_upstream, pinned: p.pinned, collisions: p.collisions, evicted: p.evicted, expired: p.expired, dropped: p.dropped, refused: p.refused };
const nodeView = (n) => ({
  sessionsAtStart: val(st("start", n), "openSockets"),
  sessionsBeforeRestart: val(st("prerestart", n), "openSockets"),
  sessionsAtEnd: val(st("final", n), "openSockets"),
  handshakes: n === restartNode ? val(st("prerestart", n), "handshakes") + val(st("end", n), "handshakes") : val(st("end", n), "handshakes"),
  upgrades: n === restartNode ? val(st("prerestart", n), "upgrades") + val(st("end", n), "upgrades") : val(st("end", n), "upgrades"),
  echoes: n === restartNode ? val(st("prerestart", n), "echoes") + val(st("final", n), "echoes") : val(st("final", n), "echoes"),
  sessionIdUnknown: sessionIdUnknown[n],
});
const s1 = (ms) => Math.round(ms / 100) / 10;
const result = {
  event: "soak",
  date: process.env.SOAK_STAMP,
  ok: lost === 0 && problems.length === 0,
  problems,
  seconds: meta.seconds,
  sessions: meta.sessions,
  started: tot.started,
  connected: tot.connected,
  upgraded: tot.upgraded,
  aliveAtEnd: tot.aliveAtEnd,
  lost,
  lostDetail: { notConnectedAtEnd: notAlive, unexplainedDisconnects: unexplained, unexplainedClients, serverDisconnectsOutsideRestart: serverUnexpectedTotal, serverDisconnectsOutsideRestartBy: serverUnexpected, serverReasons: serverUnexpectedReasons, disconnectsBetweenReloadAndRestart: reloadWindow },
  disconnects: { total: disconnects, reasons: disconnectReasons, details: disconnectDetails },
  reconnects: tot.reconnects,
  reconnectAttempts: tot.reconnectAttempts,
  echoes: { ok: tot.echoOk, failed: tot.echoFailed, skipped: tot.echoSkipped, nodeMismatch: tot.echoNodeMismatch, errors: echoErrors },
  connectErrors,
  restart: { node: restartNode, sessionsOnNode: sessionsOnRestartNode, clientsOnNodeAtStart: onRestartNodeAtStart, broken: brokenByRestart, reconnected: brokenReconnected, notReconnected: brokenNotAlive, downMs: meta.restartDownMs },
  reload: { exit: meta.reloadExit, ms: meta.reloadMs, ttlBefore, ttlAfter },
  sessionIdUnknown: { total: sessionIdUnknownTotal, byNode: sessionIdUnknown },
  otherEngineErrors: otherErrors,
  nodes: Object.fromEntries(nodes.map((n) => [n, nodeView(n)])),
  pins: { idle: pinView(S.idle.pins), start: pinView(S.start.pins), afterReload: pinView(S.postreload.pins), beforeRestart: pinView(S.prerestart.pins), afterRestart: pinView(S.postrestart.pins), beforeEnd: pinView(S.final.pins), end: pinView(S.end.pins) },
  caddyRssKiB: { idle: meta.rssIdle, start: meta.rssStart, max: meta.rssMax, beforeEnd: S.final.rss, end: S.end.rss },
  caddyGoroutines: { idle: S.idle.goroutines, start: S.start.goroutines, beforeEnd: S.final.goroutines, end: S.end.goroutines },
  caddyHeapKiB: { idle: S.idle.heapKiB, start: S.start.heapKiB, beforeEnd: S.final.heapKiB, end: S.end.heapKiB },
  groups: perGroup,
  timings: {
    setupS: s1(S.idle.at - meta.tStart),
    connectS: s1(meta.t0 - S.idle.at),
    reloadAtS: s1(S.prereload.at - meta.t0),
    restartAtS: s1(S.prerestart.at - meta.t0),
    holdS: s1(meta.tEnd - meta.t0),
    totalS: s1(meta.tEnd - meta.tStart),
    finalLookLateMs: meta.finalLateMs,
  },
  load: { before: meta.loadBefore, after: meta.loadAfter },
  lostClients: lostClients.slice(0, 20),
};

// --- table ---
const rows = [];
const row = (k, v, expect) => rows.push([k, String(v), expect || ""]);
const fmt = (m) => Object.entries(m || {}).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ") || "-";
const pinFmt = (p) => (p ? `${p.pins} pins (${p.tombstones} tombstones) ${fmt(p.by_upstream)}; pinned ${p.pinned}, dropped ${p.dropped}, expired ${p.expired}, evicted ${p.evicted}, collisions ${p.collisions}, refused ${p.refused}; ttl ${p.ttl}` : "unavailable");
row("sessions started", tot.started, `${meta.groupNames.map((n, g) => `${n} ${meta.groupCounts[g]}`).join(", ")}`);
row("connected at start", tot.connected, `= started`);
row("upgraded (default group)", tot.upgraded, `= default group`);
row("alive at the end", tot.aliveAtEnd, `= started`);
row("LOST sessions", lost, `0 (not connected at end ${notAlive} + unexplained disconnects ${unexplained})`);
row("  unexplained, client side", unexplainedClients, "clients disconnected while not on " + restartNode + ", or more than once");
row("  unexplained, server side", serverUnexpectedTotal, fmt(serverUnexpected));
row("  disconnects reload..restart", reloadWindow, "0 (server side, all nodes)");
row("disconnects (client side)", disconnects, fmt(disconnectDetails));
row("reconnects", tot.reconnects, `${tot.reconnectAttempts} attempts`);
row(`sessions on ${restartNode} at restart`, sessionsOnRestartNode, `server side (/__stats openSockets)`);
row(`broken by the restart`, brokenByRestart, `= sessions on ${restartNode}; reconnected ${brokenReconnected}, not ${brokenNotAlive}`);
row(`${restartNode} down for`, `${meta.restartDownMs} ms`, "SIGTERM until /__health answers again");
row("reload", meta.reloadExit === 0 ? `ok, ${meta.reloadMs} ms` : `exit ${meta.reloadExit}`, `ttl ${result.reload.ttlBefore} -> ${result.reload.ttlAfter}`);
row("echoes ok / failed", `${tot.echoOk} / ${tot.echoFailed}`, `skipped ${tot.echoSkipped}, node mismatch ${tot.echoNodeMismatch}; ${fmt(echoErrors)}`);
row('"Session ID unknown"', sessionIdUnknownTotal, `0; ${fmt(sessionIdUnknown)}`);
row("other engine.io errors", Object.values(otherErrors).reduce((a, b) => a + b, 0), fmt(otherErrors));
row("pins at start", "", pinFmt(S.start.pins));
row("pins after reload", "", pinFmt(S.postreload.pins));
row("pins after restart", "", pinFmt(S.postrestart.pins));
row("pins at the end", "", pinFmt(S.end.pins));
row("Caddy RSS (KiB)", `${meta.rssStart} -> ${S.final.rss}`, `idle ${meta.rssIdle}, max ${meta.rssMax}, after the clients left ${S.end.rss}`);
row("Caddy goroutines", `${S.start.goroutines} -> ${S.final.goroutines}`, `idle ${S.idle.goroutines}, after the clients left ${S.end.goroutines}`);
row("Caddy Go heap (KiB)", `${S.start.heapKiB} -> ${S.final.heapKiB}`, `idle ${S.idle.heapKiB}, after the clients left ${S.end.heapKiB} (HeapAlloc)`);
row("timings (s)", result.timings.holdS, `hold; connect ${result.timings.connectS}, reload at +${result.timings.reloadAtS}, restart at +${result.timings.restartAtS}, total ${result.timings.totalS}`);
row("load average", meta.loadBefore, `before; after ${meta.loadAfter}`);
const w0 = Math.max(...rows.map((r) => r[0].length));
const w1 = Math.max(...rows.map((r) => r[1].length));
let out = `${"".padEnd(w0)}  ${"value".padStart(w1)}  expected / detail\n`;
for (const r of rows) out += `${r[0].padEnd(w0)}  ${r[1].padStart(w1)}  ${r[2]}\n`;
out += "\nper group:\n";
for (const [n, p] of Object.entries(perGroup)) {
  out += `  ${n.padEnd(9)} (${p.transports}): started ${p.started}, connected ${p.connected}, upgraded ${p.upgraded}, alive at end ${p.aliveAtEnd}, disconnects ${p.disconnects}, reconnects ${p.reconnects}, echoes ${p.echoOk}/${p.echoFailed} failed, lost ${p.lost}; first node ${fmt(p.perNode)}; at end ${fmt(p.perNodeAtEnd)}\n`;
}
out += "per node:\n";
for (const n of nodes) {
  const v = result.nodes[n];
  out += `  ${n}: sessions at start ${v.sessionsAtStart}, before the restart ${v.sessionsBeforeRestart}, before the end ${v.sessionsAtEnd}; handshakes ${v.handshakes}, upgrades ${v.upgrades}, echoes ${v.echoes}, "Session ID unknown" ${v.sessionIdUnknown}\n`;
}
if (lostClients.length) {
  out += `lost clients (first ${Math.min(20, lostClients.length)}):\n`;
  for (const c of lostClients.slice(0, 20)) out += `  ${JSON.stringify(c)}\n`;
}
for (const p of problems) out += `problem: ${p}\n`;
if (reloadWindow > 0) out += `note: ${reloadWindow} sockets were disconnected between the reload and the restart (server side): the reload broke them\n`;
if (meta.finalLateMs > 2000) out += `warning: the last look at the nodes came ${meta.finalLateMs} ms late; server-side counts may include the clients' final disconnects\n`;
if (sessionsOnRestartNode !== brokenByRestart) out += `note: ${sessionsOnRestartNode} sessions were on ${restartNode} at the restart (server side), ${brokenByRestart} clients were broken by it (client side)\n`;
process.stdout.write(out + "\n");
const line = JSON.stringify(result);
fs.writeFileSync(process.env.SOAK_RESULT_FILE, line + "\n");
process.stdout.write(line + "\n");
process.stderr.write(`\n${result.ok ? "SOAK OK" : "SOAK FAILED"}: ${lost} lost sessions${problems.length ? "; " + problems.join("; ") : ""}; result saved to ${process.env.SOAK_RESULT_FILE}\n`);
process.exit(result.ok ? 0 : 1);
EOF
if ((rc != 0)); then
	[[ $rc -eq 1 ]] || die "the report failed (exit $rc)"
	exit 1
fi
