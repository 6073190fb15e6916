#!/usr/bin/env node
// sio-node.js - one Socket.IO server node (socket.io v4, or v2 with SIO_VERSION=2)
// used by the Go integration tests.
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
//   SIO_VERSION (optional) "4" (default: socket.io 4.8 / engine.io 6, EIO=4 and,
//              with allowEIO3, EIO=3) or "2" (socket.io 2.5 / engine.io 3.6, npm
//              alias "sio2", EIO=3 only). Same behaviour and /__stats contract.
//   SIO_STREAM_MS (optional, socket.io 4 only) every this many ms, each socket
//              gets the next number of its own stream: io.to(socket.id).emit("seq",
//              n), a broadcast, so that with connectionStateRecovery the numbers
//              sent while the client is away are replayed when it recovers. The
//              stream runs from the socket's first connection until it is closed
//              on purpose or can no longer be recovered; a recovered socket goes
//              on with its stream (on the node that holds it).
//   SIO_REDIS_URL (optional, socket.io 4 only) use @socket.io/redis-streams-adapter
//              on the Redis at this URL (redis://127.0.0.1:6379), so that any node
//              can recover any session (connectionStateRecovery); the numbered
//              stream of SIO_STREAM_MS then continues on the node that recovers it.
//   SIO_SID_MODE (optional) how engine.io session ids are minted:
//              "random" (default, engine.io's own base64id),
//              "sequential" ("1", "2", "3", ... per process: different nodes mint
//              the same ids), "fixed:<prefix>" ("<prefix>1", "<prefix>2", ...).
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

const SIO_VERSION = process.env.SIO_VERSION || "4";
if (SIO_VERSION !== "4" && SIO_VERSION !== "2") fatal(`SIO_VERSION must be 4 or 2, got ${SIO_VERSION}`);
const V2 = SIO_VERSION === "2";
// socket.io 2.x is installed under the npm alias "sio2" (see /package.json).
const createServer = V2
  ? (srv, opts) => require("sio2")(srv, opts)
  : (srv, opts) => new (require("socket.io").Server)(srv, opts);

// engine.io session ids (SIO_SID_MODE).
const SID_MODE = process.env.SIO_SID_MODE || "random";
let sidPrefix = null; // null = engine.io's random ids
if (SID_MODE === "sequential") sidPrefix = "";
else if (SID_MODE.startsWith("fixed:")) {
  sidPrefix = SID_MODE.slice("fixed:".length);
  if (!/^[A-Za-z0-9_-]*$/.test(sidPrefix)) fatal("SIO_SID_MODE fixed:<prefix>: prefix must match [A-Za-z0-9_-]*");
} else if (SID_MODE !== "random") {
  fatal(`SIO_SID_MODE must be random, sequential or fixed:<prefix>, got ${SID_MODE}`);
}

// Name of the engine.io session cookie this server sets, or null when it sets none.
// engine.io 6 (v4): off unless `cookie` is true or an object ({name} default "io").
// engine.io 3 (v2): ON by default ("io"); `cookie: false` turns it off, a string
// renames it, an object has {name}.
function engineCookieName() {
  const c = options.cookie;
  if (V2) {
    if (c === false) return null;
    if (typeof c === "string" && c) return c;
    if (c && typeof c === "object") return c.name || "io";
    return "io";
  }
  if (c === true) return "io";
  if (c && typeof c === "object") return c.name || "io";
  return null;
}
const COOKIE_NAME = engineCookieName();

