#!/usr/bin/python3
# sio-python.py - one Socket.IO v4 server node built on python-socketio (asyncio,
# aiohttp), the same contract as sio-node.js. Used by the Go integration tests.
#
# Needs Debian's python3-socketio (5.7.x), python3-engineio (4.3.x) and
# python3-aiohttp, so run it with Debian's interpreter: /usr/bin/python3
# (a pyenv/venv python on PATH does not see /usr/lib/python3/dist-packages).
#
# Configuration (environment variables):
#   PORT        (required) TCP port; 0 picks a free port (reported in the
#               "listening" line).
#   HOST        (default 127.0.0.1) address to bind.
#   NODE_NAME   (required) name reported to clients and in /__stats.
#   SIO_OPTIONS (optional) JSON object, socket.io (Node) option names:
#               pingInterval, pingTimeout (ms), transports, path, cookie
#               (bool, string or {name,path,...}), allowUpgrades,
#               maxHttpBufferSize, httpCompression (bool or {threshold}),
#               cors ({origin, credentials}). Unknown keys are ignored
#               (listed once on stderr).
#   SIO_SID_MODE (optional) how engine.io session ids are minted: "random"
#               (default, python-engineio's own), "sequential" ("1", "2", ... per
#               process: every node mints the same ids) or "fixed:<prefix>"
#               ("<prefix>1", "<prefix>2", ...), as sio-node.js.
#   EXIT_ON_STDIN_CLOSE (optional) "1": exit when stdin reaches EOF.
#
# Behaviour, /__stats, /__reset, /__health: see README.md (section sio-python.py).
# Prints exactly one line on stdout once listening:
#   {"event":"listening","node":"<NODE_NAME>","port":<port>}
# Exits 0 on SIGTERM / SIGINT.

import asyncio
import contextvars
import datetime
import json
import os
import signal
import sys
import threading
import urllib.parse

try:
    import engineio
    import engineio.asyncio_socket
    import socketio
    from aiohttp import web
except ImportError as exc:  # pragma: no cover
    sys.stderr.write(
        "sio-python: %s (needs Debian packages python3-socketio python3-engineio "
        "python3-aiohttp; run with /usr/bin/python3)\n" % exc)
    sys.exit(2)


def fatal(msg):
    sys.stderr.write("sio-python: %s\n" % msg)
    sys.stderr.flush()
    os._exit(2)


NODE_NAME = os.environ.get("NODE_NAME", "")
HOST = os.environ.get("HOST") or "127.0.0.1"
PORT_RAW = os.environ.get("PORT", "")
if not NODE_NAME:
    fatal("NODE_NAME is required")
if not PORT_RAW.isdigit():
    fatal("PORT is required (integer, 0 = pick a free port)")
PORT = int(PORT_RAW)

OPTIONS = {}
if os.environ.get("SIO_OPTIONS"):
    try:
        OPTIONS = json.loads(os.environ["SIO_OPTIONS"])
    except ValueError as exc:
        fatal("SIO_OPTIONS is not valid JSON: %s" % exc)
    if not isinstance(OPTIONS, dict):
        fatal("SIO_OPTIONS must be a JSON object")

SID_MODE = os.environ.get("SIO_SID_MODE") or "random"
SID_PREFIX = None  # None = python-engineio's random ids
if SID_MODE == "sequential":
    SID_PREFIX = ""
elif SID_MODE.startswith("fixed:"):
    SID_PREFIX = SID_MODE[len("fixed:"):]
    if not all(c.isascii() and (c.isalnum() or c in "_-") for c in SID_PREFIX):
        fatal("SIO_SID_MODE fixed:<prefix>: prefix must match [A-Za-z0-9_-]*")
elif SID_MODE != "random":
    fatal("SIO_SID_MODE must be random, sequential or fixed:<prefix>, got %s" % SID_MODE)

