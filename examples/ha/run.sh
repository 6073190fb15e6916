#!/usr/bin/env bash
# run.sh - several Caddy instances sharing their pins through Redis, end to
# end, on one machine (loopback only, free ports chosen at start):
#   1. npm ci in the repository root (if node_modules is missing or stale)
#   2. build Caddy with this plugin into bin/caddy (skipped when up to date)
#   3. start redis-server (no persistence, its own temporary directory)
#   4. start three Socket.IO nodes (examples/cluster/server.js)
#   5. start three Caddy instances (caddy-a, caddy-b, caddy-c) with the
#      socketio handler, `lb_policy socketio { fallback least_conn }` and the
#      shared `redis` store, each logging its requests
#   6. start a front: Caddy with only standard modules, `reverse_proxy` with
#      `lb_policy round_robin` to the three instances (every request of a
#      session may reach another instance)
#   7. connect one client, then CLIENTS clients at once, through the front
#      (examples/cluster/client.js), and print which instance served which
#      request of each session
#   8. stop everything it started (by pid)
# Exit status: 0 when every client connected and upgraded to WebSocket.
#
# Works from any directory:  examples/ha/run.sh   (or: make example-ha)
# Environment: CLIENTS (default 30; 0 skips the many-clients run),
#              HA_BENCH_S (default 0): echo throughput for that many seconds
#              through three instances, then through one,
#              KEEP_LOGS=1 keeps the log directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# shellcheck source=examples/lib.sh
source "$ROOT/examples/lib.sh"

CLIENTS="${CLIENTS:-30}"
CADDY="$ROOT/bin/caddy"
INSTANCES=(caddy-a caddy-b caddy-c)

[[ "$CLIENTS" =~ ^[0-9]+$ ]] || die "CLIENTS must be a number, got '$CLIENTS'"
for tool in node npm go curl redis-server redis-cli; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (redis-server: apt-get install redis-server)"
done

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/caddy-socketio-ha.XXXXXX")"

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_ports N: N distinct TCP ports free on 127.0.0.1 right now
free_ports() {
	node -e '
		const net = require("net");
		const n = Number(process.argv[1]);
		const servers = [];
		(function next() {
			if (servers.length === n) {
				console.log(servers.map((s) => s.address().port).join(" "));
				servers.forEach((s) => s.close());
				return;
			}
			const s = net.createServer();
			s.listen(0, "127.0.0.1", () => { servers.push(s); next(); });
		})();' "$1"
}

say "Node.js packages"
scripts/npm-ci-if-needed.sh

say "Building Caddy with caddy-socketio (bin/caddy)"
scripts/build-caddy.sh
"$CADDY" version

