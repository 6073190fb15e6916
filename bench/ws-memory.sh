#!/usr/bin/env bash
# ws-memory.sh - Caddy's memory per live WebSocket and echo throughput, for several
# `reverse_proxy { stream_buffer_size }` values, in one run (issue 12, item 4):
#
#   for each repeat, for each case (PROTOCOLS:SIZE; the order reversed on every other
#   repeat, so that a drifting machine does not favour one end of the list):
#     bench/scale.sh with SCALE_WS=WSMEM_SESSIONS SCALE_POLLING=0 and the case's
#     SCALE_PROTOCOLS / SCALE_STREAM_BUFFER, then its echo phase (WSMEM_ECHO_SOCKETS
#     WebSockets, round trips back to back for WSMEM_ECHO_S s per payload size)
#   then a summary per case: medians and spread (min..max) of
#     - Caddy RSS per live WebSocket: (RSS with the sessions - RSS idle) / sessions
#     - Go heap + stacks in use per live WebSocket, both sides read after a GC
#     - echo round trips/s and Caddy CPU µs per round trip, per payload size,
#       and their ratio to the case with the same protocols and Caddy's default size
#
# Every run uses the same Caddy binary, built once from `git archive HEAD` (the
# committed plugin, not the work tree), unless WSMEM_CADDY names one.
#
#   bench/ws-memory.sh                               the default matrix (~25 min)
#   WSMEM_REPEATS=1 WSMEM_SESSIONS=500 bench/ws-memory.sh   a quick look
#
# Cases: PROTOCOLS is "default" (Caddy's h1 h2 h3) or a list joined with "+", e.g.
# "h1"; SIZE is "default" (32 KiB) or a Caddy size such as 8KiB. With a plain-HTTP
# site and the default protocols the configured size is not used at all (see
# bench/scale.sh's header); "h1" makes Caddy wrap the connection as it does for TLS.
#
# Environment (defaults in brackets): WSMEM_SESSIONS [2000] WSMEM_REPEATS [2]
#   WSMEM_CASES ["default:default default:4KiB h1:default h1:16KiB h1:8KiB h1:4KiB"]
#   WSMEM_HOLD_S [10] WSMEM_ECHO_SOCKETS [20] WSMEM_ECHO_S [5] WSMEM_ECHO_PAYLOADS ["64 16384"]
#   WSMEM_CADDY [built from HEAD] WSMEM_RUN_TIMEOUT_S [900 per scale.sh run]
#   MAX_LOAD [1.5] LOAD_WAIT [60 per run] SCALE_HTTP_PORT [8391] SCALE_ADMIN_PORT [2391]
#   SCALE_NODE_PORTS ["3311 3312 3313"] SCALE_RESULTS [bench/out]
# Output: bench/out/ws-memory-<UTC stamp>.{json,md} and the runs' own results in
# bench/out/ws-memory-<stamp>/. Exit status 0 when every run passed, 1 otherwise,
# 2 bad settings.
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCRIPT_NAME=ws-memory.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SESSIONS="${WSMEM_SESSIONS:-2000}"
REPEATS="${WSMEM_REPEATS:-2}"
read -r -a CASES <<<"${WSMEM_CASES:-default:default default:4KiB h1:default h1:16KiB h1:8KiB h1:4KiB}"
HOLD_S="${WSMEM_HOLD_S:-10}"
ECHO_SOCKETS="${WSMEM_ECHO_SOCKETS:-20}"
ECHO_S="${WSMEM_ECHO_S:-5}"
ECHO_PAYLOADS="${WSMEM_ECHO_PAYLOADS:-64 16384}"
RUN_TIMEOUT_S="${WSMEM_RUN_TIMEOUT_S:-900}"
RESULTS_DIR="$(results_dir "${SCALE_RESULTS:-}")"

for v in SESSIONS REPEATS HOLD_S ECHO_SOCKETS ECHO_S RUN_TIMEOUT_S; do
	is_uint "${!v}" || bad_setting "WSMEM_$v must be a non-negative integer, got '${!v}'"
