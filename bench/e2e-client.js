#!/usr/bin/env node
// e2e-client.js - load generator of bench/e2e.sh and bench/scale.sh, built on the
// official socket.io-client@4 (the version pinned in /package.json).
//
//   node bench/e2e-client.js --url http://127.0.0.1:8282 --mode connect --count 1000
//
// Modes:
//   connect  open --count sessions, --concurrency at a time; each one is timed from
//            io() to "connected" (socket.io CONNECT acknowledged) and, with the
//            default transports, to "upgraded" (the engine's upgrade to WebSocket
//            done); then it is closed. Reports p50/p90/p99/max of both.
//   echo     open --count sessions, then every socket runs emit-with-ack round
//            trips back to back ("echo", answered by the node) for --warmup-ms
//            (not recorded), then --duration-ms (recorded). Reports round trips/s
//            and latency percentiles. With --transports polling this measures
//            polling round trips (each one a POST and the answer of a long-poll GET).
//   hold     open --count sessions, print a "ready" line, keep them (an echo every
//            --echo-every-ms per socket, 0 = none) until SIGUSR2 or --hold-ms, then
//            report how many are still connected (on the expected transport) and close.
//
// Every session has its own source address 127.X.Y.H, each in its own /24 (nginx's
// ip_hash hashes the first three octets): session i (0-based) of a run with
// --addr-offset K uses index j = K + i and the address
// 127.(--addr-net + (j >> 8)).(j & 255).(--addr-host). Each session has its own
// http.Agent bound to that address (engine.io-client hands `agent` to the polling
// requests and `agent` + `localAddress` to the WebSocket; see
// caddytest/testdata/README.md, "sio-clients.js").
//
// --cpu-pids label:pid,label:pid,...: read each process's CPU time (utime+stime from
// /proc/PID/stat) and the machine's (/proc/stat) at the start and end of the
// measured window (echo: the recorded duration; connect: the whole run; hold: from
// the first connection to ready), and report CPU seconds per label.
//
// stdout: JSON lines: {"event":"ready",...} (hold), then {"event":"result",...}.
// Exit status: 0 when the run completed (assert on the JSON), 2 bad arguments,
// 3 watchdog (--max-ms).
"use strict";

const http = require("http");
const fs = require("fs");
const path = require("path");
const { performance } = require("perf_hooks");
const root = path.join(__dirname, "..");
const { io } = require(require.resolve("socket.io-client", { paths: [root] }));

const SPEC = {
  url: { def: null, help: "proxy (or node) URL, e.g. http://127.0.0.1:8282" },
  mode: { def: null, help: "connect | echo | hold" },
  transports: { def: "polling,websocket", help: "socket.io-client transports, in order" },
  count: { def: 100, int: true, help: "sessions" },
  concurrency: { def: 10, int: true, help: "sessions being opened at once" },
  "addr-net": { def: 20, int: true, help: "second octet of the first source address" },
  "addr-offset": { def: 0, int: true, help: "index of the first session's address" },
  "addr-host": { def: 1, int: true, help: "fourth octet of every source address" },
  "keep-alive": { def: 1, int: true, help: "1 = keep-alive agent (browser-like), 0 = a TCP connection per polling request (engine.io-client's Node default)" },
  "duration-ms": { def: 10000, int: true, help: "echo: recorded window" },
  "warmup-ms": { def: 2000, int: true, help: "echo: unrecorded window before it" },
  "payload-bytes": { def: 64, int: true, help: "echo payload (a string of this many bytes)" },
  "hold-ms": { def: 60000, int: true, help: "hold: the longest hold (SIGUSR2 ends it earlier)" },
  "echo-every-ms": { def: 0, int: true, help: "hold: one echo per socket this often (0 = none)" },
  "timeout-ms": { def: 15000, int: true, help: "one session's connect (and upgrade) timeout; echo ack timeout in hold" },
  "expect-upgrade": { def: 0, int: true, help: "1 = a session is ready only once upgraded to websocket (default: 1 when transports are polling,websocket)" },
  "drop-idle": { def: 1, int: true, help: "1 = once upgraded, close the session's idle keep-alive polling connections (so a live session is one WebSocket)" },
  "cpu-pids": { def: "", help: "label:pid,... processes whose CPU time to report" },
  "max-ms": { def: 0, int: true, help: "watchdog: exit 3 after this long (0 = derived)" },
};

