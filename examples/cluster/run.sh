#!/usr/bin/env bash
# run.sh - the whole example, end to end, on one machine (loopback only):
#   1. npm ci in the repository root (if node_modules is missing or stale)
#   2. build Caddy with this plugin into bin/caddy (skipped when up to date)
#   3. show that both socketio modules are in that binary
#   4. start three Socket.IO nodes (server.js) on 127.0.0.1:3001-3003 and
#      Caddy with Caddyfile.example on http://127.0.0.1:8080
#   5. connect one client, then CLIENTS clients at once, through Caddy
#   6. stop everything it started
# Exit status: 0 when every client connected (and upgraded to WebSocket).
#
# Works from any directory:  examples/cluster/run.sh   (or: make example)
# Environment: CLIENTS (default 30; 0 skips the many-clients run),
#              KEEP_LOGS=1 keeps the log directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# shellcheck source=examples/lib.sh
source "$ROOT/examples/lib.sh"

CLIENTS="${CLIENTS:-30}"
CADDY="$ROOT/bin/caddy"
CADDYFILE="$ROOT/Caddyfile.example"
SITE="http://127.0.0.1:8080"
ADMIN="http://localhost:2019"
NODE_PORTS=(3001 3002 3003)

[[ "$CLIENTS" =~ ^[0-9]+$ ]] || die "CLIENTS must be a number, got '$CLIENTS'"
for tool in node npm go curl; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/caddy-socketio-example.XXXXXX")"

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# port_in_use PORT: true if something on this machine accepts connections on
# 127.0.0.1:PORT
port_in_use() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

say "Node.js packages"
scripts/npm-ci-if-needed.sh

say "Building Caddy with caddy-socketio (bin/caddy)"
scripts/build-caddy.sh
"$CADDY" version

say "bin/caddy list-modules | grep socketio"
modules="$("$CADDY" list-modules | grep socketio || true)"
printf '%s\n' "$modules"
for id in http.handlers.socketio http.reverse_proxy.selection_policies.socketio; do
	grep -qx "$id" <<<"$modules" || die "module $id is missing from $CADDY"
done

say "bin/caddy adapt --config Caddyfile.example --validate"
"$CADDY" adapt --config "$CADDYFILE" --validate >/dev/null 2>"$LOGDIR/adapt.log" || { cat "$LOGDIR/adapt.log" >&2; die "$CADDYFILE does not validate"; }
echo "valid"

say "Checking that the ports are free"
for port in "${NODE_PORTS[@]}" 8080 2019; do
	if port_in_use "$port"; then
		die "port $port on 127.0.0.1 is already in use (another run of this example, or another server?). Free it and retry; 'ss -ltnp' shows who holds it."
	fi
done
echo "127.0.0.1 ports ${NODE_PORTS[*]} 8080 2019 are free"

say "Starting Socket.IO nodes on 127.0.0.1:${NODE_PORTS[0]}-${NODE_PORTS[-1]}"
for i in "${!NODE_PORTS[@]}"; do
	n=$((i + 1))
	start "node$n" "$LOGDIR/node$n.log" env PORT="${NODE_PORTS[$i]}" NODE_NAME="node$n" node examples/cluster/server.js
done
for i in "${!NODE_PORTS[@]}"; do
	wait_http "node$((i + 1))" "${PIDS[$i]}" "http://127.0.0.1:${NODE_PORTS[$i]}/healthz"
	cat "$LOGDIR/node$((i + 1)).log"
done

say "Starting Caddy: bin/caddy run --config Caddyfile.example"
start caddy "$LOGDIR/caddy.log" "$CADDY" run --config "$CADDYFILE"
caddy_pid="${PIDS[-1]}"
wait_http "caddy (admin API)" "$caddy_pid" "$ADMIN/config/"
wait_http "caddy (site)" "$caddy_pid" "$SITE/healthz"
echo "Caddy is up (pid $caddy_pid): site $SITE, admin $ADMIN, log $LOGDIR/caddy.log"

status=0
say "One client: node examples/cluster/client.js --url $SITE"
node examples/cluster/client.js --url "$SITE" || status=$?

if [[ "$CLIENTS" -gt 0 ]]; then
	say "$CLIENTS clients at once: node examples/cluster/client.js --url $SITE --count $CLIENTS"
	rc=0
	node examples/cluster/client.js --url "$SITE" --count "$CLIENTS" || rc=$?
	[[ $status -ne 0 ]] || status=$rc
fi

if [[ $status -eq 0 ]]; then
	say "Example OK"
else
	say "Example FAILED (client exit status $status)"
fi
exit "$status"
