package module

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/selection"
	"github.com/caddy-socketio/caddy-socketio/selection/engineio"
	"github.com/caddy-socketio/caddy-socketio/selection/pins"
)

// exchangeVar is the request variable through which the socketio handler
// hands a request's exchange to the socketio policy of the same route.
// Select receives a clone of the request that shares its context, so what
// it writes there is visible to the handler when the response comes back:
// exactly the upstream chosen, including on retries, where Select runs
// again and overwrites it.
const exchangeVar = "socketio.exchange"

// exchangeFrom returns the exchange the handler attached to r, if any.
func exchangeFrom(r *http.Request) *exchange {
	ex, _ := caddyhttp.GetVar(r.Context(), exchangeVar).(*exchange)
	return ex
}

type learnKind uint8

const (
	// learnHandshake: a polling handshake; the response carries the sid.
	learnHandshake learnKind = iota + 1
	// learnSession: a polling request of a session; a 400 "Session ID
	// unknown" from the owner means the pin is stale.
	learnSession
)

// exchange is a response writer that watches one Engine.IO response on
// behalf of the policy that routed its request. It is allocated once per
// observed request and doubles as the request variable.
//
// For a handshake it holds back the status and body until it has read the
// sid from the open packet and pinned it: the client sends its next
// requests within a millisecond of reading the body, in parallel, so the
// pin must exist before the first byte is released.
type exchange struct {
	caddyhttp.ResponseWriterWrapper

	handler *Handler
	req     *http.Request
	kind    learnKind
	// the request's Engine.IO query as the handler parsed it (its SID is
	// the session of a learnSession), and the raw query it parsed, so that
	// the policy need not parse it again
	query    engineio.Query
	rawQuery string

	// set by SocketIOSelection.Select
	policy   *SocketIOSelection
	upstream *reverseproxy.Upstream
	route    selection.Route

	status      int
	wroteHeader bool
	holding     bool   // status and body held back (handshake)
	watching    bool   // reading an error body (session)
	encoding    string // the held response's Content-Encoding
	cookieSID   string // the sid in the held response's Set-Cookie, if any
	buf         []byte // held or watched body prefix
	small       [64]byte

	// a POST's body, read whole before proxying
	body    requestBody
	bodyBuf *pooledBody
	// limits the read of body; a field so that io.LimitReader's
	// allocation does not add to every polling POST
	bodyLimit io.LimitedReader
}

// requestBody is a request body read into memory.
type requestBody struct{ bytes.Reader }

// Close implements io.Closer.
func (*requestBody) Close() error { return nil }

// pooledBody is a POST body's buffer, recycled across requests, with the
// request's GetBody made once per buffer rather than once per POST.
type pooledBody struct {
	bytes.Buffer
	getBody func() (io.ReadCloser, error)
}

// bodyBuffers recycles the buffers of POST bodies; most are a few bytes.
var bodyBuffers = sync.Pool{New: func() any {
	b := new(pooledBody)
	b.getBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b.Bytes())), nil
	}
	return b
}}

// maxPooledBody bounds the buffers kept for reuse, so that one large POST
// does not pin its buffer in the pool.
const maxPooledBody = 64 << 10

// Errors of readBody.
var (
	errBodyTooLarge = errors.New("request body larger than max_body")
	errBodyRead     = errors.New("reading request body")
)