function usage(msg) {
  if (msg) process.stderr.write(`e2e-client: ${msg}\n`);
  process.stderr.write("usage: node bench/e2e-client.js --url URL --mode connect|echo|hold [options]\n");
  for (const [k, v] of Object.entries(SPEC)) process.stderr.write(`  --${k.padEnd(15)} ${v.help} (default ${v.def})\n`);
  process.exit(2);
}

const args = {};
for (const [k, v] of Object.entries(SPEC)) args[k] = v.def;
args["expect-upgrade"] = null;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "-h" || a === "--help") usage();
  if (!a.startsWith("--")) usage(`unexpected argument ${a}`);
  const k = a.slice(2);
  if (!(k in SPEC)) usage(`unknown option ${a}`);
  if (i + 1 >= argv.length) usage(`${a} needs a value`);
  const v = argv[++i];
  if (SPEC[k].int) {
    if (!/^\d+$/.test(v)) usage(`${a} must be a non-negative integer`);
    args[k] = Number(v);
  } else args[k] = v;
}
if (!args.url || !/^http:\/\/127\.\d+\.\d+\.\d+:\d+\/?$/.test(args.url)) usage("--url must be http://127.x.y.z:PORT (loopback only)");
if (!["connect", "echo", "hold"].includes(args.mode)) usage("--mode must be connect, echo or hold");
const TRANSPORTS = args.transports.split(",").filter(Boolean);
if (!TRANSPORTS.length || TRANSPORTS.some((t) => t !== "polling" && t !== "websocket")) usage("--transports: polling and/or websocket");
const EXPECT_UPGRADE =
  args["expect-upgrade"] === null ? TRANSPORTS[0] === "polling" && TRANSPORTS.includes("websocket") : args["expect-upgrade"] === 1;
const FINAL_TRANSPORT = EXPECT_UPGRADE ? "websocket" : TRANSPORTS[0];
const COUNT = args.count;
const CONC = Math.max(1, Math.min(args.concurrency, COUNT || 1));
if (COUNT < 1 || COUNT > 60000) usage("--count must be 1..60000");
const lastIndex = args["addr-offset"] + COUNT - 1;
if (args["addr-net"] < 1 || args["addr-net"] + (lastIndex >> 8) > 254) usage("source addresses beyond 127.254.x.x: lower --addr-net or --addr-offset");
if (args["addr-host"] < 1 || args["addr-host"] > 254) usage("--addr-host must be 1..254");
const TIMEOUT = args["timeout-ms"];
const PAYLOAD = "x".repeat(args["payload-bytes"]);

function addrOf(i) {
  const j = args["addr-offset"] + i;
  return `127.${args["addr-net"] + (j >> 8)}.${j & 255}.${args["addr-host"]}`;
}

// --- CPU accounting --------------------------------------------------------
const CPU_PIDS = args["cpu-pids"]
  .split(",")
  .filter(Boolean)
  .map((s) => {
    const [label, pid] = s.split(":");
    if (!label || !/^\d+$/.test(pid || "")) usage(`--cpu-pids: bad entry ${s}`);
    return { label, pid: Number(pid) };
  });