// engine.io error codes and messages (same numbering in engine.io 3 and 6).
const ERROR_MESSAGES = {
  0: "Transport unknown",
  1: "Session ID unknown",
  2: "Bad handshake method",
  3: "Bad request",
  4: "Forbidden",
  5: "Unsupported protocol version",
};
function codeOfMessage(message) {
  for (const [code, m] of Object.entries(ERROR_MESSAGES)) if (m === message) return Number(code);
  return null;
}

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
      recent: [], // last RECENT_ERRORS_MAX: {code,message,method,url,remoteAddress,upgrade,...}
      // "Session ID unknown" answers to a late request of a session this node
      // minted and had already ended (a request racing its session's close):
      // the owner's own answer, not a request routed to the wrong node
      unknownSidEnded: 0,
    },
    requests: {
      // every HTTP request that reached this node with a path on the socket.io
      // path, including websocket handshakes (HTTP GET + Upgrade)
      total: 0,
      withSid: 0,
      withoutSid: 0,
      withCookieHeader: 0, // requests carrying any Cookie header
      withAcceptEncoding: 0, // requests carrying an Accept-Encoding header
      acceptEncodings: {}, // Accept-Encoding value -> count
      byMethod: {},
      withSidByMethod: {},
      withoutSidByMethod: {},
      polling: { total: 0, withSid: 0, withoutSid: 0 }, // non-upgrade requests
      websocket: { total: 0, withSid: 0, withoutSid: 0 }, // HTTP Upgrade requests
    },
    otherRequests: 0, // requests on other paths (excluding /__stats and /__reset)
    // responses on the socket.io path with a Content-Encoding (httpCompression)
    compressedResponses: 0,
    compressedResponsesByEncoding: {}, // "gzip" -> n
    compressedHandshakes: 0, // of them: polling handshake responses (no sid, 200)
    // engine.io session cookie (COOKIE_NAME, e.g. "io"): responses whose headers
    // set it; handshakeCookies = polling (200) or websocket (101) handshake
    // responses, i.e. to requests without sid
    handshakeCookies: 0,
    setCookieResponses: 0,
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
  if (req.headers["accept-encoding"] !== undefined) {
    r.withAcceptEncoding++;
    inc(r.acceptEncodings, String(req.headers["accept-encoding"]));
  }
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
  s.sioVersion = Number(SIO_VERSION);
  s.sidMode = SID_MODE;
  s.cookieName = COOKIE_NAME;
  s.openSessions = io.engine.clientsCount; // live engine.io sessions
  // live sockets in the main namespace (v4: Map, v2: plain object)
  const nspSockets = io.of("/").sockets;
  s.openSockets = nspSockets instanceof Map ? nspSockets.size : Object.keys(nspSockets).length;
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

const io = createServer(httpServer, options);
const redisClient = process.env.SIO_REDIS_URL && !V2 ? require("redis").createClient({ url: process.env.SIO_REDIS_URL }) : null;

if (sidPrefix !== null) {
  // engine.io 3 and 6 both mint ids with `this.generateId(req)` (engine.io 6 also
  // accepts a Promise); an own property overrides the prototype method.
  let sidCounter = 0;
  io.engine.generateId = () => sidPrefix + String(++sidCounter);
}

// --- error bookkeeping (shared by v4's "connection_error" and the v2 emulation) ---
// The sessions this node minted, sid -> {closedAt, reason} (closedAt null while
// open), the oldest forgotten beyond MINTED_MAX: tells a "Session ID unknown"
// answer to a request that was routed to the wrong node (a sid never minted
// here) from a late request of a session that ended here.
const MINTED_MAX = 100000;
const minted = new Map();
function noteMinted(sid) {
  minted.set(sid, { closedAt: null, reason: null });
  if (minted.size > MINTED_MAX) minted.delete(minted.keys().next().value);
}
function noteClosed(sid, reason) {
  const m = minted.get(sid);
  if (m) {
    m.closedAt = Date.now();
    m.reason = String(reason);
  }
}

function recordConnectionError(code, message, req) {
  const codeKey = code !== undefined && code !== null ? String(code) : "unknown";
  message = message || "unknown";
  const ce = stats.connectionErrors;
  ce.total++;
  inc(ce.byCode, codeKey);
  inc(ce.byMessage, message);
  const sid = req && req.url ? sidOf(req.url) : null;
  const m = sid ? minted.get(sid) : undefined;
  if (code === 1 && m && m.closedAt !== null) ce.unknownSidEnded++;
  ce.recent.push({
    code: code !== undefined ? code : null,
    message,
    method: req ? req.method : null,
    url: req ? req.url : null,
    remoteAddress: req && req.socket ? req.socket.remoteAddress : null,
    upgrade: !!(req && req.headers && req.headers.upgrade),
    at: new Date().toISOString(),
    // did this node mint the request's sid, and how long ago did it end?
    mintedHere: !!m,
    closedMsAgo: m && m.closedAt !== null ? Date.now() - m.closedAt : null,
    closeReason: m ? m.reason : null,
  });
  if (ce.recent.length > RECENT_ERRORS_MAX) ce.recent.shift();
}