# ---------------------------------------------------------------------------
# Options: socket.io (Node) names -> python-socketio / python-engineio kwargs
# ---------------------------------------------------------------------------
KNOWN_OPTIONS = {"pingInterval", "pingTimeout", "transports", "path", "cookie",
                 "allowUpgrades", "maxHttpBufferSize", "httpCompression", "cors"}
unknown = sorted(set(OPTIONS) - KNOWN_OPTIONS)
if unknown:
    sys.stderr.write("sio-python: ignoring unsupported SIO_OPTIONS keys: %s\n"
                     % ", ".join(unknown))

sio_kwargs = {
    "async_mode": "aiohttp",
    # send the CONNECT packet before the connect handler runs, so that "hello"
    # follows it (as with Node's socket.io)
    "always_connect": True,
    # Node's socket.io answers any Origin unless `cors` is set: disable
    # python-engineio's same-origin check and its CORS headers by default.
    "cors_allowed_origins": [],
    "monitor_clients": True,
}
if "pingInterval" in OPTIONS:
    sio_kwargs["ping_interval"] = float(OPTIONS["pingInterval"]) / 1000.0
if "pingTimeout" in OPTIONS:
    sio_kwargs["ping_timeout"] = float(OPTIONS["pingTimeout"]) / 1000.0
transports = OPTIONS.get("transports")
if transports is not None:
    if isinstance(transports, str):
        transports = [transports]
    sio_kwargs["transports"] = list(transports)
    if "websocket" not in transports:
        # python-engineio would still advertise the upgrade (and then reject it)
        sio_kwargs["allow_upgrades"] = False
if "allowUpgrades" in OPTIONS and not OPTIONS["allowUpgrades"]:
    sio_kwargs["allow_upgrades"] = False
if "maxHttpBufferSize" in OPTIONS:
    sio_kwargs["max_http_buffer_size"] = int(OPTIONS["maxHttpBufferSize"])
comp = OPTIONS.get("httpCompression")
if comp is False:
    sio_kwargs["http_compression"] = False
elif isinstance(comp, dict):
    sio_kwargs["http_compression"] = True
    if "threshold" in comp:
        sio_kwargs["compression_threshold"] = int(comp["threshold"])
cookie = OPTIONS.get("cookie")
if cookie is True:
    sio_kwargs["cookie"] = {"name": "io", "Path": "/", "HttpOnly": True,
                            "SameSite": "Lax"}
elif isinstance(cookie, str) and cookie:
    sio_kwargs["cookie"] = cookie
elif isinstance(cookie, dict):
    c = dict(cookie)
    c.setdefault("name", "io")
    c.setdefault("path", "/")
    # python-engineio writes attribute names as given, value True = flag
    if "httpOnly" in c:
        if c.pop("httpOnly"):
            c["HttpOnly"] = True
    c = {k: (v if v is True else str(v)) for k, v in c.items() if v is not False}
    sio_kwargs["cookie"] = c
cors = OPTIONS.get("cors")
if isinstance(cors, dict) and "origin" in cors:
    origin = cors["origin"]
    sio_kwargs["cors_allowed_origins"] = "*" if origin in ("*", True) else origin
    sio_kwargs["cors_credentials"] = bool(cors.get("credentials", False))

# python-engineio only serves the exact path "/<path>/"
PATH_BASE = "/" + str(OPTIONS.get("path") or "/socket.io").strip("/")
SIO_PATH = PATH_BASE + "/"

# ---------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------
RECENT_ERRORS_MAX = 50


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def new_stats():
    def tri():
        return {"total": 0, "withSid": 0, "withoutSid": 0}
    return {
        "since": now_iso(),
        "handshakes": 0,
        "ioConnections": 0,
        "ioDisconnections": 0,
        "disconnectReasons": {},
        "engineCloses": 0,
        "engineCloseReasons": {},
        "upgrades": 0,
        "upgradesByTransport": {},
        "echoes": 0,
        "connectionErrors": {"total": 0, "byCode": {}, "byMessage": {},
                             "recent": []},
        "requests": {
            "total": 0, "withSid": 0, "withoutSid": 0, "withCookieHeader": 0,
            "withAcceptEncoding": 0, "acceptEncodings": {},
            "byMethod": {}, "withSidByMethod": {}, "withoutSidByMethod": {},
            "polling": tri(), "websocket": tri(),
        },
        "compressedResponses": 0,
        "compressedResponsesByEncoding": {},
        "compressedHandshakes": 0,
        "handshakeCookies": 0,
        "setCookieResponses": 0,
        "otherRequests": 0,
        "remoteAddresses": {},
        "pollingRemoteAddresses": {},
        "websocketRemoteAddresses": {},
        "handshakeAddresses": {},
    }