const TICK = 100; // USER_HZ on Linux
function procCpu(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / TICK; // utime, stime
  } catch (_) {
    return null;
  }
}
function machineCpu() {
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] || 0);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0); // guest time is already in user
  return { idle: idle / TICK, total: total / TICK, steal: (f[7] || 0) / TICK };
}
function cpuSnap() {
  return { at: performance.now(), self: process.cpuUsage(), m: machineCpu(), p: CPU_PIDS.map((x) => procCpu(x.pid)) };
}
function cpuDelta(a, b) {
  const out = { wallS: r3((b.at - a.at) / 1000), clientS: r3((b.self.user + b.self.system - a.self.user - a.self.system) / 1e6) };
  const busy = b.m.total - a.m.total - (b.m.idle - a.m.idle);
  out.machineBusyS = r3(busy);
  out.machineBusyFraction = r3(busy / Math.max(1e-9, b.m.total - a.m.total));
  out.machineStealS = r3(b.m.steal - a.m.steal); // taken by the hypervisor (counted in busy)
  out.processes = {};
  CPU_PIDS.forEach((x, k) => {
    const d = a.p[k] === null || b.p[k] === null ? null : r3(b.p[k] - a.p[k]);
    out.processes[x.label] = (out.processes[x.label] || 0) + (d || 0);
  });
  for (const k of Object.keys(out.processes)) out.processes[k] = r3(out.processes[k]);
  return out;
}

// --- helpers ----------------------------------------------------------------
function r3(x) {
  return Math.round(x * 1000) / 1000;
}
function pct(sorted, p) {
  if (!sorted.length) return null;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return r3(sorted[k]);
}
function summary(arr) {
  const s = Float64Array.from(arr).sort();
  if (!s.length) return { n: 0 };
  let sum = 0;
  for (const x of s) sum += x;
  return { n: s.length, mean: r3(sum / s.length), p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: r3(s[s.length - 1]) };
}
const inc = (m, k, n = 1) => (m[k] = (m[k] || 0) + n);
const emit = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const errors = {};
const T0 = performance.now();

// watchdog
const derivedMax =
  TIMEOUT * Math.ceil(COUNT / CONC) +
  (args.mode === "echo" ? args["warmup-ms"] + args["duration-ms"] : 0) +
  (args.mode === "hold" ? args["hold-ms"] : 0) +
  30000;
setTimeout(() => {
  emit({ event: "watchdog", mode: args.mode, afterMs: Math.round(performance.now() - T0), errors });
  process.exit(3);
}, args["max-ms"] || derivedMax).unref();

// open(i, cb): one session; cb(err, rec) once it is ready (connected and, if
// expected, upgraded) or failed. rec = {socket, agent, connectMs, readyMs}
function open(i, cb) {
  const la = addrOf(i);
  const agent = new http.Agent({ keepAlive: args["keep-alive"] === 1, localAddress: la });
  const t0 = performance.now();
  const socket = io(args.url, {
    forceNew: true,
    reconnection: false,
    transports: TRANSPORTS,
    agent,
    localAddress: la,
    timeout: TIMEOUT,
  });
  const rec = { socket, agent, connectMs: null, upgradeMs: null, readyMs: null, addr: la };
  let done = false;
  const finish = (err) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    if (!err) rec.readyMs = performance.now() - t0;
    cb(err, rec);
  };
  const timer = setTimeout(() => finish(rec.connectMs === null ? "connect timeout" : "upgrade timeout"), TIMEOUT);
  const isReady = () => rec.connectMs !== null && (!EXPECT_UPGRADE || rec.upgradeMs !== null);
  socket.on("connect", () => {
    rec.connectMs = performance.now() - t0;
    if (isReady()) finish();
  });
  socket.io.engine.on("upgrade", () => {
    rec.upgradeMs = performance.now() - t0;
    // the polling transport is closed by now; its keep-alive connection would
    // stay idle in the agent (a browser keeps it until its idle timeout)
    if (args["drop-idle"] === 1 && args["keep-alive"] === 1) setImmediate(() => agent.destroy());
    if (isReady()) finish();
  });
  socket.io.engine.on("upgradeError", (e) => inc(errors, `upgradeError: ${e && e.message}`));
  socket.on("connect_error", (e) => finish(`connect_error: ${e && e.message}`));
  socket.on("disconnect", (reason) => {
    if (!done) finish(`disconnect before ready: ${reason}`);
  });
}
function closeRec(rec) {
  try {
    rec.socket.close();
  } catch (_) {}
  // idle keep-alive polling connections, after the close packet went out
  setTimeout(() => rec.agent.destroy(), 200).unref();
}