function setCookieHasEngineCookie(value) {
  if (!COOKIE_NAME || value === undefined || value === null) return false;
  const list = Array.isArray(value) ? value : [value];
  return list.some((c) => String(c).trim().startsWith(COOKIE_NAME + "="));
}

// Inspect the response head of a plain (non-upgrade) socket.io-path response.
function onResponseHead(req, res) {
  const handshake = !sidOf(req.url) && res.statusCode === 200;
  const ce = res.getHeader("content-encoding");
  if (ce) {
    stats.compressedResponses++;
    inc(stats.compressedResponsesByEncoding, String(ce));
    if (handshake) stats.compressedHandshakes++;
  }
  if (setCookieHasEngineCookie(res.getHeader("set-cookie"))) {
    stats.setCookieResponses++;
    if (handshake) stats.handshakeCookies++;
  }
}

// Count every request on the socket.io path *before* engine.io handles it.
// (engine.io replaced the "request" listeners and added an "upgrade" listener
// in attach(); prepend ours so they run first.)
httpServer.prependListener("request", (req, res) => {
  if (!isSioPath(req.url)) return;
  countSioRequest(req, false);
  // Marks which node produced the response, also for engine.io error responses
  // (writeHead() merges headers set with setHeader(); since a header now exists,
  // writeHead() also stores its own headers, so getHeader() sees them below).
  res.setHeader("X-Sio-Node", NODE_NAME);
  const origWriteHead = res.writeHead;
  let headSeen = false;
  res.writeHead = function (...a) {
    const ret = origWriteHead.apply(this, a);
    if (!headSeen) {
      headSeen = true;
      try {
        onResponseHead(req, res);
      } catch (_) {
        /* never break the response */
      }
    }
    return ret;
  };
  if (V2) {
    // engine.io 3 has no "connection_error" event: read its error answers,
    // res.writeHead(400|403, {"Content-Type": "application/json"}) +
    // res.end('{"code":1,"message":"Session ID unknown"}') (sendErrorMessage).
    const origEnd = res.end;
    res.end = function (chunk, ...rest) {
      if ((res.statusCode === 400 || res.statusCode === 403) && chunk) {
        try {
          const body = JSON.parse(Buffer.isBuffer(chunk) ? chunk.toString("utf8") : String(chunk));
          if (body && typeof body === "object" && "code" in body) {
            // same message as v4's connection_error (a 403 from allowRequest carries its own text)
            const message = ERROR_MESSAGES[body.code] || (typeof body.message === "string" ? body.message : undefined);
            recordConnectionError(body.code, message, req);
          }
        } catch (_) {
          /* not an engine.io error body */
        }
      }
      return origEnd.call(this, chunk, ...rest);
    };
  }
});

// Websocket handshakes: the response is written straight to the socket (ws writes
// "HTTP/1.1 101 ...", engine.io's abort writes "HTTP/1.1 400 Bad Request ..." with
// the error message as body). Watch the first write: add X-Sio-Node when missing,
// count the cookie, and for v2 (no "connection_error") count the error.
const RE_STATUS = /^HTTP\/1\.[01] (\d{3})/;
httpServer.prependListener("upgrade", (req, socket) => {
  if (!isSioPath(req.url)) return;
  countSioRequest(req, true);
  const origWrite = socket.write;
  socket.write = function (chunk, ...rest) {
    socket.write = origWrite; // only the first write carries the response head
    try {
      const text = typeof chunk === "string" ? chunk : Buffer.isBuffer(chunk) ? chunk.toString("latin1") : null;
      const m = text && RE_STATUS.exec(text);
      if (m) {
        const status = Number(m[1]);
        const headEnd = text.indexOf("\r\n\r\n");
        const head = headEnd >= 0 ? text.slice(0, headEnd) : text;
        const lines = head.split("\r\n");
        let changed = false;
        if (!lines.some((l) => /^x-sio-node:/i.test(l))) {
          lines.splice(1, 0, `X-Sio-Node: ${NODE_NAME}`);
          changed = true;
        }
        const cookieLines = lines.filter((l) => /^set-cookie:/i.test(l)).map((l) => l.slice(l.indexOf(":") + 1));
        if (setCookieHasEngineCookie(cookieLines)) {
          stats.setCookieResponses++;
          if (status === 101 && !sidOf(req.url)) stats.handshakeCookies++;
        }
        if (V2 && status >= 400 && headEnd >= 0) {
          const message = text.slice(headEnd + 4);
          recordConnectionError(codeOfMessage(message), message, req);
        }
        if (changed) {
          const out = lines.join("\r\n") + (headEnd >= 0 ? text.slice(headEnd) : "");
          chunk = typeof chunk === "string" ? out : Buffer.from(out, "latin1");
        }
      }
    } catch (_) {
      /* never break the handshake */
    }
    return origWrite.call(this, chunk, ...rest);
  };
});
if (!V2) {
  // websocket handshake responses (the "headers" event also fires for polling
  // responses; setting the header twice is harmless).
  io.engine.on("headers", (headers) => {
    headers["X-Sio-Node"] = NODE_NAME;
  });
}

