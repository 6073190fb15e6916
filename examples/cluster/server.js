#!/usr/bin/env node
// server.js - one Socket.IO v4 node of the example cluster.
//
//   PORT=3001 NODE_NAME=node1 node examples/cluster/server.js
//
// Environment:
//   PORT       port to listen on (default 3000)
//   HOST       address to bind (default 127.0.0.1)
//   NODE_NAME  name this node reports to clients (default node-<PORT>)
//
// Every client that connects gets a `welcome` event: { node: NODE_NAME }.
// GET /healthz answers 200 (Caddy's active health checks use it).
// Prints one line when listening; exits on SIGTERM / SIGINT.
"use strict";

const http = require("http");
const { Server } = require("socket.io"); // from the repository's node_modules (npm ci)

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || "127.0.0.1";
const NODE_NAME = process.env.NODE_NAME || `node-${PORT}`;

// Plain HTTP routes; Socket.IO answers its own path (/socket.io/) itself.
const httpServer = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(`ok ${NODE_NAME}\n`);
    return;
  }
  res.writeHead(404, { "Content-Type": "text/plain" });
  res.end("not found\n");
});

const io = new Server(httpServer); // default options: polling first, then websocket

io.on("connection", (socket) => {
  socket.emit("welcome", { node: NODE_NAME });
  // for load generators (bench/e2e-client.js --mode echo)
  socket.on("echo", (payload, ack) => {
    if (typeof ack === "function") ack(payload);
  });
});

httpServer.on("error", (err) => {
  if (err.code === "EADDRINUSE") {
    console.error(`${NODE_NAME}: ${HOST}:${PORT} is already in use`);
  } else {
    console.error(`${NODE_NAME}: ${err.message}`);
  }
  process.exit(1);
});

httpServer.listen(PORT, HOST, () => {
  console.log(`${NODE_NAME} listening on http://${HOST}:${PORT}`);
});

function shutdown() {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref(); // don't wait for slow clients
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