// openAll(count, concurrency, keep, cb): open sessions 0..count-1, at most
// `concurrency` at a time; keep(rec) decides whether a ready session stays open.
function openAll(count, keep, cb) {
  let next = 0,
    active = 0,
    finished = 0;
  const recs = [];
  const pump = () => {
    while (active < CONC && next < count) {
      const i = next++;
      active++;
      open(i, (err, rec) => {
        active--;
        finished++;
        if (err) {
          inc(errors, err);
          closeRec(rec);
        } else if (keep) recs.push(rec);
        else closeRec(rec);
        rec.err = err || null;
        onRec(rec);
        if (finished === count) setImmediate(() => cb(recs));
        else pump();
      });
    }
  };
  const samples = { connectMs: [], upgradeMs: [], readyMs: [] };
  let failed = 0;
  const onRec = (rec) => {
    if (rec.err) return failed++;
    samples.connectMs.push(rec.connectMs);
    if (rec.upgradeMs !== null) samples.upgradeMs.push(rec.upgradeMs);
    samples.readyMs.push(rec.readyMs);
  };
  openAll.samples = samples;
  openAll.failed = () => failed;
  pump();
}

const base = () => ({
  mode: args.mode,
  url: args.url,
  transports: TRANSPORTS.join(","),
  expectUpgrade: EXPECT_UPGRADE,
  keepAlive: args["keep-alive"] === 1,
  count: COUNT,
  concurrency: CONC,
  addresses: `${addrOf(0)} .. ${addrOf(COUNT - 1)}`,
});

// --- connect ----------------------------------------------------------------
function runConnect() {
  const c0 = cpuSnap();
  openAll(COUNT, false, () => {
    const c1 = cpuSnap();
    const s = openAll.samples;
    const wall = (c1.at - c0.at) / 1000;
    emit({
      event: "result",
      ...base(),
      ok: s.readyMs.length,
      failed: openAll.failed(),
      sessionsPerS: r3(s.readyMs.length / wall),
      connectMs: summary(s.connectMs),
      upgradeMs: summary(s.upgradeMs),
      readyMs: summary(s.readyMs),
      // engine.io servers flush a pending long-poll (noop) only every 100 ms once the
      // upgrade probe arrived: sessions whose probe lost that race take >= ~100 ms
      readyOver90msShare: s.readyMs.length ? r3(s.readyMs.filter((x) => x >= 90).length / s.readyMs.length) : null,
      cpu: cpuDelta(c0, c1),
      errors,
    });
    setTimeout(() => process.exit(0), 500);
  });
}

// --- echo -------------------------------------------------------------------
function runEcho() {
  openAll(COUNT, true, (recs) => {
    const setupFailed = openAll.failed();
    let phase = "warmup";
    let tStart = 0,
      tEnd = 0,
      c0 = null,
      c1 = null;
    const lat = [];
    let acked = 0,
      inFlight = 0,
      disconnected = 0;
    for (const rec of recs) rec.socket.on("disconnect", () => disconnected++);
    const loop = (socket) => {
      if (phase === "done" || !socket.connected) return;
      const t = performance.now();
      inFlight++;
      socket.emit("echo", PAYLOAD, (res) => {
        inFlight--;
        const now = performance.now();
        if (res !== PAYLOAD) inc(errors, "bad echo payload");
        if (phase === "measure") {
          acked++;
          if (t >= tStart) lat.push(now - t);
        }
        loop(socket);
      });
    };
    for (const rec of recs) loop(rec.socket);
    setTimeout(() => {
      phase = "measure";
      tStart = performance.now();
      c0 = cpuSnap();
      setTimeout(() => {
        c1 = cpuSnap();
        tEnd = performance.now();
        phase = "done";
        // let in-flight round trips land (not counted), then close
        const waitStart = performance.now();
        const waitDone = () => {
          if (inFlight > 0 && performance.now() - waitStart < 3000) return setTimeout(waitDone, 20);
          const secs = (tEnd - tStart) / 1000;
          emit({
            event: "result",
            ...base(),
            sockets: recs.length,
            setupFailed,
            setupReadyMs: summary(openAll.samples.readyMs),
            warmupMs: args["warmup-ms"],
            durationMs: Math.round(tEnd - tStart),
            payloadBytes: args["payload-bytes"],
            roundTrips: acked,
            roundTripsPerS: r3(acked / secs),
            latencyMs: summary(lat),
            stalledAtEnd: inFlight,
            disconnected,
            cpu: cpuDelta(c0, c1),
            errors,
          });
          for (const rec of recs) closeRec(rec);
          setTimeout(() => process.exit(0), 500);
        };
        waitDone();
      }, args["duration-ms"]);
    }, args["warmup-ms"]);
  });
}