stats = new_stats()


def inc(d, key, n=1):
    d[key] = d.get(key, 0) + n


# the aiohttp request being handled (each request runs in its own task)
current_request = contextvars.ContextVar("current_request", default=None)


def is_upgrade(request):
    return request.headers.get("Upgrade", "").lower() == "websocket"


# python-engineio's _log_error_once keys -> engine.io error codes
ERROR_KEY_CODES = {
    "bad-transport": 0,   # Transport unknown
    "bad-sid": 1,         # Session ID unknown ("Invalid session <sid>")
    "bad-upgrade": 3,     # Bad request
    "bad-jsonp-index": 3,
    "bad-origin": 4,      # Forbidden (python-engineio answers 400)
    "bad-version": 5,     # Unsupported protocol version
}


def count_connection_error(code, message):
    ce = stats["connectionErrors"]
    ce["total"] += 1
    inc(ce["byCode"], str(code))
    inc(ce["byMessage"], message)
    req = current_request.get()
    ce["recent"].append({
        "code": code,
        "message": message,
        "method": req.method if req is not None else None,
        "url": req.path_qs if req is not None else None,
        "remoteAddress": req.remote if req is not None else None,
        "upgrade": bool(req is not None and is_upgrade(req)),
    })
    if len(ce["recent"]) > RECENT_ERRORS_MAX:
        ce["recent"].pop(0)


class CountingEngineIOServer(engineio.AsyncServer):
    """python-engineio server that reports rejected requests and sessions."""

    _sid_counter = 0
    _minting_engine_sid = False

    async def _handle_connect(self, *args, **kwargs):
        # AsyncServer._handle_connect calls self.generate_id() before its first
        # await; python-socketio also calls eio.generate_id() for its socket ids,
        # which SIO_SID_MODE must not change.
        self._minting_engine_sid = True
        try:
            return await super()._handle_connect(*args, **kwargs)
        finally:
            self._minting_engine_sid = False

    def generate_id(self):
        if SID_PREFIX is not None and self._minting_engine_sid:
            self._minting_engine_sid = False
            self._sid_counter += 1
            return SID_PREFIX + str(self._sid_counter)
        return super().generate_id()

    def _log_error_once(self, message, message_key):
        # AsyncServer.handle_request calls this right before it answers
        # 400 text/plain "\"Invalid session <sid>\"" for a GET/POST whose sid is
        # not in self.sockets (key "bad-sid"): engine.io's code 1.
        code = ERROR_KEY_CODES.get(message_key)
        if code is not None:
            text = "Session ID unknown" if code == 1 else message
            count_connection_error(code, text)
        super()._log_error_once(message, message_key)

    async def _trigger_event(self, event, *args, **kwargs):
        if event == "connect":
            stats["handshakes"] += 1
        elif event == "disconnect":
            stats["engineCloses"] += 1
        return await super()._trigger_event(event, *args, **kwargs)


class CountingSocket(engineio.asyncio_socket.AsyncSocket):
    """Counts polling -> websocket upgrades: AsyncSocket._websocket_handler sets
    `upgraded = True` while `upgrading` is True only for a completed upgrade
    (a websocket-only session sets it with upgrading False)."""

    @property
    def upgraded(self):
        return self.__dict__.get("_upgraded", False)

    @upgraded.setter
    def upgraded(self, value):
        if value and not self.__dict__.get("_upgraded", False) and \
                getattr(self, "upgrading", False):
            stats["upgrades"] += 1
            inc(stats["upgradesByTransport"], "websocket")
        self.__dict__["_upgraded"] = value


