#!/usr/bin/env node
// sio-node.js - one Socket.IO v4 server node used by the Go integration tests.
//
// Configuration (environment variables):
//   PORT       (required) TCP port to listen on; 0 picks a free port (the real
//              port is reported in the "listening" line).
//   HOST       (default 127.0.0.1) address to bind.
//   NODE_NAME  (required) name reported to clients and in /__stats, e.g. "node1".
//   SIO_OPTIONS (optional) JSON object merged into the `new Server(httpServer, opts)`
//              options, e.g. {"transports":["polling"],"pingInterval":2000,
//              "pingTimeout":2000,"path":"/socket.io/","allowEIO3":true,
//              "cookie":true,"httpCompression":{"threshold":0}}
//   EXIT_ON_STDIN_CLOSE (optional) "1": exit when stdin reaches EOF (lets a parent
//              that keeps a pipe open on our stdin guarantee we never outlive it).
//
// Behaviour:
//   - on each socket.io connection: socket.emit("hello", {node: NODE_NAME})
//   - socket.on("echo", (payload, ack) => ack({node: NODE_NAME, payload}))
//   - every HTTP response on the socket.io path (and the websocket handshake
//     response) carries the header "X-Sio-Node: <NODE_NAME>".
//   - GET  /__stats  -> JSON counters (see README.md)
//   - POST /__reset  -> zero the counters (open sessions are kept)
//   - GET  /__health -> 200 {"node": NODE_NAME}
//   - any other non-socket.io path -> 404 JSON
//
// Prints exactly one line on stdout once listening:
//   {"event":"listening","node":"<NODE_NAME>","port":<port>}
// Exits 0 on SIGTERM / SIGINT.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

function fatal(msg) {
  process.stderr.write(`sio-node: ${msg}\n`);
  process.exit(2);
}

const NODE_NAME = process.env.NODE_NAME;
const HOST = process.env.HOST || "127.0.0.1";
const PORT_RAW = process.env.PORT;
if (!NODE_NAME) fatal("NODE_NAME is required");
if (PORT_RAW === undefined || PORT_RAW === "" || !/^\d+$/.test(PORT_RAW)) {
  fatal("PORT is required (integer, 0 = pick a free port)");
}
const PORT = Number(PORT_RAW);

let extraOptions = {};
if (process.env.SIO_OPTIONS) {
  try {
    extraOptions = JSON.parse(process.env.SIO_OPTIONS);
  } catch (e) {
    fatal(`SIO_OPTIONS is not valid JSON: ${e.message}`);
  }
  if (!extraOptions || typeof extraOptions !== "object" || Array.isArray(extraOptions)) {
    fatal("SIO_OPTIONS must be a JSON object");
  }
}
const options = Object.assign({}, extraOptions);

// Path prefix handled by socket.io (same rule as engine.io's _computePath/check:
// strip one trailing slash, then add it back unless addTrailingSlash === false).
const SIO_PATH_BASE = (options.path || "/socket.io").replace(/\/$/, "");
const SIO_PATH = SIO_PATH_BASE + (options.addTrailingSlash !== false ? "/" : "");
function isSioPath(url) {
  return typeof url === "string" && url.slice(0, SIO_PATH.length) === SIO_PATH;
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------
const RECENT_ERRORS_MAX = 50;
let stats;
function newStats() {
  return {
    since: new Date().toISOString(),
    handshakes: 0, // io.engine "connection" (new engine.io sessions)
    ioConnections: 0, // io "connection" (socket.io sockets in any namespace)
    ioDisconnections: 0,
    disconnectReasons: {}, // socket "disconnect" reason -> count
    engineCloses: 0,
    engineCloseReasons: {}, // engine socket "close" reason -> count
    upgrades: 0, // socket.conn "upgrade" (polling -> websocket)
    upgradesByTransport: {}, // transport name after upgrade -> count
    echoes: 0, // "echo" events answered
    connectionErrors: {
      total: 0,
      byCode: {}, // "1" -> n   (1 = "Session ID unknown")
      byMessage: {}, // "Session ID unknown" -> n
      recent: [], // last RECENT_ERRORS_MAX: {code,message,method,url,remoteAddress,upgrade}
    },
    requests: {
      // every HTTP request that reached this node with a path on the socket.io
      // path, including websocket handshakes (HTTP GET + Upgrade)
      total: 0,
      withSid: 0,
      withoutSid: 0,
      withCookieHeader: 0, // requests carrying any Cookie header
      byMethod: {},
      withSidByMethod: {},
      withoutSidByMethod: {},
      polling: { total: 0, withSid: 0, withoutSid: 0 }, // non-upgrade requests
      websocket: { total: 0, withSid: 0, withoutSid: 0 }, // HTTP Upgrade requests
    },
    otherRequests: 0, // requests on other paths (excluding /__stats and /__reset)
    // remote (client) addresses seen, address -> count
    remoteAddresses: {}, // all socket.io-path requests (polling + websocket)
    pollingRemoteAddresses: {},
    websocketRemoteAddresses: {},
    handshakeAddresses: {}, // socket.handshake.address per socket.io connection
  };
}
stats = newStats();

function inc(map, key, n = 1) {
  map[key] = (map[key] || 0) + n;
}

function sidOf(url) {
  const q = url.indexOf("?");
  if (q < 0) return null;
  return new URLSearchParams(url.slice(q + 1)).get("sid");
}

function countSioRequest(req, isUpgrade) {
  const hasSid = !!sidOf(req.url);
  const method = req.method || "UNKNOWN";
  const r = stats.requests;
  r.total++;
  if (req.headers.cookie) r.withCookieHeader++;
  inc(r.byMethod, method);
  if (hasSid) {
    r.withSid++;
    inc(r.withSidByMethod, method);
  } else {
    r.withoutSid++;
    inc(r.withoutSidByMethod, method);
  }
  const t = isUpgrade ? r.websocket : r.polling;
  t.total++;
  if (hasSid) t.withSid++;
  else t.withoutSid++;
  const addr = (req.socket && req.socket.remoteAddress) || "unknown";
  inc(stats.remoteAddresses, addr);
  inc(isUpgrade ? stats.websocketRemoteAddresses : stats.pollingRemoteAddresses, addr);
}

function snapshot() {
  const s = JSON.parse(JSON.stringify(stats));
  s.node = NODE_NAME;
  s.port = boundPort;
  s.pid = process.pid;
  s.path = SIO_PATH;
  s.openSessions = io.engine.clientsCount; // live engine.io sessions
  s.openSockets = io.of("/").sockets.size; // live sockets in the main namespace
  s.remoteAddressCount = Object.keys(s.remoteAddresses).length;
  s.pollingRemoteAddressCount = Object.keys(s.pollingRemoteAddresses).length;
  s.websocketRemoteAddressCount = Object.keys(s.websocketRemoteAddresses).length;
  s.handshakeAddressCount = Object.keys(s.handshakeAddresses).length;
  return s;
}

// ---------------------------------------------------------------------------
// HTTP server: plain handler for non-socket.io paths
// ---------------------------------------------------------------------------
function sendJSON(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
    "X-Sio-Node": NODE_NAME,
  });
  res.end(body);
}

