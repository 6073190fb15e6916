package module

import (
	"errors"
	"io"
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-socketio/caddy-socketio/internal/engineio"
	"github.com/caddy-socketio/caddy-socketio/internal/handoff"
	"github.com/caddy-socketio/caddy-socketio/internal/metrics"
	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

type learnKind uint8

const (
	// learnHandshake: a polling handshake; the response carries the sid.
	learnHandshake learnKind = iota + 1
	// learnSession: a polling request of a session; a 400 "Session ID
	// unknown" from the owner means the pin is stale.
	learnSession
)

// exchange is a response writer that watches one Engine.IO response for
// what it says about the session: a handshake's sid, or the owner's
// "Session ID unknown". It is allocated once per observed request and
// holds the request's handoff.
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
	// what the handler and the policy tell each other about this request
	// (embedded here so that a request costs one allocation)
	handoff handoff.Handoff

	status      int
	wroteHeader bool
	holding     bool   // status and body held back (handshake)
	watching    bool   // reading an error body (session)
	encoding    string // the held response's Content-Encoding
	cookieSID   string // the sid in the held response's Set-Cookie, if any
	buf         []byte // held or watched body prefix
	// nextTry is the length of held body at which Write tries to read the
	// sid again after an incomplete try: twice the length of the last
	// one, so that a handshake trickled in tiny writes costs decoding
	// work linear in its size, not quadratic (each try decodes the whole
	// prefix, decompressing it again)
	nextTry int
	small   [64]byte

	// a POST's body, read whole before proxying
	held *heldBody
	body bodyReader
}

func newExchange(h *Handler, w http.ResponseWriter, r *http.Request, kind learnKind, q engineio.Query) *exchange {
	ex := &exchange{handler: h, req: r, kind: kind}
	ex.ResponseWriter = w
	ex.buf = ex.small[:0]
	handoff.Attach(&ex.handoff, r, q)
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
	case ex.kind == learnHandshake && status == http.StatusOK && ex.chosen():
		ex.holding = true
		header := ex.Header()
		if h := ex.handler; h.hint != nil {
			dial, _ := ex.handoff.Chosen()
			header.Add("Set-Cookie", (&http.Cookie{
				Name: h.ReconnectCookie, Value: h.hint.Token(dial), Path: h.Path,
				MaxAge: reconnectCookieMaxAge, HttpOnly: true, SameSite: http.SameSiteLaxMode,
				Secure: ex.req.TLS != nil,
			}).String())
		}
		ex.encoding = header.Get("Content-Encoding")
		ex.cookieSID = cookieValue(header, ex.handler.Cookie)
		return
	case ex.kind == learnHandshake && status == http.StatusOK:
		ex.handler.warnNoPolicy()
	case ex.kind == learnSession && status == http.StatusBadRequest && ex.chosen():
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
		full := kept < len(p) || len(ex.buf) >= engineio.MaxHandshakeBytes
		if !full && len(ex.buf) < ex.nextTry {
			// see nextTry: finish reads what is held at the end anyway
			return len(p), nil
		}
		sid, err := engineio.HandshakeSID(ex.buf, ex.encoding, false)
		if errors.Is(err, engineio.ErrIncomplete) && !full {
			ex.nextTry = 2 * len(ex.buf)
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
		if !engineio.IsSessionUnknown(ex.buf) {
			break
		}
		dial, _ := ex.handoff.Chosen()
		metrics.SessionUnknown(dial)
		if ex.handoff.Disown() {
			if c := ex.handler.logger.Check(zapcore.DebugLevel, "upstream no longer knows the session; pin dropped"); c != nil {
				c.Write(zap.String("upstream", dial), zap.String("sid", ex.handoff.SID()))
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
	dial, _ := ex.handoff.Chosen()
	if err != nil && ex.cookieSID != "" {
		sid, err = ex.cookieSID, nil
	}
	if err != nil {
		if c := logger.Check(zapcore.DebugLevel, "handshake response not learned"); c != nil {
			c.Write(zap.String("upstream", dial), zap.Error(err), zap.Int("bytes", len(ex.buf)))
		}
		return
	}
	result := ex.handoff.Pin(sid)
	if result == store.Pinned || result == store.Collided {
		metrics.Learned(dial)
	}
	switch result {
	case store.Collided:
		ex.handler.noteCollision(dial)
	case store.Refused:
		logger.Warn("Engine.IO session id already pinned to too many upstreams; not pinned",
			zap.String("upstream", dial), zap.Int("max_owners", store.MaxOwners))
	}
	if c := logger.Check(zapcore.DebugLevel, "learned session"); c != nil {
		c.Write(zap.String("upstream", dial), zap.String("sid", sid), zap.Uint8("result", uint8(result)))
	}
}

// chosen reports whether a socketio policy chose the request's upstream.
func (ex *exchange) chosen() bool {
	_, ok := ex.handoff.Chosen()
	return ok
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