# AsyncServer._handle_connect looks the class up on the module at call time
engineio.asyncio_socket.AsyncSocket = CountingSocket


class NodeServer(socketio.AsyncServer):
    def _engineio_server_class(self):
        return CountingEngineIOServer


sio = NodeServer(**sio_kwargs)


@sio.event
async def connect(sid, environ, auth=None):
    stats["ioConnections"] += 1
    req = environ.get("aiohttp.request")
    inc(stats["handshakeAddresses"], (req.remote if req is not None else None) or "unknown")
    await sio.emit("hello", {"node": NODE_NAME}, to=sid)


@sio.event
async def disconnect(sid):
    stats["ioDisconnections"] += 1
    # python-socketio 5.7 does not pass a reason
    inc(stats["disconnectReasons"], "unknown")


@sio.on("echo")
async def echo(sid, payload=None, *rest):
    stats["echoes"] += 1
    return {"node": NODE_NAME, "payload": payload}


# ---------------------------------------------------------------------------
# aiohttp application
# ---------------------------------------------------------------------------
bound_port = PORT


def _version(dist):
    try:
        import importlib.metadata
        return importlib.metadata.version(dist)
    except Exception:  # pragma: no cover
        return "?"


IMPLEMENTATION = "python-socketio %s, python-engineio %s, aiohttp %s" % (
    _version("python-socketio"), _version("python-engineio"), _version("aiohttp"))


def snapshot():
    s = json.loads(json.dumps(stats))
    s["node"] = NODE_NAME
    s["port"] = bound_port
    s["pid"] = os.getpid()
    s["path"] = SIO_PATH
    s["implementation"] = IMPLEMENTATION
    s["sidMode"] = SID_MODE
    s["cookieName"] = COOKIE_NAME
    # closed sessions stay in sio.eio.sockets until their next request
    s["openSessions"] = sum(1 for x in list(sio.eio.sockets.values())
                            if not x.closed and not x.closing)
    try:
        s["openSockets"] = len(sio.manager.rooms.get("/", {}).get(None, {}))
    except Exception:  # pragma: no cover
        s["openSockets"] = None
    s["remoteAddressCount"] = len(s["remoteAddresses"])
    s["pollingRemoteAddressCount"] = len(s["pollingRemoteAddresses"])
    s["websocketRemoteAddressCount"] = len(s["websocketRemoteAddresses"])
    s["handshakeAddressCount"] = len(s["handshakeAddresses"])
    return s


def json_response(status, obj):
    return web.json_response(obj, status=status, headers={
        "Cache-Control": "no-store", "X-Sio-Node": NODE_NAME})


def count_sio_request(request):
    sid = urllib.parse.parse_qs(request.query_string).get("sid")
    has_sid = bool(sid and sid[0])
    method = request.method or "UNKNOWN"
    upgrade = is_upgrade(request)
    r = stats["requests"]
    r["total"] += 1
    if "Cookie" in request.headers:
        r["withCookieHeader"] += 1
    if "Accept-Encoding" in request.headers:
        r["withAcceptEncoding"] += 1
        inc(r["acceptEncodings"], request.headers["Accept-Encoding"])
    inc(r["byMethod"], method)
    if has_sid:
        r["withSid"] += 1
        inc(r["withSidByMethod"], method)
    else:
        r["withoutSid"] += 1
        inc(r["withoutSidByMethod"], method)
    t = r["websocket"] if upgrade else r["polling"]
    t["total"] += 1
    t["withSid" if has_sid else "withoutSid"] += 1
    addr = request.remote or "unknown"
    inc(stats["remoteAddresses"], addr)
    inc(stats["websocketRemoteAddresses" if upgrade else "pollingRemoteAddresses"], addr)


