#!/usr/bin/env node
// bench-node.js - a lean socket.io@4 node for the end-to-end benchmarks
// (bench/e2e.sh, bench/scale.sh). It does what caddytest/testdata/sio-node.js
// does for clients (echo acks), without that node's per-request bookkeeping,
// so that the nodes take as little of the machine's CPU as possible.
//
// Environment:
//   PORT         (required) TCP port; 0 = any free port (reported in the listening line)
//   HOST         bind address (default 127.0.0.1)
//   NODE_NAME    (required) e.g. "node1"
//   SIO_OPTIONS  optional JSON merged into `new Server(httpServer, opts)`
//
// Behaviour:
//   socket.on("echo", (payload, ack) => ack(payload))
//   GET /__stats  -> {node, pid, openSessions, openSockets, handshakes, upgrades,
//                    connections, disconnects, disconnectReasons, echoes,
//                    connectionErrors: {total, byCode}}
//   GET /__health -> 200 {"node": NODE_NAME}
//   other paths   -> 404
// stdout: one line once listening: {"event":"listening","node":…,"port":…}
// SIGTERM / SIGINT: close and exit 0 (forced after 1 s).
"use strict";

const http = require("http");
const path = require("path");
const { Server } = require(require.resolve("socket.io", { paths: [path.join(__dirname, "..")] }));

function fatal(msg) {
  process.stderr.write(`bench-node: ${msg}\n`);
  process.exit(2);
}

const NODE_NAME = process.env.NODE_NAME;
const HOST = process.env.HOST || "127.0.0.1";
if (!NODE_NAME) fatal("NODE_NAME is required");
if (!/^\d+$/.test(process.env.PORT || "")) fatal("PORT is required (integer, 0 = any free port)");
const PORT = Number(process.env.PORT);
let options = {};
if (process.env.SIO_OPTIONS) {
  try {
    options = JSON.parse(process.env.SIO_OPTIONS);
  } catch (e) {
    fatal(`SIO_OPTIONS is not valid JSON: ${e.message}`);
  }
  if (!options || typeof options !== "object" || Array.isArray(options)) fatal("SIO_OPTIONS must be a JSON object");
}

const stats = {
  handshakes: 0,
  upgrades: 0,
  connections: 0,
  disconnects: 0,
  disconnectReasons: {},
  echoes: 0,
  connectionErrors: { total: 0, byCode: {} },
};

function json(res, status, body) {
  const b = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(b) });
  res.end(b);
}

// engine.io takes over the socket.io path; everything else reaches this handler
const httpServer = http.createServer((req, res) => {
  const p = req.url.split("?")[0];
  if (p === "/__stats") {
    return json(res, 200, {
      node: NODE_NAME,
      pid: process.pid,
      openSessions: io.engine.clientsCount,
      openSockets: io.of("/").sockets.size,
      ...stats,
    });
  }
  if (p === "/__health") return json(res, 200, { node: NODE_NAME });
  json(res, 404, { error: "not found", node: NODE_NAME });
});
// keep-alive connections from the proxy (Caddy pools them) must not be cut
// under the proxy by Node's default 5 s keep-alive timeout while it reuses them
httpServer.keepAliveTimeout = 65000;
httpServer.headersTimeout = 66000;

const io = new Server(httpServer, options);
io.engine.on("connection", (conn) => {
  stats.handshakes++;
  conn.on("upgrade", () => stats.upgrades++);
});
io.engine.on("connection_error", (err) => {
  stats.connectionErrors.total++;
  const k = String(err.code);
  stats.connectionErrors.byCode[k] = (stats.connectionErrors.byCode[k] || 0) + 1;
});
io.on("connection", (socket) => {
  stats.connections++;
  socket.on("echo", (payload, ack) => {
    stats.echoes++;
    if (typeof ack === "function") ack(payload);
  });
  socket.on("disconnect", (reason) => {
    stats.disconnects++;
    stats.disconnectReasons[reason] = (stats.disconnectReasons[reason] || 0) + 1;
  });
});

httpServer.on("error", (err) => fatal(`listen ${HOST}:${PORT}: ${err.message}`));
httpServer.listen(PORT, HOST, () => {
  process.stdout.write(JSON.stringify({ event: "listening", node: NODE_NAME, port: httpServer.address().port }) + "\n");
});

let closing = false;
function shutdown() {
  if (closing) return;
  closing = true;
  setTimeout(() => process.exit(0), 1000).unref();
  io.close(() => process.exit(0));
  httpServer.closeAllConnections();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
