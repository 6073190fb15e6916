#!/usr/bin/env node
// sio-clients.js - runs N official socket.io-client clients (v4, or v2 with
// --client-version 2) against a URL and reports what happened as JSON lines on
// stdout. Used by the Go integration tests.
//
// Output (one JSON object per line on stdout, nothing else is written to stdout):
//   {"event":"ready","connected":n,"failed":m}      after the connect phase
//   {"event":"result", ...}                          at the end (see README.md)
//   {"event":"watchdog", ...}                        only if the global watchdog fires (exit 3)
// Diagnostics go to stderr. Exit codes: 0 = ran to completion (whatever the clients
// did), 2 = bad command line, 3 = watchdog fired, anything else = script bug.
//
// Run with --help for the flags.
"use strict";

const http = require("http");

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------
const { parseFlags } = require("./cli-flags");

const FLAGS = {
  url: { type: "string", def: null, help: "server URL, e.g. http://127.0.0.1:9080 (required)" },
  count: { type: "int", def: 1, help: "number of clients" },
  transports: { type: "list", def: "polling,websocket", help: "comma separated transports, in order" },
  "local-address": { type: "string", def: null, help: "source address for every connection of every client" },
  "local-address-range": { type: "string", def: null, help: "A-B: client i binds to the i-th address of the IPv4 range" },
  path: { type: "string", def: "/socket.io/", help: "socket.io path" },
  "connect-timeout-ms": { type: "int", def: 10000, help: "per-client connect (+hello, +upgrade) timeout" },
  concurrency: { type: "int", def: 20, help: "clients connecting at the same time" },
  "expect-upgrade": { type: "bool", def: false, help: "wait for each client's polling->websocket upgrade" },
  "hold-ms": { type: "int", def: 0, help: "keep the connected clients open this long after the connect phase" },
  "echo-interval-ms": { type: "int", def: 0, help: "during the hold, every live socket emits echo this often (0 = off)" },
  "echo-timeout-ms": { type: "int", def: 5000, help: "ack timeout of each echo" },
  reconnect: { type: "bool", def: false, help: "enable socket.io reconnection (delay 200, max 1000) and count reconnects" },
  "with-credentials": { type: "bool", def: false, help: "withCredentials: per-client cookie jar (send back Set-Cookie, e.g. io cookie / sticky cookies)" },
  "keep-alive": { type: "bool", def: false, help: "per-client keep-alive http.Agent for the polling requests (default: one TCP connection per request)" },
  "client-version": { type: "string", def: "4", help: "4 = socket.io-client 4.8 (EIO=4), 2 = socket.io-client 2.5 (npm alias sio2-client, EIO=3)" },
  "accept-encoding": { type: "string", def: null, help: "v4 only: polling over fetch (undici) sending this Accept-Encoding, e.g. gzip or deflate; compressed bodies are decoded" },
  "watchdog-ms": { type: "int", def: 0, help: "override the global watchdog (default: connect-timeout * waves + hold + echo-timeout + 30 s)" },
  help: { type: "bool", def: false, help: "show this help" },
};

function parseArgs(argv) {
  const { args: out, usage } = parseFlags("sio-clients", FLAGS, argv, { hideDefault: ["watchdog-ms"] });
  if (!out.url) usage("--url is required");
  out.transports = String(out.transports)
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (out.transports.length === 0) usage("--transports is empty");
  for (const t of out.transports) {
    if (!["polling", "websocket", "webtransport"].includes(t)) usage(`unknown transport ${t}`);
  }
  if (out.count < 1) usage("--count must be >= 1");
  if (out.concurrency < 1) usage("--concurrency must be >= 1");
  if (out["local-address"] && out["local-address-range"]) {
    usage("--local-address and --local-address-range are mutually exclusive");
  }
  if (out["client-version"] !== "4" && out["client-version"] !== "2") {
    usage(`--client-version must be 4 or 2, got ${JSON.stringify(out["client-version"])}`);
  }
  if (out["accept-encoding"] !== null) {
    if (out["client-version"] !== "4") usage("--accept-encoding needs --client-version 4");
    if (!/^[A-Za-z0-9*,;=. -]+$/.test(out["accept-encoding"])) usage("--accept-encoding: bad header value");
  }
  if (out["client-version"] === "2" && out.transports.includes("webtransport")) {
    usage("socket.io-client 2 has no webtransport");
  }
  return { args: out, usage };
}

