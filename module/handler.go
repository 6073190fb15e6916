// Package module is the `socketio` HTTP handler (http.handlers.socketio)
// and the admin API module (admin.api.socketio) of caddy-socketio.
//
// handler.go and caddyfile.go are the handler; response.go watches the
// responses it learns from (a handshake's sid, a "Session ID unknown");
// body.go reads polling POST bodies before they are proxied; admin.go
// serves GET /socketio/sessions. What the handler tells the selection
// policy goes through internal/handoff.
package module

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/http/httpguts"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-socketio/caddy-socketio/internal/engineio"
	"github.com/caddy-socketio/caddy-socketio/internal/homecookie"
	"github.com/caddy-socketio/caddy-socketio/internal/metrics"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// DefaultPath is where Engine.IO servers and clients expect the protocol
// (Socket.IO's default `path` option).
const DefaultPath = "/socket.io/"

// DefaultMaxBody is engine.io's default maxHttpBufferSize: the largest
// polling POST body a server accepts.
const DefaultMaxBody = 1_000_000

// DefaultMaxBodyMemory is the default of Handler.MaxBodyMemory: 32 bodies
// of the largest size, or tens of thousands of usual ones.
const DefaultMaxBodyMemory = 32 << 20

// DefaultReconnectCookie is the default name of the reconnect hint
// cookie (Handler.ReconnectCookie).
const DefaultReconnectCookie = "io_home"

// reconnectCookieMaxAge is how long a browser keeps the reconnect hint:
// it only matters for reconnects, which come within minutes.
const reconnectCookieMaxAge = 24 * 60 * 60

// DefaultCookie is the name of engine.io's session cookie (its `cookie`
// option's default name).
const DefaultCookie = "io"