// readBody reads the request's body whole, up to limit bytes, and gives
// the request a replayable copy with its exact length. A body the client
// cannot deliver intact fails here, on the client, rather than half-way
// to the backend, where reverse_proxy would answer 502 and count a
// failure against a healthy node.
func (ex *exchange) readBody(limit int64) error {
	r := ex.req
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	buf := bodyBuffers.Get().(*pooledBody)
	buf.Reset()
	ex.bodyBuf = buf
	ex.bodyLimit = io.LimitedReader{R: r.Body, N: limit + 1}
	n, err := io.Copy(&buf.Buffer, &ex.bodyLimit)
	if err != nil {
		return fmt.Errorf("%w: %v", errBodyRead, err)
	}
	if n > limit {
		return errBodyTooLarge
	}
	ex.body.Reset(buf.Bytes())
	r.Body = &ex.body
	r.ContentLength = n
	r.TransferEncoding = nil
	// with GetBody, Go's transport may resend the POST on a fresh
	// connection when the kept-alive one it picked was closed by the
	// node at that moment (Node's keepAliveTimeout is 5 s), which it
	// never does for a body it cannot replay (the buffer is not reused
	// before the request is done, so neither is its GetBody)
	r.GetBody = buf.getBody
	return nil
}

// releaseBody returns the body's buffer for reuse once the request is done.
func (ex *exchange) releaseBody() {
	if ex.bodyBuf == nil {
		return
	}
	if ex.bodyBuf.Cap() <= maxPooledBody {
		bodyBuffers.Put(ex.bodyBuf)
	}
	ex.bodyBuf = nil
}

func newExchange(h *Handler, w http.ResponseWriter, r *http.Request, kind learnKind, q engineio.Query) *exchange {
	ex := &exchange{handler: h, req: r, kind: kind, query: q, rawQuery: r.URL.RawQuery}
	ex.ResponseWriter = w
	ex.buf = ex.small[:0]
	return ex
}

// WriteHeader holds back a handshake's 200 until the sid is pinned and
// starts watching a session's 400; anything else passes through.
func (ex *exchange) WriteHeader(status int) {
	if status >= 100 && status <= 199 {
		ex.ResponseWriter.WriteHeader(status)
		return
	}
	if ex.wroteHeader {
		return
	}
	ex.wroteHeader = true
	ex.status = status
	switch {
	case ex.kind == learnHandshake && status == http.StatusOK && ex.policy != nil && ex.upstream != nil:
		ex.holding = true
		header := ex.Header()
		ex.encoding = header.Get("Content-Encoding")
		ex.cookieSID = cookieValue(header, ex.handler.Cookie)
		return
	case ex.kind == learnHandshake && status == http.StatusOK:
		ex.handler.warnNoPolicy()
	case ex.kind == learnSession && status == http.StatusBadRequest && ex.route == selection.RouteOwner:
		ex.watching = true
	}
	ex.ResponseWriter.WriteHeader(status)
}

func (ex *exchange) Write(p []byte) (int, error) {
	if !ex.wroteHeader {
		ex.WriteHeader(http.StatusOK)
	}
	switch {
	case ex.holding:
		kept := min(len(p), engineio.MaxHandshakeBytes-len(ex.buf))
		ex.buf = append(ex.buf, p[:kept]...)
		sid, err := engineio.HandshakeSID(ex.buf, ex.encoding, false)
		if errors.Is(err, engineio.ErrIncomplete) && kept == len(p) && len(ex.buf) < engineio.MaxHandshakeBytes {
			return len(p), nil
		}
		ex.learn(sid, err)
		if err := ex.release(); err != nil {
			return 0, err
		}
		if kept < len(p) {
			n, err := ex.ResponseWriter.Write(p[kept:])
			return kept + n, err
		}
		return len(p), nil
	case ex.watching:
		ex.buf = appendCapped(ex.buf, p, cap(ex.small))
	}
	return ex.ResponseWriter.Write(p)
}

// ReadFrom keeps the bytes going through Write: the embedded wrapper's
// ReadFrom would hand them straight to the underlying writer.
func (ex *exchange) ReadFrom(r io.Reader) (int64, error) {
	if !ex.holding && !ex.watching {
		return ex.ResponseWriterWrapper.ReadFrom(r)
	}
	return io.Copy(writerOnly{ex}, r)
}