@web.middleware
async def sio_middleware(request, handler):
    if request.path.startswith(SIO_PATH):
        count_sio_request(request)
        current_request.set(request)
    return await handler(request)


def engine_cookie_name():
    c = sio_kwargs.get("cookie")
    if isinstance(c, dict):
        return c.get("name") or "io"
    if isinstance(c, str) and c:
        return c
    return None


COOKIE_NAME = engine_cookie_name()


async def add_node_header(request, response):
    # on_response_prepare runs for plain responses, engine.io's error answers
    # and the websocket handshake (101) alike
    if not request.path.startswith(SIO_PATH):
        return
    response.headers["X-Sio-Node"] = NODE_NAME
    has_sid = bool(urllib.parse.parse_qs(request.query_string).get("sid"))
    handshake = not has_sid and response.status in (200, 101)
    enc = response.headers.get("Content-Encoding")
    if enc:
        stats["compressedResponses"] += 1
        inc(stats["compressedResponsesByEncoding"], enc)
        if handshake and response.status == 200:
            stats["compressedHandshakes"] += 1
    if COOKIE_NAME and any(v.strip().startswith(COOKIE_NAME + "=")
                           for v in response.headers.getall("Set-Cookie", [])):
        stats["setCookieResponses"] += 1
        if handshake:
            stats["handshakeCookies"] += 1


async def handle_stats(request):
    return json_response(200, snapshot())


async def handle_reset(request):
    global stats
    await request.read()
    stats = new_stats()
    return json_response(200, {"node": NODE_NAME, "reset": True})


async def handle_health(request):
    return json_response(200, {"node": NODE_NAME})


async def handle_other(request):
    if request.path.startswith(SIO_PATH):
        # e.g. /socket.io/socket.io.js: python-engineio serves only SIO_PATH
        return web.Response(status=404, text="not found",
                            headers={"X-Sio-Node": NODE_NAME})
    stats["otherRequests"] += 1
    return json_response(404, {"node": NODE_NAME, "error": "not found",
                               "path": request.path})


async def main():
    global bound_port
    app = web.Application(middlewares=[sio_middleware],
                          client_max_size=max(1024 ** 2, sio_kwargs.get("max_http_buffer_size", 0)))
    app.on_response_prepare.append(add_node_header)
    sio.attach(app, socketio_path=PATH_BASE.strip("/"))
    app.router.add_route("GET", "/__stats", handle_stats)
    app.router.add_route("POST", "/__reset", handle_reset)
    app.router.add_route("*", "/__health", handle_health)
    app.router.add_route("*", "/{tail:.*}", handle_other)

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, PORT)
    try:
        await site.start()
    except OSError as exc:
        fatal("listen %s:%d: %s" % (HOST, PORT, exc))
    bound_port = site._server.sockets[0].getsockname()[1]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if os.environ.get("EXIT_ON_STDIN_CLOSE") == "1":
        def wait_stdin():
            try:
                while sys.stdin.buffer.read(65536):
                    pass
            except Exception:
                pass
            loop.call_soon_threadsafe(stop.set)
        threading.Thread(target=wait_stdin, daemon=True).start()

    sys.stdout.write(json.dumps({"event": "listening", "node": NODE_NAME,
                                 "port": bound_port}, separators=(",", ":")) + "\n")
    sys.stdout.flush()

    await stop.wait()
    # Never hang on shutdown (long-polls, websocket sessions): 1 s at most.
    threading.Timer(1.0, lambda: os._exit(0)).start()
    # Close every engine.io session (CLOSE packet, ends pending long-polls)
    # without waiting for the queues to drain, then stop the HTTP server.
    async def close_sessions():
        for s in list(sio.eio.sockets.values()):
            try:
                await s.close(wait=False)
            except Exception:
                pass
    try:
        await asyncio.wait_for(close_sessions(), 0.3)
    except Exception:
        pass
    try:
        await asyncio.wait_for(runner.shutdown(), 0.2)
        await asyncio.wait_for(runner.cleanup(), 0.3)
    except Exception:
        pass
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