// Handler prepares Engine.IO (Socket.IO) requests for a load-balanced
// reverse_proxy and teaches the `socketio` selection policy which upstream
// owns each session. It must run in the same route as, and before,
// `reverse_proxy` with `lb_policy socketio`.
//
// It judges Engine.IO requests under Path: those whose query names EIO
// and the polling or websocket transport. For them it:
//
//   - refuses (400) requests whose Engine.IO parameters are ambiguous or
//     malformed: a repeated sid, EIO or transport; an empty, oversized or
//     non-printable sid; a non-numeric EIO;
//   - refuses (400) a body on a request that carries none by protocol
//     (handshakes, polls, CORS preflights, upgrades), and a POST that is
//     not a polling request of a session; on HTTP/2 and HTTP/3, where a
//     body of unknown length cannot be told from none without waiting,
//     such a request reaches the backend without its body;
//   - reads each polling POST body whole (up to MaxBody, within
//     MaxBodyMemory for the whole process) before proxying it, so that
//     a body the client cannot deliver intact fails here (400) instead of
//     half-way to the backend, where a 502 would count against the node;
//   - refuses (400) any `Upgrade` other than WebSocket (e.g. `h2c`), and
//     WebSocket upgrades on a request that does not ask for the websocket
//     transport; the same goes for the :protocol of HTTP/2 and HTTP/3
//     extended CONNECT;
//   - on HTTP/1.x requests that ask for a WebSocket (`Upgrade: websocket`
//     without `Connection: close`), sets `Upgrade: websocket` and adds the
//     `Upgrade` token to Connection when a middlebox dropped it, keeping
//     every other token, so that reverse_proxy proxies the upgrade and
//     still strips the hop-by-hop headers the client listed;
//   - reads the session id from every polling handshake response (protocol
//     v3 or v4, text, binary or JSONP framing, plain, gzip or deflate, or
//     else the `io` cookie) and pins it to the upstream the policy chose,
//     before the first byte of the response reaches the client;
//   - drops a pin when its owner answers a request of the session with
//     engine.io's 400 "Session ID unknown".
//
// Everything else (requests outside Path; under it, the client bundle,
// an application's own requests, transports that HTTP does not carry such
// as webtransport) passes through unjudged and unchanged, except that an
// error reading its body is reported to reverse_proxy as the client's, so
// that it neither retries the request nor counts a failure against the
// upstream: one client's broken body must not take a node out of the pool
// whatever the path.
type Handler struct {
	// The path prefix of the Engine.IO endpoint, as configured on the
	// servers and clients (`path` option). A request to the path without
	// its trailing slash also matches (clients with addTrailingSlash:
	// false). Default: `/socket.io/`.
	Path string `json:"path,omitempty"`

	// The name of the session cookie engine.io sets on handshake
	// responses when its `cookie` option is on. The handler reads the sid
	// from it when it cannot read the handshake body (a compression it
	// does not decode, a framing it does not know). Default: `io`.
	Cookie string `json:"cookie,omitempty"`

	// The largest body of a polling POST, in bytes. The handler reads
	// each POST body whole before proxying it: a client whose body is
	// malformed (bad chunked framing, cut short) then gets 400 here,
	// instead of a 502 that passive health checks would count against
	// the session's node, and a body over this size gets 413. Match the
	// servers' maxHttpBufferSize. Default: 1MB (engine.io's default).
	MaxBody int64 `json:"max_body,omitempty"`

	// The most memory, in bytes, that polling POST bodies held for
	// checking (see max_body) may use at once in the whole process. A
	// POST whose body would go beyond it is answered 503 with
	// `Retry-After: 1`, and engine.io clients retry it on a new session:
	// this only happens when thousands of bodies are in flight at once,
	// or when clients send bodies slowly on purpose. Pair it with the
	// server's `read_body` timeout. The bytes of bodies beyond their
	// first 4KiB may use three quarters of it, so that a few clients
	// stalling large bodies cannot make every usual POST fail. When
	// several handlers set different values, each admits a body while the
	// process holds less than its own value. Default: 32MiB.
	MaxBodyMemory int64 `json:"max_body_memory,omitempty"`

	// The name of a cookie that sends a client's reconnects home (off
	// when empty). Each polling handshake answer sets it (Path: the
	// Engine.IO path; HttpOnly; SameSite=Lax; Secure on HTTPS; a day
	// long) to a token naming the upstream that served it, and the
	// client's next handshake that carries it goes back to that upstream
	// if it is available and not draining, instead of to the fallback.
	// Socket.IO's connection state recovery with the in-memory adapter
	// needs exactly that, while `fallback least_conn` places new clients.
	// The token is an HMAC of the upstream's dial address: it reveals no
	// address and cannot be forged. Requests of a session are routed by
	// sid, never by the cookie. The Caddyfile's `reconnect_cookie` without
	// a name uses `io_home`.
	ReconnectCookie string `json:"reconnect_cookie,omitempty"`

	// The key of the reconnect hint's tokens. Caddy instances that share
	// clients (behind DNS or an L4 balancer) must share it, e.g. as
	// `{env.SIO_RECONNECT_SECRET}` (placeholders are replaced when the
	// configuration loads). Default: a random key per Caddy process,
	// kept across config reloads.
	ReconnectSecret string `json:"reconnect_secret,omitempty"`

	logger     *zap.Logger
	pathNoTail string
	hint       *homecookie.Hint

	warnPolicy     sync.Once
	warnCollision  sync.Once
	warnBodyMemory sync.Once
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.socketio",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Path == "" {
		h.Path = DefaultPath
	}
	if h.Cookie == "" {
		h.Cookie = DefaultCookie
	}
	if h.MaxBody == 0 {
		h.MaxBody = DefaultMaxBody
	}
	if h.MaxBodyMemory == 0 {
		h.MaxBodyMemory = DefaultMaxBodyMemory
	}
	h.pathNoTail = strings.TrimSuffix(h.Path, "/")
	if h.ReconnectCookie != "" {
		h.hint = homecookie.New(caddy.NewReplacer().ReplaceAll(h.ReconnectSecret, ""))
	}
	if err := metrics.Register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	return nil
}

