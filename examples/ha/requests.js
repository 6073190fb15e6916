#!/usr/bin/env node
// requests.js - read the Caddy instances' access logs (JSON) and print
// which instance served which request of each Engine.IO session (in the
// order the requests ended: the access log writes an entry at the end).
//
//   node examples/ha/requests.js NAME=ACCESS_LOG [NAME=ACCESS_LOG ...]
//
// A handshake has no sid yet, so handshakes are counted per instance; every
// later request (a poll, a POST, the WebSocket upgrade) names its session.
// Exit status: 0, or 1 when no Engine.IO request was logged.
"use strict";

const fs = require("fs");

const MAX_SESSIONS_SHOWN = 40;

const args = process.argv.slice(2);
if (args.length === 0 || args.some((a) => !a.includes("="))) {
  console.error("usage: requests.js NAME=ACCESS_LOG [NAME=ACCESS_LOG ...]");
  process.exit(2);
}

const perInstance = new Map(); // name -> { requests, handshakes }
const sessions = new Map(); // sid -> [{ ts, instance, kind }]
for (const arg of args) {
  const [name, file] = [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)];
  const counts = { requests: 0, handshakes: 0 };
  perInstance.set(name, counts);
  let text = "";
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    console.error(`requests.js: ${name}: ${err.message}`);
    continue;
  }
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let entry;
    try {
      entry = JSON.parse(line);
    } catch {
      continue;
    }
    const req = entry.request || {};
    let url;
    try {
      url = new URL(req.uri || "", "http://x");
    } catch {
      continue;
    }
    if (!url.searchParams.has("EIO")) continue;
    counts.requests++;
    const sid = url.searchParams.get("sid");
    if (!sid) {
      counts.handshakes++;
      continue;
    }
    const kind = url.searchParams.get("transport") === "websocket" ? "WS" : req.method === "POST" ? "POST" : "GET";
    if (!sessions.has(sid)) sessions.set(sid, []);
    sessions.get(sid).push({ ts: entry.ts || 0, instance: name, kind });
  }
}

const total = [...perInstance.values()].reduce((n, c) => n + c.requests, 0);
if (total === 0) {
  console.error("requests.js: no Engine.IO request in the access logs");
  process.exit(1);
}
console.log(
  "Engine.IO requests per instance: " +
    [...perInstance].map(([name, c]) => `${name} ${c.requests} (${c.handshakes} handshakes)`).join(", "),
);

let crossed = 0;
const lines = [];
for (const [sid, reqs] of sessions) {
  reqs.sort((a, b) => a.ts - b.ts);
  const instances = new Set(reqs.map((r) => r.instance));
  if (instances.size > 1) crossed++;
  lines.push(`  ${sid}: ${reqs.map((r) => `${r.kind} ${r.instance}`).join(", ")}`);
}
console.log(`Requests of each session after its handshake, in the order they ended (${sessions.size} sessions):`);
for (const l of lines.slice(0, MAX_SESSIONS_SHOWN)) console.log(l);
if (lines.length > MAX_SESSIONS_SHOWN) console.log(`  ... and ${lines.length - MAX_SESSIONS_SHOWN} more`);
console.log(`${crossed} of ${sessions.size} sessions had requests served by more than one instance.`);