const httpServer = http.createServer((req, res) => {
  // socket.io (engine.io) intercepts its own path and only forwards the rest here.
  const pathname = req.url.split("?")[0];
  if (pathname === "/__stats" && (req.method === "GET" || req.method === "HEAD")) {
    return sendJSON(res, 200, snapshot());
  }
  if (pathname === "/__reset" && req.method === "POST") {
    req.resume();
    stats = newStats();
    return sendJSON(res, 200, { node: NODE_NAME, reset: true });
  }
  if (pathname === "/__health") {
    return sendJSON(res, 200, { node: NODE_NAME });
  }
  stats.otherRequests++;
  sendJSON(res, 404, { node: NODE_NAME, error: "not found", path: pathname });
});

const io = new Server(httpServer, options);

// Count every request on the socket.io path *before* engine.io handles it.
// (engine.io replaced the "request" listeners and added an "upgrade" listener
// in attach(); prepend ours so they run first.)
httpServer.prependListener("request", (req, res) => {
  if (!isSioPath(req.url)) return;
  countSioRequest(req, false);
  // Marks which node produced the response, also for engine.io error responses
  // (writeHead() merges headers set with setHeader()).
  res.setHeader("X-Sio-Node", NODE_NAME);
});
httpServer.prependListener("upgrade", (req) => {
  if (!isSioPath(req.url)) return;
  countSioRequest(req, true);
});
// websocket handshake responses (the "headers" event also fires for polling
// responses; setting the header twice is harmless).
io.engine.on("headers", (headers) => {
  headers["X-Sio-Node"] = NODE_NAME;
});

io.engine.on("connection", (conn) => {
  stats.handshakes++;
  conn.on("close", (reason) => {
    stats.engineCloses++;
    inc(stats.engineCloseReasons, String(reason));
  });
});

io.engine.on("connection_error", (err) => {
  const code = err && err.code !== undefined ? String(err.code) : "unknown";
  const message = (err && err.message) || "unknown";
  const ce = stats.connectionErrors;
  ce.total++;
  inc(ce.byCode, code);
  inc(ce.byMessage, message);
  const req = err && err.req;
  ce.recent.push({
    code: err ? err.code : null,
    message,
    method: req ? req.method : null,
    url: req ? req.url : null,
    remoteAddress: req && req.socket ? req.socket.remoteAddress : null,
    upgrade: !!(req && req.headers && req.headers.upgrade),
  });
  if (ce.recent.length > RECENT_ERRORS_MAX) ce.recent.shift();
});

io.on("connection", (socket) => {
  stats.ioConnections++;
  inc(stats.handshakeAddresses, socket.handshake.address || "unknown");

  socket.conn.on("upgrade", (transport) => {
    stats.upgrades++;
    inc(stats.upgradesByTransport, (transport && transport.name) || "unknown");
  });

  socket.on("echo", (payload, ack) => {
    stats.echoes++;
    if (typeof ack === "function") ack({ node: NODE_NAME, payload });
  });

  socket.on("disconnect", (reason) => {
    stats.ioDisconnections++;
    inc(stats.disconnectReasons, String(reason));
  });

  socket.emit("hello", { node: NODE_NAME });
});

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------
let boundPort = PORT;
httpServer.on("error", (err) => fatal(`listen ${HOST}:${PORT}: ${err.message}`));
httpServer.listen(PORT, HOST, () => {
  boundPort = httpServer.address().port;
  process.stdout.write(
    JSON.stringify({ event: "listening", node: NODE_NAME, port: boundPort }) + "\n"
  );
});

let shuttingDown = false;
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  // Never hang on shutdown (long-polls / keep-alive connections).
  setTimeout(() => process.exit(0), 1000).unref();
  io.close(() => process.exit(0));
  // io.close() disconnects every session; then drop any leftover idle/keep-alive
  // HTTP connections so httpServer.close() can complete.
  setTimeout(() => {
    try {
      httpServer.closeAllConnections();
    } catch (_) {
      /* ignore */
    }
  }, 100).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

if (process.env.EXIT_ON_STDIN_CLOSE === "1") {
  process.stdin.on("end", shutdown);
  process.stdin.on("error", shutdown);
  process.stdin.resume();
}