done
((SESSIONS >= 100 && SESSIONS <= 9000)) || bad_setting "WSMEM_SESSIONS must be 100..9000"
((REPEATS >= 1 && REPEATS <= 5)) || bad_setting "WSMEM_REPEATS must be 1..5"
((${#CASES[@]} >= 1 && ${#CASES[@]} <= 10)) || bad_setting "WSMEM_CASES must name 1..10 cases"
((RUN_TIMEOUT_S >= 120 && RUN_TIMEOUT_S <= 3600)) || bad_setting "WSMEM_RUN_TIMEOUT_S must be 120..3600"
for c in "${CASES[@]}"; do
	[[ "$c" =~ ^(default|(h1|h2|h2c|h3)(\+(h1|h2|h2c|h3))*):(default|[0-9]+([KkMm]i?B|B)?)$ ]] ||
		bad_setting "WSMEM_CASES: '$c' is not PROTOCOLS:SIZE (e.g. h1:8KiB, default:default)"
done

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/caddy-socketio-ws-memory.XXXXXX")"
trap lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RUNS_DIR="$RESULTS_DIR/ws-memory-$STAMP"
mkdir -p "$RUNS_DIR"

if [[ -n "${WSMEM_CADDY:-}" ]]; then
	CADDY="$(readlink -f "$WSMEM_CADDY")"
	[[ -x "$CADDY" ]] || bad_setting "WSMEM_CADDY: $WSMEM_CADDY is not an executable"
	REVISION="given binary"
else
	say "Building Caddy with the plugin from HEAD ($(git rev-parse --short HEAD)), once for every run"
	mkdir -p "$LOGDIR/src"
	git archive HEAD | tar -x -C "$LOGDIR/src"
	CADDY="$LOGDIR/caddy"
	(cd "$LOGDIR/src" && CADDY_BIN="$CADDY" timeout 900 scripts/build-caddy.sh) || die "building Caddy from HEAD failed"
	REVISION="$(git rev-parse --short HEAD)"
fi
timeout 600 scripts/npm-ci-if-needed.sh

total=$((REPEATS * ${#CASES[@]}))
say "WebSocket memory: ${#CASES[@]} cases x $REPEATS repeats = $total runs of bench/scale.sh, $SESSIONS live WebSockets each (logs in $LOGDIR)"
RUN_FILES=()
failed=0
k=0
for ((r = 1; r <= REPEATS; r++)); do
	order=("${CASES[@]}")
	if ((r % 2 == 0)); then
		order=()
		for ((i = ${#CASES[@]} - 1; i >= 0; i--)); do order+=("${CASES[$i]}"); done
	fi
	for c in "${order[@]}"; do
		k=$((k + 1))
		protos="${c%%:*}" size="${c#*:}"
		[[ "$protos" == default ]] && protos=""
		[[ "$size" == default ]] && size=""
		say "Run $k of $total: repeat $r, case $c"
		out="$LOGDIR/run-$k.out"
		rc=0
		SCALE_WS="$SESSIONS" SCALE_POLLING=0 SCALE_HOLD_S="$HOLD_S" SCALE_ECHO_EVERY_S=10 \
			SCALE_PROTOCOLS="${protos//+/ }" SCALE_STREAM_BUFFER="$size" SCALE_CADDY="$CADDY" \
			SCALE_ECHO_SOCKETS="$ECHO_SOCKETS" SCALE_ECHO_S="$ECHO_S" SCALE_ECHO_PAYLOADS="$ECHO_PAYLOADS" \
			SCALE_RESULTS="$RUNS_DIR" SCALE_HTTP_PORT="${SCALE_HTTP_PORT:-8391}" SCALE_ADMIN_PORT="${SCALE_ADMIN_PORT:-2391}" \
			SCALE_NODE_PORTS="${SCALE_NODE_PORTS:-3311 3312 3313}" MAX_LOAD="${MAX_LOAD:-1.5}" LOAD_WAIT="${LOAD_WAIT:-60}" \
			timeout "$RUN_TIMEOUT_S" bench/scale.sh >"$out" 2>&1 || rc=$?
		f="$(sed -n 's/^SCALE .*saved \(.*\.json\) and \.md$/\1/p' "$out" | tail -n 1)"
		if [[ -n "$f" && -s "$f" ]]; then
			RUN_FILES+=("$c=$f")
			grep -E '^\| (Caddy RSS per|Caddy Go heap \+|echo,|verdict)' "${f%.json}.md" | cut -c1-200 >&2 || true
		else
			note "no result (exit status $rc); last lines:"
			tail -n 15 "$out" >&2
		fi
		((rc == 0)) || failed=$((failed + 1))
	done
done

say "Summary"
SUMMARY="$RESULTS_DIR/ws-memory-$STAMP"
WSMEM_RUNS="${RUN_FILES[*]}" WSMEM_CASES="${CASES[*]}" WSMEM_OUT="$SUMMARY" WSMEM_META="$(
	printf '{"stamp":"%s","revision":"%s","sessions":%d,"repeats":%d,"holdS":%d,"echoSockets":%d,"echoS":%d,"echoPayloads":"%s","failedRuns":%d,"machine":%s}' \
		"$STAMP" "$REVISION" "$SESSIONS" "$REPEATS" "$HOLD_S" "$ECHO_SOCKETS" "$ECHO_S" "$ECHO_PAYLOADS" "$failed" "$(machine_info)"
)" node - <<'EOF'
"use strict";
const fs = require("fs");
const meta = JSON.parse(process.env.WSMEM_META);
const cases = process.env.WSMEM_CASES.split(" ");
const runs = {};
for (const e of process.env.WSMEM_RUNS.split(" ").filter(Boolean)) {
  const i = e.indexOf("=");
  (runs[e.slice(0, i)] = runs[e.slice(0, i)] || []).push(JSON.parse(fs.readFileSync(e.slice(i + 1), "utf8")));
}
const median = (a) => {
  const s = a.filter((x) => x !== null && x !== undefined).sort((x, y) => x - y);
  if (!s.length) return null;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const spread = (a) => {
  const s = a.filter((x) => x !== null && x !== undefined);
  return s.length ? [Math.min(...s), Math.max(...s)] : null;
};
const r1 = (x) => (x === null ? null : Math.round(x * 10) / 10);
const payloads = meta.echoPayloads.split(" ").map(Number);
const out = [];
for (const c of cases) {
  const rs = runs[c] || [];
  const row = { case: c, protocols: c.split(":")[0], size: c.split(":")[1], runs: rs.length, passed: rs.filter((r) => r.ok).length };
  const rss = rs.map((r) => r.caddyRssPerSessionKiB);
  const go = rs.map((r) => r.caddyGoInusePerSessionKiB);
  row.rssKiBPerWs = { median: r1(median(rss)), spread: spread(rss), all: rss };
  row.goInuseKiBPerWs = { median: r1(median(go)), spread: spread(go), all: go };
  row.goroutinesPerWs = r1(median(rs.map((r) => Number(r.caddyGoroutines) / r.sessions.want)));
  row.echo = {};
  for (const p of payloads) {
    const es = rs.map((r) => (r.echo || []).find((e) => e.payloadBytes === p)).filter(Boolean);
    const rt = es.map((e) => e.roundTripsPerS);
    const cpu = es.map((e) => e.caddyCpuUsPerRoundTrip);
    row.echo[p] = { roundTripsPerS: { median: Math.round(median(rt)), spread: spread(rt), all: rt }, caddyCpuUsPerRoundTrip: { median: r1(median(cpu)), spread: spread(cpu), all: cpu } };
  }
  out.push(row);
}
for (const row of out) {
  const base = out.find((b) => b.protocols === row.protocols && b.size === "default");
  row.vsDefault = {};
  for (const p of payloads) {
    const a = row.echo[p].roundTripsPerS.median;
    const b = base && base.echo[p].roundTripsPerS.median;
    const ca = row.echo[p].caddyCpuUsPerRoundTrip.median;
    const cb = base && base.echo[p].caddyCpuUsPerRoundTrip.median;
    row.vsDefault[p] = { throughput: a && b ? Math.round((a / b) * 1000) / 1000 : null, caddyCpu: ca && cb ? Math.round((ca / cb) * 1000) / 1000 : null };
  }
}
const result = { ...meta, cases: out };
fs.writeFileSync(process.env.WSMEM_OUT + ".json", JSON.stringify(result, null, 1) + "\n");
const sp = (s, d = 0) => (s ? `${s[0].toFixed(d)}..${s[1].toFixed(d)}` : "?");
let md = `WebSocket memory run ${meta.stamp} (revision ${meta.revision}): ${meta.sessions} live WebSockets per run, ${meta.repeats} repeats per case (medians, min..max); echo: ${meta.echoSockets} WebSockets, round trips back to back for ${meta.echoS} s; ${meta.machine.nproc} CPUs.\n\n`;
md += `| protocols | stream_buffer_size | RSS KiB / WebSocket | Go heap+stacks KiB / WebSocket | goroutines / WebSocket |`;
for (const p of payloads) md += ` echo ${p} B: round trips/s (vs default) | Caddy µs / round trip |`;
md += ` runs passed |\n|---|---|---|---|---|${payloads.map(() => "---|---|").join("")}---|\n`;
for (const row of out) {
  md += `| ${row.protocols} | ${row.size} | ${row.rssKiBPerWs.median} (${sp(row.rssKiBPerWs.spread)}) | ${row.goInuseKiBPerWs.median} (${sp(row.goInuseKiBPerWs.spread)}) | ${row.goroutinesPerWs} |`;
  for (const p of payloads) {
    const e = row.echo[p];
    md += ` ${e.roundTripsPerS.median} (${sp(e.roundTripsPerS.spread)}) ×${row.vsDefault[p].throughput} | ${e.caddyCpuUsPerRoundTrip.median} (${sp(e.caddyCpuUsPerRoundTrip.spread, 1)}) |`;
  }
  md += ` ${row.passed}/${row.runs} |\n`;
}
fs.writeFileSync(process.env.WSMEM_OUT + ".md", md);
process.stdout.write(md + `\nsaved ${process.env.WSMEM_OUT}.json and .md\n`);
EOF
((failed == 0)) || {
	say "$failed of $total runs failed (their logs: $LOGDIR)"
	KEEP_LOGS=1
	exit 1
}