// --- hold -------------------------------------------------------------------
function runHold() {
  const c0 = cpuSnap();
  const tOpen = performance.now();
  openAll(COUNT, true, (recs) => {
    const c1 = cpuSnap();
    const disconnects = {};
    let echoOk = 0,
      echoFailed = 0;
    for (const rec of recs) rec.socket.on("disconnect", (reason) => inc(disconnects, reason));
    emit({
      event: "ready",
      ...base(),
      ready: recs.length,
      failed: openAll.failed(),
      openMs: Math.round(performance.now() - tOpen),
      readyMs: summary(openAll.samples.readyMs),
      cpu: cpuDelta(c0, c1),
      errors,
    });
    const timers = [];
    const every = args["echo-every-ms"];
    if (every > 0) {
      for (const rec of recs) {
        const tick = () => {
          if (!rec.socket.connected) return;
          rec.socket.timeout(TIMEOUT).emit("echo", PAYLOAD, (err, res) => {
            if (err || res !== PAYLOAD) {
              echoFailed++;
              inc(errors, err ? `echo: ${err.message}` : "bad echo payload");
            } else echoOk++;
          });
        };
        timers.push(
          setTimeout(() => {
            tick();
            timers.push(setInterval(tick, every));
          }, Math.floor(Math.random() * every))
        );
      }
    }
    const tHold = performance.now();
    let ended = false;
    const end = (why) => {
      if (ended) return;
      ended = true;
      for (const t of timers) clearTimeout(t);
      const alive = recs.filter((r) => r.socket.connected && r.socket.io.engine && r.socket.io.engine.transport && r.socket.io.engine.transport.name === FINAL_TRANSPORT).length;
      const connected = recs.filter((r) => r.socket.connected).length;
      const byTransport = {};
      for (const r of recs) if (r.socket.connected) inc(byTransport, r.socket.io.engine.transport.name);
      emit({
        event: "result",
        ...base(),
        endedBy: why,
        heldMs: Math.round(performance.now() - tHold),
        ready: recs.length,
        failed: openAll.failed(),
        connectedAtEnd: connected,
        aliveAtEnd: alive,
        byTransportAtEnd: byTransport,
        disconnects,
        echoOk,
        echoFailed,
        errors,
      });
      for (const rec of recs) closeRec(rec);
      setTimeout(() => process.exit(0), 1000);
    };
    holdEnd = end;
    if (releaseRequested) return end("SIGUSR2");
    setTimeout(() => end("hold-ms"), args["hold-ms"]);
  });
}

// hold: SIGUSR2 ends the hold (a signal before "ready" ends it as soon as it is ready)
let holdEnd = null,
  releaseRequested = false;
process.on("SIGUSR2", () => {
  releaseRequested = true;
  if (holdEnd) holdEnd("SIGUSR2");
});
process.on("SIGTERM", () => process.exit(143));
process.on("SIGINT", () => process.exit(130));
if (args.mode === "connect") runConnect();
else if (args.mode === "echo") runEcho();
else runHold();
