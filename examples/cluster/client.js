#!/usr/bin/env node
// client.js - connect socket.io-client v4 to the cluster (through Caddy) and
// report which node answered.
//
//   node examples/cluster/client.js [--url http://127.0.0.1:8080] [--count N]
//                                   [--timeout-ms 15000] [--upgrade-wait-ms 3000]
//                                   [--allow-polling]
//
// With one client (the default) it prints
//   I have connected to server.
//   Answered by node2 (transport: websocket after upgrade)
// With --count N it connects N clients at once and prints a per-node summary.
//
// Clients use the default transports: an HTTP long-polling handshake, then an
// upgrade to WebSocket. That upgrade only succeeds if the proxy sends it to the
// node that owns the session, so a client that is still on polling after
// --upgrade-wait-ms counts as a failure (unless --allow-polling).
//
// Exit status: 0 when every client connected, got its `welcome` and (unless
// --allow-polling) upgraded; 1 otherwise, or when --timeout-ms runs out;
// 2 for a bad command line.
"use strict";

const { io } = require("socket.io-client"); // from the repository's node_modules (npm ci)

function usage(msg) {
  if (msg) console.error(`client.js: ${msg}`);
  console.error(
    "usage: client.js [--url URL] [--count N] [--timeout-ms MS] [--upgrade-wait-ms MS] [--allow-polling]",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: "http://127.0.0.1:8080", count: 1, timeoutMs: 15000, upgradeWaitMs: 3000, allowPolling: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    const int = (v) => {
      if (!/^\d+$/.test(v) || Number(v) < 1) usage(`${arg}: not a positive integer: ${v}`);
      return Number(v);
    };
    switch (arg) {
      case "--url": opts.url = value(); break;
      case "--count": opts.count = int(value()); break;
      case "--timeout-ms": opts.timeoutMs = int(value()); break;
      case "--upgrade-wait-ms": opts.upgradeWaitMs = int(value()); break;
      case "--allow-polling": opts.allowPolling = true; break;
      case "-h": case "--help": usage();
      default: usage(`unknown argument: ${arg}`);
    }
  }
  return opts;
}

// Connect one client. Resolves (never rejects) with
// { ok, node, transport, upgraded, error }.
function runClient(url, { timeoutMs, upgradeWaitMs, allowPolling, onConnect }) {
  return new Promise((resolve) => {
    const result = { ok: false, node: null, transport: null, upgraded: false, error: null };
    const socket = io(url, {
      forceNew: true, // one Engine.IO session per client, not one shared Manager
      reconnection: false, // a broken session must show up as an error
      timeout: timeoutMs,
    });
    let connected = false;
    let upgradeTimer = null;
    let settled = false;

    const finish = (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(upgradeTimer);
      clearTimeout(deadline);
      const engine = socket.io.engine;
      result.transport = engine && engine.transport ? engine.transport.name : null;
      result.error = error || null;
      result.ok = !error;
      socket.close();
      resolve(result);
    };
    const deadline = setTimeout(() => finish(connected ? "timed out waiting for welcome" : "connect timeout"), timeoutMs);

    // Done when we know the node and the transport has settled: upgraded, or
    // the upgrade wait ran out.
    const maybeDone = () => {
      if (!connected || !result.node) return;
      if (result.upgraded) return finish();
      if (!upgradeTimer) {
        upgradeTimer = setTimeout(
          () => finish(allowPolling ? null : `no upgrade to websocket within ${upgradeWaitMs} ms`),
          upgradeWaitMs,
        );
      }
    };

    socket.io.on("open", () => {
      const engine = socket.io.engine;
      engine.on("upgrade", () => {
        result.upgraded = true;
        maybeDone();
      });
      engine.on("upgradeError", (err) => {
        if (!allowPolling) finish(`upgrade failed: ${err.message}`);
      });
    });
    socket.on("welcome", (msg) => {
      result.node = (msg && msg.node) || "?";
      maybeDone();
    });
    socket.on("connect", () => {
      connected = true;
      if (onConnect) onConnect();
      maybeDone();
    });
    socket.on("connect_error", (err) => {
      const detail = err.description && err.description.message ? ` (${err.description.message})` : "";
      finish(`connect_error: ${err.message}${detail}`);
    });
    socket.on("disconnect", (reason) => {
      if (connected) finish(`disconnected: ${reason}`);
    });
  });
}

function describeTransport(r) {
  if (!r.transport) return "unknown";
  if (r.upgraded) return `${r.transport} after upgrade`;
  return r.transport === "polling" ? "polling, not upgraded" : r.transport;
}

async function main(opts) {
  const clientOpts = { timeoutMs: opts.timeoutMs, upgradeWaitMs: opts.upgradeWaitMs, allowPolling: opts.allowPolling };

  if (opts.count === 1) {
    const r = await runClient(opts.url, { ...clientOpts, onConnect: () => console.log("I have connected to server.") });
    if (r.node) console.log(`Answered by ${r.node} (transport: ${describeTransport(r)})`);
    if (!r.ok) {
      console.error(`client.js: failed to connect to ${opts.url}: ${r.error}`);
      return 1;
    }
    return 0;
  }

  const results = await Promise.all(Array.from({ length: opts.count }, () => runClient(opts.url, clientOpts)));
  const ok = results.filter((r) => r.ok);
  const perNode = new Map();
  for (const r of ok) perNode.set(r.node, (perNode.get(r.node) || 0) + 1);
  const upgraded = results.filter((r) => r.upgraded).length;

  console.log(`${ok.length} of ${opts.count} clients connected, ${upgraded} upgraded to websocket`);
  for (const node of [...perNode.keys()].sort()) console.log(`  ${node}: ${perNode.get(node)} clients`);
  const errors = new Map();
  for (const r of results) if (!r.ok) errors.set(r.error, (errors.get(r.error) || 0) + 1);
  for (const [error, n] of errors) console.error(`client.js: ${n} clients failed: ${error}`);
  return ok.length === opts.count ? 0 : 1;
}

const opts = parseArgs(process.argv.slice(2));

// A hard bound on the whole run, whatever happens.
setTimeout(() => {
  console.error("client.js: timed out");
  process.exit(1);
}, opts.timeoutMs + opts.upgradeWaitMs + 2000).unref();

main(opts).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`client.js: ${err.stack || err}`);
    process.exit(1);
  },
);