// FlushError does not flush a held handshake (that would send the status
// line before the sid is pinned); reverse_proxy flushes through
// http.ResponseController, which calls this first.
func (ex *exchange) FlushError() error {
	if ex.holding {
		return nil
	}
	return http.NewResponseController(ex.ResponseWriter).Flush()
}

// errNoResponse: the chain returned without answering, which Go's server
// would turn into an empty 200 the client reads as a broken session; Caddy
// does so when an upstream answers a polling request with an unrequested
// 101 Switching Protocols.
var errNoResponse = errors.New("upstream gave no response to an Engine.IO polling request")

// finish ends the exchange after the handler chain returned: a body that
// ended before the learner could decide is judged whole and released.
func (ex *exchange) finish() error {
	if !ex.wroteHeader {
		if ex.kind == learnHandshake {
			if c := ex.handler.logger.Check(zapcore.DebugLevel, "handshake response not learned"); c != nil {
				c.Write(zap.Error(errNoResponse))
			}
		}
		return caddyhttp.Error(http.StatusBadGateway, errNoResponse)
	}
	switch {
	case ex.holding:
		sid, err := engineio.HandshakeSID(ex.buf, ex.encoding, true)
		ex.learn(sid, err)
		return ex.release()
	case ex.watching:
		ex.watching = false
		if engineio.IsSessionUnknown(ex.buf) && ex.policy.drop(ex.query.SID, ex.upstream) {
			if c := ex.handler.logger.Check(zapcore.DebugLevel, "upstream no longer knows the session; pin dropped"); c != nil {
				c.Write(zap.String("upstream", ex.upstream.Dial), zap.String("sid", ex.query.SID))
			}
		}
	}
	return nil
}

// learn pins the sid read from a handshake response, or says why not.
// The body is the authority; the session cookie (engine.io's `cookie`
// option) is the second source, for bodies the learner cannot read.
func (ex *exchange) learn(sid string, err error) {
	logger := ex.handler.logger
	if err != nil && ex.cookieSID != "" {
		sid, err = ex.cookieSID, nil
	}
	if err != nil {
		if c := logger.Check(zapcore.DebugLevel, "handshake response not learned"); c != nil {
			c.Write(zap.String("upstream", ex.upstream.Dial), zap.Error(err), zap.Int("bytes", len(ex.buf)))
		}
		return
	}
	result := ex.policy.pin(sid, ex.upstream, ex.req)
	switch result {
	case pins.Collided:
		ex.handler.noteCollision(ex.upstream.Dial)
	case pins.Refused:
		logger.Warn("Engine.IO session id already pinned to too many upstreams; not pinned",
			zap.String("upstream", ex.upstream.Dial), zap.Int("max_owners", pins.MaxOwners))
	}
	if c := logger.Check(zapcore.DebugLevel, "learned session"); c != nil {
		c.Write(zap.String("upstream", ex.upstream.Dial), zap.String("sid", sid), zap.Uint8("result", uint8(result)))
	}
}

// release writes the held status and body and stops holding.
func (ex *exchange) release() error {
	ex.holding = false
	ex.ResponseWriter.WriteHeader(ex.status)
	if len(ex.buf) == 0 {
		return nil
	}
	_, err := ex.ResponseWriter.Write(ex.buf)
	return err
}

// cookieValue returns the value of the Set-Cookie named name in header,
// if it is a usable sid.
func cookieValue(header http.Header, name string) string {
	if name == "" {
		return ""
	}
	for _, line := range header["Set-Cookie"] {
		c, err := http.ParseSetCookie(line)
		if err == nil && c.Name == name && engineio.ValidSID(c.Value) {
			return c.Value
		}
	}
	return ""
}

func appendCapped(buf, p []byte, limit int) []byte {
	if room := limit - len(buf); room < len(p) {
		p = p[:max(room, 0)]
	}
	return append(buf, p...)
}

// writerOnly hides every method but Write, so that io.Copy cannot find
// ReadFrom again.
type writerOnly struct{ io.Writer }