# 1 Redis, 3 nodes, 3 instances (site + admin), the front (site + admin)
read -r -a PORTS <<<"$(free_ports 12)"
[[ ${#PORTS[@]} -eq 12 ]] || die "could not find 12 free ports on 127.0.0.1"
REDIS_PORT="${PORTS[0]}"
NODE_PORTS=("${PORTS[@]:1:3}")
SITE_PORTS=("${PORTS[@]:4:3}")
ADMIN_PORTS=("${PORTS[@]:7:3}")
FRONT_PORT="${PORTS[10]}"
FRONT_ADMIN="${PORTS[11]}"
FRONT="http://127.0.0.1:$FRONT_PORT"

say "Starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence)"
mkdir -p "$LOGDIR/redis"
start redis "$LOGDIR/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
	--dir "$LOGDIR/redis" --daemonize no
for _ in $(seq 1 75); do
	[[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" == PONG ]] && break
	kill -0 "${PIDS[-1]}" 2>/dev/null || die "redis-server exited during startup"
	sleep 0.2
done
echo "Redis is up"

say "Starting Socket.IO nodes on 127.0.0.1:${NODE_PORTS[*]}"
NODE_PIDS=()
for i in "${!NODE_PORTS[@]}"; do
	start "node$((i + 1))" "$LOGDIR/node$((i + 1)).log" env PORT="${NODE_PORTS[$i]}" NODE_NAME="node$((i + 1))" node examples/cluster/server.js
	NODE_PIDS+=("${PIDS[-1]}")
done
for i in "${!NODE_PORTS[@]}"; do
	wait_http "node$((i + 1))" "${NODE_PIDS[$i]}" "http://127.0.0.1:${NODE_PORTS[$i]}/healthz"
done
UPSTREAMS=""
for p in "${NODE_PORTS[@]}"; do UPSTREAMS+=" 127.0.0.1:$p"; done

say "Starting three Caddy instances sharing pins through Redis"
for i in "${!INSTANCES[@]}"; do
	name="${INSTANCES[$i]}"
	mkdir -p "$LOGDIR/$name"
	cat >"$LOGDIR/$name/Caddyfile" <<CADDYFILE
{
	admin localhost:${ADMIN_PORTS[$i]}
	http_port ${SITE_PORTS[$i]}
	auto_https off
	servers {
		# the front: its X-Forwarded-For names the client
		trusted_proxies static 127.0.0.1/32
	}
	socketio {
		store redis {
			address 127.0.0.1:$REDIS_PORT
		}
	}
}
http://127.0.0.1:${SITE_PORTS[$i]} {
	log {
		output file $LOGDIR/$name/access.log
		format json
	}
	header X-Caddy-Instance $name
	socketio
	reverse_proxy$UPSTREAMS {
		lb_policy socketio {
			fallback least_conn
		}
		transport http {
			keepalive 3s
		}
	}
}
CADDYFILE
	start "$name" "$LOGDIR/$name.log" env XDG_DATA_HOME="$LOGDIR/$name/data" XDG_CONFIG_HOME="$LOGDIR/$name/config" \
		"$CADDY" run --config "$LOGDIR/$name/Caddyfile" --adapter caddyfile
	wait_http "$name" "${PIDS[-1]}" "http://localhost:${ADMIN_PORTS[$i]}/config/"
	echo "$name: site http://127.0.0.1:${SITE_PORTS[$i]}, admin http://localhost:${ADMIN_PORTS[$i]}"
done
# the store connects in the background: wait until every instance reaches Redis
for i in "${!INSTANCES[@]}"; do
	for _ in $(seq 1 75); do
		curl -fsS --max-time 1 "http://localhost:${ADMIN_PORTS[$i]}/socketio/sessions" 2>/dev/null | grep -q '"reachable":true' && break
		sleep 0.2
	done
	curl -fsS --max-time 1 "http://localhost:${ADMIN_PORTS[$i]}/socketio/sessions" | grep -q '"reachable":true' ||
		die "${INSTANCES[$i]} does not reach Redis"
done
echo "every instance reaches Redis"

say "Starting the front (standard modules only: reverse_proxy, lb_policy round_robin) on $FRONT"
mkdir -p "$LOGDIR/front"
BACKENDS=""
for p in "${SITE_PORTS[@]}"; do BACKENDS+=" 127.0.0.1:$p"; done
cat >"$LOGDIR/front/Caddyfile" <<CADDYFILE
{
	admin localhost:$FRONT_ADMIN
	http_port $FRONT_PORT
	auto_https off
}
http://127.0.0.1:$FRONT_PORT {
	reverse_proxy$BACKENDS {
		lb_policy round_robin
		flush_interval -1
	}
}
CADDYFILE
start front "$LOGDIR/front.log" env XDG_DATA_HOME="$LOGDIR/front/data" XDG_CONFIG_HOME="$LOGDIR/front/config" \
	"$CADDY" run --config "$LOGDIR/front/Caddyfile" --adapter caddyfile
wait_http front "${PIDS[-1]}" "http://localhost:$FRONT_ADMIN/config/"
wait_http "front (site)" "${PIDS[-1]}" "$FRONT/healthz"

status=0
say "One client: node examples/cluster/client.js --url $FRONT"
node examples/cluster/client.js --url "$FRONT" || status=$?

if [[ "$CLIENTS" -gt 0 ]]; then
	say "$CLIENTS clients at once: node examples/cluster/client.js --url $FRONT --count $CLIENTS"
	rc=0
	node examples/cluster/client.js --url "$FRONT" --count "$CLIENTS" || rc=$?
	[[ $status -ne 0 ]] || status=$rc
fi

say "Which instance served which request"
sleep 1 # the access logs are written as the requests end
logs=()
for name in "${INSTANCES[@]}"; do logs+=("$name=$LOGDIR/$name/access.log"); done
node examples/ha/requests.js "${logs[@]}" || status=$?

# HA_BENCH_S=N: echo throughput for N seconds through the front to the three
# instances, then through the same front to one instance (the front reloaded
# with one backend), with the same 60 WebSocket sessions' load
# (bench/e2e-client.js --mode echo); printed as round trips per second
if [[ $status -eq 0 && "${HA_BENCH_S:-0}" -gt 0 ]]; then
	echo_load() {
		node bench/e2e-client.js --url "$FRONT" --mode echo --count 60 --concurrency 20 \
			--warmup-ms 2000 --duration-ms "$((HA_BENCH_S * 1000))" --addr-net "$1" --max-ms "$((HA_BENCH_S * 1000 + 120000))" |
			node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>{const r=s.trim().split("\n").map((l)=>JSON.parse(l)).find((e)=>e.event==="result");console.log(r&&r.echo?r.echo.roundTripsPerS:(r&&r.roundTripsPerS)||0)})'
	}
	say "Echo throughput through the front to three instances (${HA_BENCH_S}s)"
	three="$(echo_load 30)"
	sed -i "s|reverse_proxy$BACKENDS {|reverse_proxy 127.0.0.1:${SITE_PORTS[0]} {|" "$LOGDIR/front/Caddyfile"
	curl -fsS -X POST -H "Content-Type: text/caddyfile" --data-binary @"$LOGDIR/front/Caddyfile" "http://localhost:$FRONT_ADMIN/load" ||
		die "reloading the front with one backend failed"
	say "Echo throughput through the front to one instance (${HA_BENCH_S}s)"
	one="$(echo_load 40)"
	echo "round trips/s: three instances $three, one instance $one (ratio $(node -e "console.log(($three / $one).toFixed(2))"))"
fi

if [[ $status -eq 0 ]]; then
	say "Example OK"
else
	say "Example FAILED (exit status $status)"
fi
exit "$status"
