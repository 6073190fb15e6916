#!/usr/bin/env node
// eio-raw.js - one hand-made Engine.IO long-polling session, request by request,
// used by the Go integration tests to check where each request of a session lands.
//
// Sequence (all on one session, every request on a new TCP connection):
//   1. handshake   GET  <path>?EIO=<v>&transport=polling[&j=0]         -> sid
//   2. preflight   OPTIONS <path>?EIO=<v>&transport=polling&sid=<sid>  x --preflights
//                  (Origin + Access-Control-Request-Method: POST + Access-Control-Request-Headers)
//   3. post        POST ...&sid=<sid>  EIO=4: "40" (socket.io CONNECT to "/");
//                  EIO=3: "1:2" (an engine.io ping: socket.io 2 / allowEIO3 servers
//                  connect "/" by themselves, a second "40" would add a second socket)
//   4. poll        GET  ...&sid=<sid>  (answers at once: the CONNECT ack / hello / pong)
//   5. close       POST ...&sid=<sid>  engine.io close packet ("1" / "1:1"), unless --no-close
// With --jsonp every URL carries &j=0, GET answers are ___eio[0]("...");, and the
// POST bodies are form encoded "d=<payload>" (what engine.io-client 3's JSONP
// transport sends).
//
// stdout: exactly one JSON line, {"event":"result", ...} (see README.md). Exit 0
// whenever the run completes (assert on the JSON), 2 for a bad command line.
"use strict";

const http = require("http");
const https = require("https");
const zlib = require("zlib");

const { parseFlags } = require("./cli-flags");

const FLAGS = {
  url: { type: "string", def: null, help: "server or proxy URL, e.g. http://127.0.0.1:9080 (required)" },
  path: { type: "string", def: "/socket.io/", help: "engine.io path" },
  "local-address": { type: "string", def: null, help: "source address of every request" },
  preflights: { type: "int", def: 3, help: "CORS preflight OPTIONS requests after the handshake" },
  eio: { type: "string", def: "4", help: "Engine.IO protocol: 4, or 3 (socket.io 2 servers, v4 servers with allowEIO3)" },
  jsonp: { type: "bool", def: false, help: "JSONP polling (&j=0)" },
  origin: { type: "string", def: "http://eio-raw.test", help: "Origin header of the preflights (and of the other requests)" },
  "accept-encoding": { type: "string", def: null, help: "send this Accept-Encoding (e.g. gzip, deflate); bodies are decoded" },
  "timeout-ms": { type: "int", def: 5000, help: "per-request timeout" },
  "no-close": { type: "bool", def: false, help: "leave the session open (no close packet)" },
  "body-max": { type: "int", def: 300, help: "report at most this many characters of each (decoded) body" },
  help: { type: "bool", def: false, help: "show this help" },
};

function parseArgs(argv) {
  const { args: out, usage } = parseFlags("eio-raw", FLAGS, argv);
  if (!out.url) usage("--url is required");
  if (out.eio !== "3" && out.eio !== "4") usage("--eio must be 3 or 4");
  if (out.preflights > 1000) usage("--preflights must be <= 1000");
  if (out["timeout-ms"] < 1) usage("--timeout-ms must be >= 1");
  return { args: out, usage };
}

const { args, usage } = parseArgs(process.argv.slice(2));
let base;
try {
  base = new URL(args.url);
} catch (e) {
  usage(`bad --url: ${e.message}`);
}
if (base.protocol !== "http:" && base.protocol !== "https:") usage("--url must be http or https");
const EIO = Number(args.eio);
const PATH = args.path.replace(/\/$/, "") + "/";
const TIMEOUT = args["timeout-ms"];

// Everything is bounded: a watchdog covers every request plus slack.
const WATCHDOG_MS = (args.preflights + 5) * (TIMEOUT + 100) + 5000;
const T0 = Date.now();
const requests = [];
let sid = null;
let resultPrinted = false;

function println(obj) {
  if (resultPrinted) return;
  resultPrinted = true;
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(0));
}

const watchdog = setTimeout(() => {
  println(buildResult(`watchdog fired after ${WATCHDOG_MS} ms`));
}, WATCHDOG_MS);
watchdog.unref();