function ipToInt(s) {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3];
}
function intToIp(n) {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

const { args, usage } = parseArgs(process.argv.slice(2));
const COUNT = args.count;
const TRANSPORTS = args.transports;
const CONNECT_TIMEOUT = args["connect-timeout-ms"];
const HOLD = args["hold-ms"];
const ECHO_INTERVAL = args["echo-interval-ms"];
const ECHO_TIMEOUT = args["echo-timeout-ms"];
const RECONNECT = args.reconnect;
const WANT_UPGRADE =
  args["expect-upgrade"] && TRANSPORTS[0] === "polling" && TRANSPORTS.includes("websocket");
const V2 = args["client-version"] === "2";
const ACCEPT_ENCODING = args["accept-encoding"];

// ---------------------------------------------------------------------------
// Client libraries
// ---------------------------------------------------------------------------
// v4: socket.io-client 4.8 (engine.io-client 6.6). v2: socket.io-client 2.5
// (engine.io-client 3.5, EIO=3), installed under the npm alias "sio2-client".
const ioConnect = V2 ? require("sio2-client") : require("socket.io-client").io;

// --accept-encoding (v4): engine.io-client's default Node polling transport
// (xmlhttprequest-ssl) sends no Accept-Encoding and cannot decode a compressed
// body. engine.io-client 6.6 also ships a `Fetch` polling transport, but it calls
// the global fetch() without a way to pass a dispatcher (so no source address).
// This subclass does what Fetch._fetch does, through undici's fetch() (which
// decodes gzip/deflate bodies) with a per-client undici Agent (opts.dispatcher)
// that binds the source address, and sends the requested Accept-Encoding.
let FETCH_TRANSPORTS = null; // name -> transport class, for the v4 `transports` option
let undici = null;
if (ACCEPT_ENCODING !== null) {
  undici = require("undici");
  const eioc = require("engine.io-client"); // the copy socket.io-client 4.8 uses
  class DispatcherFetch extends eioc.Fetch {
    _fetch(data) {
      const isPost = data !== undefined;
      const headers = new undici.Headers(this.opts.extraHeaders);
      if (isPost) headers.set("content-type", "text/plain;charset=UTF-8");
      headers.set("accept-encoding", ACCEPT_ENCODING);
      const jar = this.socket._cookieJar; // set by engine.io-client when withCredentials
      if (jar) jar.appendCookies(headers);
      return undici
        .fetch(this.uri(), {
          method: isPost ? "POST" : "GET",
          body: isPost ? data : null,
          headers,
          dispatcher: this.opts.dispatcher,
        })
        .then((res) => {
          if (jar) jar.parseCookies(res.headers.getSetCookie());
          return res;
        });
    }
  }
  FETCH_TRANSPORTS = {
    polling: DispatcherFetch,
    websocket: eioc.NodeWebSocket, // the `ws` based one (eioc.WebSocket is the browser one)
    webtransport: eioc.WebTransport,
  };
}

// v2 has no cookie jar in Node (xmlhttprequest-ssl 1.6 ignores cookies), so
// --with-credentials is done in the per-client http.Agent, which every polling
// request (xmlhttprequest-ssl) and the websocket handshake (ws 7) go through.
function makeCookieAgent(agentOpts) {
  const jar = new Map(); // name -> value
  class CookieAgent extends http.Agent {
    addRequest(req, options) {
      if (jar.size) {
        const own = [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
        const prev = req.getHeader("cookie");
        req.setHeader("Cookie", prev ? `${prev}; ${own}` : own);
      }
      const store = (res) => {
        for (const line of res.headers["set-cookie"] || []) {
          const first = line.split(";")[0];
          const eq = first.indexOf("=");
          if (eq <= 0) continue;
          const name = first.slice(0, eq).trim();
          const value = first.slice(eq + 1).trim();
          const expired = /;\s*max-age=\s*(-\d+|0)\s*(;|$)/i.test(line);
          if (expired) jar.delete(name);
          else jar.set(name, value);
        }
      };
      req.once("response", store);
      req.once("upgrade", store);
      return super.addRequest(req, options);
    }
  }
  return new CookieAgent(agentOpts);
}

// Ack with a timeout: v4 has socket.timeout(T).emit(ev, x, (err, res) => ...);
// v2 has no timeout, so emulate it with the same error message.
function emitWithTimeout(socket, ev, payload, timeoutMs, cb) {
  if (typeof socket.timeout === "function") return socket.timeout(timeoutMs).emit(ev, payload, cb);
  let done = false;
  const t = setTimeout(() => {
    if (done) return;
    done = true;
    cb(new Error("operation has timed out"));
  }, timeoutMs);
  socket.emit(ev, payload, (res) => {
    if (done) return;
    done = true;
    clearTimeout(t);
    cb(null, res);
  });
}

let localAddressFor = () => null;
if (args["local-address"]) {
  const la = args["local-address"];
  localAddressFor = () => la;
} else if (args["local-address-range"]) {
  const m = /^([\d.]+)-([\d.]+)$/.exec(args["local-address-range"]);
  const lo = m && ipToInt(m[1]);
  const hi = m && ipToInt(m[2]);
  if (lo === null || hi === null || !m || hi < lo) usage("--local-address-range must be A-B (IPv4, A <= B)");
  if (hi - lo + 1 < COUNT) {
    usage(`--local-address-range has ${hi - lo + 1} addresses, fewer than --count ${COUNT}`);
  }
  localAddressFor = (i) => intToIp(lo + i);
}

// ---------------------------------------------------------------------------
// Watchdog: everything is bounded in time.
// ---------------------------------------------------------------------------
const WAVES = Math.ceil(COUNT / args.concurrency);
const WATCHDOG_MS =
  args["watchdog-ms"] ||
  CONNECT_TIMEOUT * WAVES + HOLD + (ECHO_INTERVAL > 0 ? ECHO_TIMEOUT : 0) + 30000;

const T0 = Date.now();
const records = []; // per client, index = client number
const sockets = [];
let phase = "connect"; // connect | hold | done
const counters = {
  reconnects: 0,
  reconnectAttempts: 0,
  echoOk: 0,
  echoFailed: 0,
  echoSkipped: 0,
  echoNodeMismatch: 0,
  echoByNode: {},
  echoErrors: {},
  disconnects: {
    connect: { count: 0, reasons: {}, details: {}, at: [] },
    hold: { count: 0, reasons: {}, details: {}, at: [] },
  },
};

function inc(map, key, n = 1) {
  map[key] = (map[key] || 0) + n;
}

// If the reader goes away (closed pipe) there is nobody left to report to.
process.stdout.on("error", (err) => {
  if (err && err.code === "EPIPE") process.exit(0);
  throw err;
});

function println(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// Human readable text of an engine.io / socket.io error, including the transport
// error description (the HTTP status code for xhr errors).
function errText(err) {
  if (err === undefined || err === null) return "unknown error";
  if (typeof err !== "object") return String(err);
  const parts = [];
  if (err.message) parts.push(String(err.message));
  let d = err.description;
  if (d !== undefined && d !== null) {
    if (typeof d === "object") d = d.message || (d.error && d.error.message) || d.reason || d.type || "";
    if (d !== "") parts.push(parts.length ? `(${d})` : String(d));
  }
  // a polling request without an HTTP answer: the socket error behind it
  const cause = err.context && err.context.statusText;
  if (cause && typeof cause === "object") parts.push(`[${cause.code || cause.message}]`);
  return parts.length ? parts.join(" ") : "unknown error";
}

const watchdog = setTimeout(() => {
  println({
    event: "watchdog",
    afterMs: WATCHDOG_MS,
    phase,
    started: records.length,
    connected: records.filter((r) => r.connected).length,
  });
  process.stderr.write(`sio-clients: watchdog fired after ${WATCHDOG_MS} ms in phase ${phase}\n`);
  process.exit(3);
}, WATCHDOG_MS);
watchdog.unref();

// ---------------------------------------------------------------------------
// One client
// ---------------------------------------------------------------------------
function startClient(i) {
  return new Promise((resolve) => {
    const rec = {
      i,
      node: null, // node of the first "hello"
      lastNode: null, // node of the latest "hello" (differs after a reconnect to another node)
      connected: false,
      upgraded: false,
      transport: null,
      error: null,
      upgradeError: null,
      reconnects: 0,
      connectMs: null,
      disconnects: [],
      echoSeq: 0,
    };
    records[i] = rec;
    const la = localAddressFor(i);
    if (la) rec.localAddress = la;

    // engine.io-client (Node build) hands only `agent` (not `localAddress`) to
    // xmlhttprequest-ssl for the polling requests, and hands both `agent` and
    // `localAddress` to `ws` for websocket connections. An http.Agent created with
    // {localAddress} therefore binds both. One agent per client so that clients never
    // share TCP connections.
    // engine.io-client 3.5 (v2) does the same: xmlhttprequest-ssl 1.6 gets only
    // `agent`, ws 7 gets `agent` and `localAddress`.
    const v2Cookies = V2 && !!args["with-credentials"];
    let agent = false; // engine.io-client default: no agent, one connection per request
    if (la || args["keep-alive"] || v2Cookies) {
      const agentOpts = { keepAlive: !!args["keep-alive"] };
      if (la) agentOpts.localAddress = la;
      agent = v2Cookies ? makeCookieAgent(agentOpts) : new http.Agent(agentOpts);
    }
    const opts = {
      path: args.path,
      transports: FETCH_TRANSPORTS ? TRANSPORTS.map((t) => FETCH_TRANSPORTS[t]) : TRANSPORTS,
      forceNew: true,
      reconnection: RECONNECT,
      timeout: CONNECT_TIMEOUT, // manager connect timeout
      agent,
      withCredentials: !!args["with-credentials"],
    };
    if (la) opts.localAddress = la; // read by the websocket transport (ws) as well
    if (FETCH_TRANSPORTS) {
      // undici Agent for the fetch polling requests: bound source address;
      // pipelining 0 = "Connection: close", one TCP connection per request like
      // the default transport, unless --keep-alive.
      const dOpts = { pipelining: args["keep-alive"] ? 1 : 0 };
      if (la) dOpts.localAddress = la;
      opts.dispatcher = new undici.Agent(dOpts);
      rec.dispatcher = opts.dispatcher;
    }
    if (RECONNECT) {
      opts.reconnectionDelay = 200;
      opts.reconnectionDelayMax = 1000;
    }

    const started = Date.now();
    const socket = ioConnect(args.url, opts);
    sockets[i] = socket;
    let settled = false;

    function settle(errMsg) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (errMsg) {
        rec.connected = false;
        rec.error = errMsg;
        // A failed client must not keep polling / retrying in the background.
        try {
          socket.disconnect();
        } catch (_) {
          /* ignore */
        }
      } else {
        rec.connectMs = Date.now() - started;
      }
      resolve();
    }

    function check() {
      if (settled) return;
      if (!socket.connected || !rec.node) return;
      if (WANT_UPGRADE && !rec.upgraded && !rec.upgradeError) return;
      rec.connected = true;
      settle(null);
    }

    const timer = setTimeout(() => {
      if (socket.connected && rec.node) {
        // connected, only the upgrade is missing
        rec.connected = true;
        rec.upgradeError = rec.upgradeError || "upgrade timeout";
        settle(null);
      } else if (socket.connected) {
        settle("no hello within connect timeout");
      } else {
        settle(rec.lastError ? `connect timeout (last error: ${rec.lastError})` : "connect timeout");
      }
    }, CONNECT_TIMEOUT);

    function hookEngine(engine) {
      if (!engine || engine.__sioClientsHooked) return;
      engine.__sioClientsHooked = true;
      engine.on("upgrade", (transport) => {
        rec.upgraded = true;
        rec.transport = transport && transport.name;
        check();
      });
      engine.on("upgradeError", (err) => {
        if (rec.upgraded) return;
        if (!rec.upgradeError) rec.upgradeError = errText(err);
        check();
      });
    }
    // The engine exists right after io() (autoConnect); with --reconnect a new
    // engine is created for each attempt, so hook every "open" as well.
    hookEngine(socket.io.engine);
    socket.io.on("open", () => hookEngine(socket.io.engine));

    socket.on("connect", () => {
      if (socket.io.engine && socket.io.engine.transport) {
        rec.transport = socket.io.engine.transport.name;
      }
      check();
    });

    socket.on("hello", (data) => {
      const node = data && data.node;
      if (!rec.node) rec.node = node;
      rec.lastNode = node;
      check();
    });

    socket.on("connect_error", (err) => {
      rec.lastError = errText(err);
      if (!RECONNECT) settle(rec.lastError);
      // with --reconnect the manager retries until the connect timeout
    });

    socket.on("disconnect", (reason, details) => {
      if (phase === "done") return; // our own final socket.disconnect()
      const p = phase === "hold" ? "hold" : "connect";
      const d = counters.disconnects[p];
      d.count++;
      inc(d.reasons, String(reason));
      const detail = details ? `${reason}: ${errText(details)}` : String(reason);
      inc(d.details, detail);
      if (d.at.length < 1000) d.at.push(Date.now()); // epoch ms, comparable with the Go test's clock
      if (rec.disconnects.length < 10) rec.disconnects.push({ phase: p, reason: detail, atMs: Date.now() - T0 });
      if (!settled && !RECONNECT) settle(`disconnected before ready: ${detail}`);
    });

    socket.io.on("reconnect_attempt", () => {
      counters.reconnectAttempts++;
    });
    socket.io.on("reconnect", () => {
      counters.reconnects++;
      rec.reconnects++;
    });
  });
}

// ---------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------
async function connectPhase() {
  let next = 0;
  async function worker() {
    while (next < COUNT) {
      const i = next++;
      await startClient(i);
    }
  }
  const workers = [];
  for (let w = 0; w < Math.min(args.concurrency, COUNT); w++) workers.push(worker());
  await Promise.all(workers);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function holdPhase() {
  phase = "hold";
  let pending = 0;
  let interval = null;
  if (HOLD > 0 && ECHO_INTERVAL > 0) {
    interval = setInterval(() => {
      for (let i = 0; i < COUNT; i++) {
        const rec = records[i];
        const socket = sockets[i];
        if (!rec.connected) continue; // failed in the connect phase: never echoes
        if (!socket.connected) {
          counters.echoSkipped++;
          continue;
        }
        pending++;
        const seq = ++rec.echoSeq;
        emitWithTimeout(socket, "echo", seq, ECHO_TIMEOUT, (err, res) => {
          pending--;
          if (err) {
            counters.echoFailed++;
            inc(counters.echoErrors, errText(err));
            return;
          }
          if (!res || res.payload !== seq) {
            counters.echoFailed++;
            inc(counters.echoErrors, "bad echo payload");
            return;
          }
          counters.echoOk++;
          inc(counters.echoByNode, String(res.node));
          if (rec.lastNode && res.node !== rec.lastNode) counters.echoNodeMismatch++;
        });
      }
    }, ECHO_INTERVAL);
  }
  if (HOLD > 0) await sleep(HOLD);
  if (interval) clearInterval(interval);
  // let the echoes already in flight finish (each is bounded by its ack timeout)
  const deadline = Date.now() + ECHO_TIMEOUT + 500;
  while (pending > 0 && Date.now() < deadline) await sleep(20);
  phase = "done";
}

function percentiles(values) {
  if (values.length === 0) return null;
  const v = values.slice().sort((a, b) => a - b);
  const at = (q) => v[Math.min(v.length - 1, Math.floor(q * v.length))];
  return { min: v[0], p50: at(0.5), p95: at(0.95), max: v[v.length - 1] };
}

function buildResult(connectPhaseMs) {
  const perNode = {};
  const perNodeAtEnd = {};
  const transportsAtEnd = {};
  const connectErrors = {};
  const upgradeErrors = {}; // only for clients that connected but did not upgrade
  let connected = 0;
  let upgraded = 0;
  let aliveAtEnd = 0;
  const clients = [];
  for (let i = 0; i < COUNT; i++) {
    const rec = records[i];
    const socket = sockets[i];
    const alive = !!(socket && socket.connected);
    const engine = socket && socket.io && socket.io.engine;
    const transport = alive && engine && engine.transport ? engine.transport.name : null;
    if (rec.connected) {
      connected++;
      if (rec.node) inc(perNode, rec.node);
    } else {
      inc(connectErrors, rec.error || "unknown");
    }
    if (rec.upgraded) upgraded++;
    else if (rec.connected && rec.upgradeError) inc(upgradeErrors, rec.upgradeError);
    if (alive) {
      aliveAtEnd++;
      if (transport) inc(transportsAtEnd, transport);
      if (rec.lastNode) inc(perNodeAtEnd, rec.lastNode);
    }
    const c = { node: rec.node, upgraded: rec.upgraded, transport };
    if (rec.error) c.error = rec.error;
    if (rec.connected && rec.upgradeError && !rec.upgraded) c.upgradeError = rec.upgradeError;
    if (rec.lastNode && rec.lastNode !== rec.node) c.lastNode = rec.lastNode;
    if (rec.localAddress) c.localAddress = rec.localAddress;
    if (rec.reconnects) c.reconnects = rec.reconnects;
    if (!alive && rec.connected) c.alive = false;
    if (rec.disconnects.length) c.disconnects = rec.disconnects.map((d) => `${d.phase}: ${d.reason}`);
    clients.push(c);
  }
  const toList = (m) =>
    Object.entries(m)
      .map(([message, count]) => ({ message, count }))
      .sort((a, b) => b.count - a.count || a.message.localeCompare(b.message));
  return {
    event: "result",
    url: args.url,
    clientVersion: Number(args["client-version"]),
    transports: TRANSPORTS,
    total: COUNT,
    connected,
    failed: COUNT - connected,
    upgraded,
    upgradeErrors: toList(upgradeErrors),
    connectErrors: toList(connectErrors),
    perNode,
    perNodeAtEnd,
    transportsAtEnd,
    aliveAtEnd,
    echoOk: counters.echoOk,
    echoFailed: counters.echoFailed,
    echoSkipped: counters.echoSkipped,
    echoErrors: counters.echoErrors,
    echoByNode: counters.echoByNode,
    echoNodeMismatch: counters.echoNodeMismatch,
    disconnectsDuringConnect: counters.disconnects.connect,
    disconnectsDuringHold: counters.disconnects.hold,
    reconnects: counters.reconnects,
    reconnectAttempts: counters.reconnectAttempts,
    connectMs: percentiles(records.filter((r) => r.connected).map((r) => r.connectMs)),
    connectPhaseMs,
    durationMs: Date.now() - T0,
    clients,
  };
}

async function main() {
  await connectPhase();
  const connectPhaseMs = Date.now() - T0;
  const connected = records.filter((r) => r.connected).length;
  println({ event: "ready", connected, failed: COUNT - connected });
  await holdPhase();
  const result = buildResult(connectPhaseMs);
  for (const socket of sockets) {
    try {
      socket.disconnect();
    } catch (_) {
      /* ignore */
    }
  }
  for (const rec of records) {
    if (rec && rec.dispatcher) rec.dispatcher.close().catch(() => {});
  }
  process.stdout.write(JSON.stringify(result) + "\n", () => {
    // give the close packets a moment to leave, then exit regardless of open handles
    setTimeout(() => process.exit(0), 200);
  });
}

main().catch((err) => {
  process.stderr.write(`sio-clients: script error: ${(err && err.stack) || err}\n`);
  process.exit(1);
});