// Validate checks the handler's settings.
func (h *Handler) Validate() error {
	if !strings.HasPrefix(h.Path, "/") {
		return fmt.Errorf("path must start with '/': %q", h.Path)
	}
	if h.MaxBody < 0 {
		return fmt.Errorf("max_body must not be negative: %d", h.MaxBody)
	}
	if h.MaxBodyMemory < 0 {
		return fmt.Errorf("max_body_memory must not be negative: %d", h.MaxBodyMemory)
	}
	if h.ReconnectCookie != "" {
		if err := (&http.Cookie{Name: h.ReconnectCookie, Value: "x"}).Valid(); err != nil {
			return fmt.Errorf("reconnect_cookie: invalid cookie name %q: %v", h.ReconnectCookie, err)
		}
		if h.ReconnectCookie == h.Cookie {
			return fmt.Errorf("reconnect_cookie %q is engine.io's session cookie (cookie)", h.ReconnectCookie)
		}
	}
	if h.MaxBodyMemory < h.MaxBody {
		return fmt.Errorf("max_body_memory (%d) must be at least max_body (%d)", h.MaxBodyMemory, h.MaxBody)
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !h.matches(r.URL.Path) {
		return h.passThrough(w, r, next)
	}
	q, err := engineio.ParseQuery(r.URL.RawQuery)
	if err != nil {
		if !engineio.ClaimsEngineIO(r.URL.RawQuery) {
			// not Engine.IO (a file under the path, say): not ours to judge
			return h.passThrough(w, r, next)
		}
		return h.refuse(w, r, err)
	}
	if !q.IsEngineIO() || q.Transport == engineio.TransportUnknown {
		return h.passThrough(w, r, next)
	}
	if err := checkBody(r, q); err != nil {
		return h.refuse(w, r, err)
	}
	if err := prepareUpgrade(r, q); err != nil {
		return h.refuse(w, r, err)
	}
	if q.Transport != engineio.TransportPolling {
		return next.ServeHTTP(w, r)
	}

	kind := learnSession
	switch {
	case q.SID == "" && r.Method == http.MethodGet:
		kind = learnHandshake
	case q.SID == "":
		return next.ServeHTTP(w, r)
	}
	ex := newExchange(h, w, r, kind, q)
	if kind == learnHandshake && h.hint != nil {
		if c, err := r.Cookie(h.ReconnectCookie); err == nil && homecookie.Valid(c.Value) {
			ex.handoff.SetHome(h.hint, c.Value)
		}
	}
	if r.Method == http.MethodPost {
		err := ex.readBody(h.MaxBody, h.MaxBodyMemory)
		defer ex.releaseBody()
		if err != nil {
			return h.refuse(w, r, err)
		}
	}
	if err := next.ServeHTTP(ex, r); err != nil {
		return err
	}
	return ex.finish()
}

// passThrough hands a request the handler does not judge to next, with
// its body (if any) marked so that an error reading it is the client's.
func (h *Handler) passThrough(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &clientBody{ReadCloser: r.Body}
	}
	return next.ServeHTTP(w, r)
}

// matches reports whether path is the Engine.IO endpoint.
func (h *Handler) matches(path string) bool {
	return strings.HasPrefix(path, h.Path) || path == h.pathNoTail
}

// Errors of checkBody and prepareUpgrade.
var (
	errBodyNotExpected     = errors.New("request body on an Engine.IO request that carries none")
	errPostNotSession      = errors.New("POST that is not a polling request of a session")
	errUpgradeNotWebSocket = errors.New("upgrade to a protocol other than websocket")
	errUpgradeNotTransport = errors.New("websocket upgrade on a request for another transport")
)

// checkBody refuses a body where Engine.IO has none. Only a polling POST
// of a session carries one (its packets); an HTTP/2 or HTTP/3 extended
// CONNECT carries the WebSocket itself.
func checkBody(r *http.Request, q engineio.Query) error {
	if r.Method == http.MethodPost {
		if q.Transport != engineio.TransportPolling || q.SID == "" {
			return errPostNotSession
		}
		return nil
	}
	if extendedConnectProtocol(r) != "" || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	switch {
	case r.ContentLength > 0:
		return errBodyNotExpected
	case r.ContentLength < 0 && r.ProtoMajor == 1:
		// chunked
		return errBodyNotExpected
	case r.ContentLength < 0:
		// HTTP/2 and HTTP/3 may not say whether a body follows the
		// headers; whatever follows never reaches the backend
		r.Body, r.ContentLength = http.NoBody, 0
	}
	return nil
}