io.engine.on("connection", (conn) => {
  stats.handshakes++;
  noteMinted(conn.id);
  conn.on("close", (reason) => {
    noteClosed(conn.id, reason);
    stats.engineCloses++;
    inc(stats.engineCloseReasons, String(reason));
  });
});

if (!V2) {
  io.engine.on("connection_error", (err) => {
    recordConnectionError(err ? err.code : undefined, err && err.message, err && err.req);
  });
}

// SIO_STREAM_MS: socket id -> {n, timer, expiry}
const STREAM_MS = Number(process.env.SIO_STREAM_MS || 0);
const streams = new Map();
function streamFor(socket) {
  if (!STREAM_MS || V2) return;
  let st = streams.get(socket.id);
  if (st) {
    clearTimeout(st.expiry);
    st.socket = socket;
    return;
  }
  // a session recovered from another node (SIO_REDIS_URL) goes on from the
  // number its data was saved with
  st = { n: Number(socket.data.seq) || 0, expiry: null, socket };
  st.timer = setInterval(() => {
    st.n++;
    st.socket.data.seq = st.n;
    io.to(socket.id).emit("seq", st.n);
  }, STREAM_MS);
  streams.set(socket.id, st);
}
function endStream(id, reason) {
  const st = streams.get(id);
  if (!st) return;
  const stop = () => {
    clearInterval(st.timer);
    streams.delete(id);
  };
  // with a shared adapter, the node that recovers the session goes on
  if (reason === "client namespace disconnect" || reason === "server namespace disconnect" || redisClient) return stop();
  const csr = options.connectionStateRecovery;
  const keep = csr ? (csr.maxDisconnectionDuration || 120000) : 0;
  st.expiry = setTimeout(stop, keep);
}

io.on("connection", (socket) => {
  stats.ioConnections++;
  if (socket.recovered) stats.recovered = (stats.recovered || 0) + 1;
  streamFor(socket);
  socket.on("disconnect", (reason) => endStream(socket.id, reason));
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
function listen() {
  httpServer.listen(PORT, HOST, () => {
    boundPort = httpServer.address().port;
    process.stdout.write(
      JSON.stringify({ event: "listening", node: NODE_NAME, port: boundPort }) + "\n"
    );
  });
}
if (redisClient) {
  redisClient.on("error", (err) => process.stderr.write(`sio-node: redis: ${err.message}\n`));
  redisClient.connect().then(() => {
    io.adapter(require("@socket.io/redis-streams-adapter").createAdapter(redisClient));
    listen();
  }, (err) => fatal(`redis ${process.env.SIO_REDIS_URL}: ${err.message}`));
} else {
  listen();
}

let shuttingDown = false;
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  // Never hang on shutdown (long-polls / keep-alive connections).
  setTimeout(() => process.exit(0), 1000).unref();
  // with a shared adapter, the sessions io.close() ends are saved in Redis
  // for their recovery elsewhere: give those writes a moment
  io.close(() => (redisClient ? setTimeout(() => process.exit(0), 500) : process.exit(0)));
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