function queryFor(withSid) {
  let q = `EIO=${EIO}&transport=polling&t=${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  if (args.jsonp) q += "&j=0";
  if (withSid) q += `&sid=${encodeURIComponent(sid)}`;
  return `${PATH}?${q}`;
}

function decodeBody(buf, encoding) {
  const enc = (encoding || "").toLowerCase().trim();
  if (!enc || enc === "identity") return buf;
  if (enc === "gzip" || enc === "x-gzip") return zlib.gunzipSync(buf);
  if (enc === "deflate") {
    try {
      return zlib.inflateSync(buf);
    } catch (_) {
      return zlib.inflateRawSync(buf);
    }
  }
  if (enc === "br") return zlib.brotliDecompressSync(buf);
  throw new Error(`unknown Content-Encoding ${encoding}`);
}

// One HTTP request on its own connection. Resolves with a record, never rejects.
function doRequest(kind, method, path, body, extraHeaders) {
  return new Promise((resolve) => {
    const rec = { kind, method, status: null, node: null, ms: null };
    const started = Date.now();
    const headers = Object.assign({ Accept: "*/*", Origin: args.origin }, extraHeaders || {});
    if (args["accept-encoding"] !== null) headers["Accept-Encoding"] = args["accept-encoding"];
    let payload = null;
    if (body !== null && body !== undefined) {
      payload = Buffer.from(body, "utf8");
      headers["Content-Length"] = payload.length;
    }
    const mod = base.protocol === "https:" ? https : http;
    const opts = {
      protocol: base.protocol,
      hostname: base.hostname.replace(/^\[|\]$/g, ""),
      port: base.port || (base.protocol === "https:" ? 443 : 80),
      path,
      method,
      headers,
      agent: false,
    };
    if (base.protocol === "https:") {
      opts.rejectUnauthorized = false; // test certificates
      opts.servername = base.hostname;
    }
    if (args["local-address"]) opts.localAddress = args["local-address"];
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      rec.ms = Date.now() - started;
      if (err) rec.error = err;
      requests.push(rec);
      resolve(rec);
    };
    const req = mod.request(opts, (res) => {
      rec.status = res.statusCode;
      rec.node = res.headers["x-sio-node"] || null;
      if (res.headers["content-encoding"]) rec.contentEncoding = res.headers["content-encoding"];
      if (res.headers["content-type"]) rec.contentType = res.headers["content-type"];
      if (res.headers["set-cookie"]) rec.setCookie = res.headers["set-cookie"].map((c) => c.split(";")[0]);
      if (res.headers["access-control-allow-origin"]) rec.allowOrigin = res.headers["access-control-allow-origin"];
      const chunks = [];
      let size = 0;
      res.on("data", (c) => {
        size += c.length;
        if (size <= 1 << 20) chunks.push(c); // cap what we keep
      });
      res.on("end", () => {
        try {
          rec.rawBytes = size;
          const buf = decodeBody(Buffer.concat(chunks), res.headers["content-encoding"]);
          rec.bodyBinary = /octet-stream/.test(res.headers["content-type"] || "");
          rec.fullBody = rec.bodyBinary ? buf.toString("latin1") : buf.toString("utf8");
          rec.body = rec.fullBody.slice(0, args["body-max"]);
        } catch (e) {
          rec.error = `decode: ${e.message}`;
        }
        finish(null);
      });
      res.on("error", (e) => finish(`response: ${e.message}`));
    });
    req.setTimeout(TIMEOUT, () => {
      req.destroy(new Error(`timeout after ${TIMEOUT} ms`));
    });
    req.on("error", (e) => finish(e.message));
    if (payload) req.write(payload);
    req.end();
  });
}

// ---- Engine.IO payload parsing ---------------------------------------------

// JSONP answer: ___eio[N]("<JSON string literal>");
function unwrapJsonp(text) {
  const m = /^___eio\[\d*\]\(([\s\S]*)\);\s*$/.exec(text);
  if (!m) throw new Error("not a JSONP answer");
  return JSON.parse(m[1]);
}

// Returns the packets (strings) of a polling payload.
function parsePayload(text, binary) {
  if (EIO === 4) return text.split("\x1e");
  const packets = [];
  if (binary) {
    // \x00 <one byte per decimal digit> \xff <packet>  (latin1 view of the bytes)
    let i = 0;
    while (i < text.length) {
      const isString = text.charCodeAt(i) === 0;
      i++;
      let len = "";
      while (i < text.length && text.charCodeAt(i) !== 255) len += String(text.charCodeAt(i++));
      i++;
      const n = Number(len);
      const p = text.slice(i, i + n);
      packets.push(isString ? Buffer.from(p, "latin1").toString("utf8") : p);
      i += n;
    }
    return packets;
  }
  // <length in UTF-16 code units>:<packet>...
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(":", i);
    if (colon < 0) throw new Error("bad v3 payload");
    const n = Number(text.slice(i, colon));
    if (!Number.isFinite(n)) throw new Error("bad v3 payload length");
    packets.push(text.slice(colon + 1, colon + 1 + n));
    i = colon + 1 + n;
  }
  return packets;
}

function packetsOf(rec) {
  let text = rec.fullBody;
  if (text === undefined) return [];
  if (args.jsonp) text = unwrapJsonp(text);
  return parsePayload(text, rec.bodyBinary && !args.jsonp);
}

// Engine.IO payload of a POST: v3 frames the packets with their length.
function frame(packets) {
  if (EIO === 4) return packets.join("\x1e");
  return packets.map((p) => `${p.length}:${p}`).join("");
}
function postBody(packets) {
  const data = frame(packets);
  if (!args.jsonp) return { body: data, headers: { "Content-Type": "text/plain;charset=UTF-8" } };
  // engine.io-client 3's JSONP transport escapes newlines and posts a form field "d"
  const escaped = data.replace(/\\n/g, "\\\\n").replace(/\n/g, "\\n");
  return {
    body: "d=" + encodeURIComponent(escaped),
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  };
}

function buildResult(error) {
  const nodes = {};
  for (const r of requests) if (r.node) nodes[r.node] = (nodes[r.node] || 0) + 1;
  const handshakeNode = requests.length ? requests[0].node : null;
  const answered = requests.filter((r) => r.status !== null);
  const sameNode =
    requests.length > 0 && answered.length === requests.length && requests.every((r) => r.node && r.node === handshakeNode);
  const statuses = {};
  for (const r of requests) {
    const k = `${r.kind}:${r.status === null ? "error" : r.status}`;
    statuses[k] = (statuses[k] || 0) + 1;
  }
  const failing = requests.filter((r) => r.status === null || r.status >= 400 || r.error);
  return {
    event: "result",
    url: args.url,
    eio: EIO,
    jsonp: args.jsonp,
    sid,
    handshakeNode,
    nodes,
    sameNode,
    statuses,
    ok: !error && !!sid && sameNode && failing.length === 0,
    error: error || (failing.length ? `${failing.length} request(s) failed or answered >= 400` : null),
    requests: requests.map((r) => {
      const o = Object.assign({}, r);
      delete o.fullBody;
      delete o.bodyBinary;
      return o;
    }),
    durationMs: Date.now() - T0,
  };
}

async function main() {
  // 1. handshake
  const hs = await doRequest("handshake", "GET", queryFor(false), null);
  if (hs.status !== 200) return println(buildResult(`handshake answered ${hs.status === null ? hs.error : hs.status}`));
  try {
    const open = packetsOf(hs)[0] || "";
    if (open[0] !== "0") throw new Error(`first packet is not an open packet: ${JSON.stringify(open.slice(0, 40))}`);
    const info = JSON.parse(open.slice(1));
    sid = info.sid;
    if (typeof sid !== "string" || !sid) throw new Error("open packet without sid");
    hs.packets = packetsOf(hs).map((p) => p.slice(0, 80));
  } catch (e) {
    return println(buildResult(`handshake body: ${e.message}`));
  }

  // 2. preflights
  for (let k = 0; k < args.preflights; k++) {
    await doRequest("preflight", "OPTIONS", queryFor(true), null, {
      "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": "content-type",
    });
  }

  // 3. POST: EIO=4 socket.io CONNECT, EIO=3 a ping (see the header comment)
  const first = postBody(EIO === 4 ? ["40"] : ["2"]);
  const post = await doRequest("post", "POST", queryFor(true), first.body, first.headers);
  post.sent = EIO === 4 ? "40" : "2";

  // 4. GET poll: there is something to read at once (CONNECT ack + hello / pong)
  const poll = await doRequest("poll", "GET", queryFor(true), null);
  try {
    if (poll.status === 200) poll.packets = packetsOf(poll).map((p) => p.slice(0, 80));
  } catch (e) {
    poll.parseError = e.message;
  }

  // 5. close packet
  if (!args["no-close"]) {
    const c = postBody(["1"]);
    const close = await doRequest("close", "POST", queryFor(true), c.body, c.headers);
    close.sent = "1";
  }
  println(buildResult(null));
}

process.stdout.on("error", (err) => {
  if (err && err.code === "EPIPE") process.exit(0);
  throw err;
});

main().catch((err) => {
  process.stderr.write(`eio-raw: script error: ${(err && err.stack) || err}\n`);
  process.exit(1);
});
