#!/usr/bin/env node
// recovery-clients.js: socket.io-client 4 clients that lose their connection a few
// times and count what Socket.IO's connection state recovery gave back.
//
// Each client connects (polling, then the WebSocket upgrade) to a cluster whose
// nodes run sio-node.js with SIO_STREAM_MS and connectionStateRecovery: every
// socket receives its own numbered stream ("seq" 1, 2, 3, ...). In each of
// --rounds rounds, once every client is connected over WebSocket, the script cuts
// every client's TCP connection at once (a network failure, not a disconnect: the
// server sees "transport close", a recoverable reason). The client reconnects
// with a new Engine.IO handshake; it is recovered (socket.recovered) only if that
// handshake reached the node that holds its session, which then replays the
// numbers sent while it was away.
//
// --carry-cookie: carry the cookies across reconnects as a browser does. In
// Node, engine.io-client 6.6 keeps its cookie jar (withCredentials) inside each
// Engine.IO socket, and the Manager makes a new socket, with an empty jar, for
// every reconnect: exactly the handshake that a reconnect hint must steer. So
// each client does what the README shows (carryCookies): it copies the jar when
// a connection opens and sends it as a Cookie header at the next attempt.
//
// Prints one JSON line: {"event":"result", clients, connectedAtEnd, reconnects,
// recovered, notRecovered, missing, duplicates, received, firstNodes:{node:n},
// rounds, errors:{...}}.
//
// --until-stdin-ends (with --rounds 0): cut nothing; print {"event":"ready"} once
// every client is connected, and end when stdin closes (the test restarts nodes
// meanwhile). --polling-share F: that fraction of the clients stays on polling.
// The result then also lists each client's nodes, in the order it was on them.
//
// Usage: node recovery-clients.js --url http://127.0.0.1:9080 --count 100
//        [--rounds 3] [--carry-cookie] [--local-address 127.0.0.1]
//        [--polling-share 0.5] [--until-stdin-ends]
//        [--settle-ms 1500] [--watchdog-ms 120000]
"use strict";

const http = require("http");
const { Manager } = require("socket.io-client");

const args = {
  url: null, count: 100, rounds: 3, "carry-cookie": false, "local-address": null, "settle-ms": 1500,
  "watchdog-ms": 120000, "polling-share": 0, "until-stdin-ends": false,
};
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, "");
  if (!(k in args)) fail(`unknown option --${k}`);
  if (typeof args[k] === "boolean") args[k] = true;
  else args[k] = typeof args[k] === "number" ? Number(process.argv[++i]) : process.argv[++i];
}
if (!args.url) fail("--url is required");

function fail(msg) {
  process.stderr.write(`recovery-clients: ${msg}\n`);
  process.exit(2);
}

// carryCookies is the README's recipe for Node clients.
function carryCookies(manager) {
  let cookie = "";
  manager.on("open", () => {
    const jar = manager.engine._cookieJar;
    if (jar) cookie = Array.from(jar.cookies, ([name, c]) => `${name}=${c.value}`).join("; ");
  });
  manager.on("reconnect_attempt", () => {
    manager.opts.extraHeaders = Object.assign({}, manager.opts.extraHeaders, { cookie });
  });
}

const counters = { reconnects: 0, recovered: 0, notRecovered: 0, missing: 0, duplicates: 0, received: 0, errors: {} };
const firstNodes = {};
const clients = [];

function inc(map, key) {
  map[key] = (map[key] || 0) + 1;
}

for (let i = 0; i < args.count; i++) {
  const agentOpts = { keepAlive: false };
  if (args["local-address"]) agentOpts.localAddress = args["local-address"];
  const opts = {
    withCredentials: true,
    transports: i < Math.round(args.count * args["polling-share"]) ? ["polling"] : ["polling", "websocket"],
    reconnectionDelay: 100,
    reconnectionDelayMax: 1000,
    timeout: 10000,
    agent: new http.Agent(agentOpts),
  };
  if (args["local-address"]) opts.localAddress = args["local-address"];
  const manager = new Manager(args.url, Object.assign(opts, { autoConnect: false }));
  if (args["carry-cookie"]) carryCookies(manager);
  const c = { manager, socket: null, last: 0, connects: 0, node: null, nodes: [], polling: opts.transports.length === 1 };
  c.socket = manager.socket("/");
  c.socket.on("hello", (msg) => {
    if (c.node === null) inc(firstNodes, msg.node);
    c.node = msg.node;
    c.nodes.push(msg.node);
  });
  c.socket.on("connect", () => {
    c.connects++;
    if (c.connects === 1) return;
    counters.reconnects++;
    if (c.socket.recovered) {
      counters.recovered++;
    } else {
      counters.notRecovered++;
      c.lost = (c.lost || 0) + 1;
      c.last = 0; // a new socket, a new stream
    }
  });
  c.socket.on("seq", (n) => {
    counters.received++;
    if (n === c.last + 1) c.last = n;
    else if (n <= c.last) counters.duplicates++;
    else {
      counters.missing += n - c.last - 1;
      c.last = n;
    }
  });
  c.socket.on("connect_error", (err) => inc(counters.errors, String((err && err.message) || err)));
  clients.push(c);
  c.socket.connect();
}

function upgraded(c) {
  if (c.polling) return c.socket.connected;
  const e = c.manager.engine;
  return c.socket.connected && e && e.transport && e.transport.name === "websocket" && e.transport.ws;
}

function cut(c) {
  const ws = c.manager.engine.transport.ws;
  if (ws && ws._socket) ws._socket.destroy();
}

async function waitFor(pred, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return pred();
}

const watchdog = setTimeout(() => fail("watchdog: the run took too long"), args["watchdog-ms"]);

(async () => {
  let rounds = 0;
  for (; rounds < args.rounds; rounds++) {
    if (!(await waitFor(() => clients.every(upgraded), 30000))) {
      inc(counters.errors, `round ${rounds + 1}: not every client was connected over WebSocket`);
      break;
    }
    // let some numbers arrive on the current connection
    await new Promise((r) => setTimeout(r, 300));
    for (const c of clients) cut(c);
    await new Promise((r) => setTimeout(r, 200));
  }
  if (args["until-stdin-ends"]) {
    await waitFor(() => clients.every(upgraded), 60000);
    process.stdout.write(JSON.stringify({ event: "ready", connected: clients.filter((c) => c.socket.connected).length }) + "\n");
    await new Promise((resolve) => {
      process.stdin.on("end", resolve);
      process.stdin.on("error", resolve);
      process.stdin.resume();
    });
  }
  await waitFor(() => clients.every((c) => c.socket.connected), 30000);
  // the numbers sent while away come with the recovery; let them arrive
  await new Promise((r) => setTimeout(r, args["settle-ms"]));
  const connectedAtEnd = clients.filter((c) => c.socket.connected).length;
  for (const c of clients) c.socket.disconnect();
  clearTimeout(watchdog);
  process.stdout.write(
    JSON.stringify(
      Object.assign({ event: "result", clients: clients.length, connectedAtEnd, rounds, firstNodes }, counters, {
        perClient: args["until-stdin-ends"] ? clients.map((c) => ({ nodes: c.nodes, polling: c.polling, notRecovered: c.lost || 0 })) : undefined,
      }),
    ) + "\n",
  );
  process.exit(0);
})();