// prepareUpgrade refuses upgrades an Engine.IO backend cannot want and
// tidies the headers of HTTP/1.x requests that ask for a WebSocket.
func prepareUpgrade(r *http.Request, q engineio.Query) error {
	if r.ProtoMajor != 1 {
		// HTTP/2 and HTTP/3 have no Upgrade: their WebSockets arrive as
		// extended CONNECT (RFC 8441, RFC 9220), which reverse_proxy
		// translates itself; the same refusals apply to its :protocol
		protocol := extendedConnectProtocol(r)
		switch {
		case protocol == "":
			return nil
		case !strings.EqualFold(protocol, "websocket"):
			return errUpgradeNotWebSocket
		case q.Transport != engineio.TransportWebSocket:
			return errUpgradeNotTransport
		}
		return nil
	}
	upgrade := r.Header["Upgrade"]
	if len(upgrade) == 0 {
		// no request to switch protocols, whatever Sec-WebSocket-*
		// headers it carries (RFC 9110 §7.8): a front proxy that strips
		// Upgrade and reuses its connection must get a plain answer
		return nil
	}
	if !httpguts.HeaderValuesContainsToken(upgrade, "websocket") {
		return errUpgradeNotWebSocket
	}
	if q.Transport != engineio.TransportWebSocket {
		return errUpgradeNotTransport
	}
	connection := r.Header["Connection"]
	if r.Method != http.MethodGet || httpguts.HeaderValuesContainsToken(connection, "close") {
		return nil
	}
	r.Header["Upgrade"] = []string{"websocket"}
	if !httpguts.HeaderValuesContainsToken(connection, "upgrade") {
		// a middlebox dropped the token; keep the others, which name
		// the hop-by-hop headers reverse_proxy must strip (RFC 9110
		// §7.6.1)
		r.Header["Connection"] = append(connection[:len(connection):len(connection)], "Upgrade")
	}
	return nil
}

// extendedConnectProtocol returns the protocol an HTTP/2 or HTTP/3
// extended CONNECT asks for: the HTTP/2 server keeps :protocol as a
// header, quic-go's HTTP/3 server puts it in Proto (as reverse_proxy
// reads them too).
func extendedConnectProtocol(r *http.Request) string {
	if r.Method != http.MethodConnect {
		return ""
	}
	if p := r.Header.Get(":protocol"); p != "" {
		return p
	}
	if r.ProtoMajor == 3 && !strings.HasPrefix(r.Proto, "HTTP/") {
		return r.Proto
	}
	return ""
}

// refuse answers 400 (413 for a body too large, 503 for a body beyond
// the memory budget) for a request that must not reach a backend.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) error {
	if c := h.logger.Check(zapcore.DebugLevel, "refused Engine.IO request"); c != nil {
		c.Write(zap.Error(err), zap.String("method", r.Method), zap.String("uri", r.RequestURI))
	}
	metrics.Refused(refusalReason(err))
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, errBodyTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, errBodyMemory):
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
		h.warnBodyMemory.Do(func() {
			h.logger.Warn("polling POST bodies held for checking reached max_body_memory; further POSTs get 503 until some finish (clients sending slowly? set the server's read_body timeout)",
				zap.Int64("max_body_memory", h.MaxBodyMemory))
		})
	}
	return caddyhttp.Error(status, err)
}

// refusalReason names err in the refused_total metric.
func refusalReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{engineio.ErrRepeatedParam, "repeated_param"},
		{engineio.ErrBadEIO, "bad_eio"},
		{engineio.ErrEmptySID, "bad_sid"},
		{engineio.ErrSIDTooLong, "bad_sid"},
		{engineio.ErrSIDInvalid, "bad_sid"},
		{errBodyNotExpected, "body_not_expected"},
		{errPostNotSession, "post_not_session"},
		{errUpgradeNotWebSocket, "upgrade_not_websocket"},
		{errUpgradeNotTransport, "upgrade_not_transport"},
		{errBodyTooLarge, "body_too_large"},
		{errBodyMemory, "body_memory"},
		{errBodyRead, "body_read"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// warnNoPolicy warns, once per handler, that a handshake went through a
// reverse_proxy whose selection policy is not socketio: nothing can be
// learned, and sessions are only as sticky as that policy makes them.
func (h *Handler) warnNoPolicy() {
	h.warnPolicy.Do(func() {
		h.logger.Warn("an Engine.IO handshake was answered without the socketio selection policy choosing its upstream; use 'lb_policy socketio' in the reverse_proxy that follows this handler")
	})
}

// noteCollision logs a sid minted by two upstreams: the first one as a
// warning, the rest at debug level, since servers with sequential ids
// collide on every handshake (the admin API counts them all).
func (h *Handler) noteCollision(upstream string) {
	warned := false
	h.warnCollision.Do(func() {
		warned = true
		h.logger.Warn("two upstreams minted the same Engine.IO session id; requests are told apart by client address (further collisions are logged at debug level and counted in the admin API's /socketio/sessions)",
			zap.String("upstream", upstream))
	})
	if !warned {
		if c := h.logger.Check(zapcore.DebugLevel, "two upstreams minted the same Engine.IO session id"); c != nil {
			c.Write(zap.String("upstream", upstream))
		}
	}
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
)
