package module

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
	"github.com/caddy-socketio/caddy-socketio/selection"
)

const openPacket = `0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`

// testPolicy is the socketio selection policy as Caddy provisions it,
// with a fallback that always picks the first upstream, and a handle on
// the process's store, where it keeps its pins.
type testPolicy struct {
	*selection.SocketIOSelection
	store *store.Handle
}

func newTestPolicy(t testing.TB) *testPolicy {
	t.Helper()
	return provisionPolicy(t, &selection.SocketIOSelection{FallbackRaw: json.RawMessage(`{"policy":"first"}`)})
}

// provisionPolicy provisions p as Caddy does and opens a handle on the
// store it uses; both are released when the test ends.
func provisionPolicy(t testing.TB, p *selection.SocketIOSelection) *testPolicy {
	t.Helper()
	return provisionPolicyIn(t, caddy.Context{Context: context.Background()}, p)
}

// provisionPolicyIn is provisionPolicy in a context derived from parent.
func provisionPolicyIn(t testing.TB, parent caddy.Context, p *selection.SocketIOSelection) *testPolicy {
	t.Helper()
	ctx, cancel := caddy.NewContext(parent)
	t.Cleanup(cancel)
	if err := p.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Cleanup() })
	st, err := store.Acquire(memory.ProcessKey, memory.Open)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return &testPolicy{SocketIOSelection: p, store: st}
}

// pin pins sid to dial, as a handshake answered by dial would.
func (p *testPolicy) pin(sid, dial string) { p.store.Pin(sid, dial, 0) }

// pins counts the pins of the store.
func (p *testPolicy) pins() int { return p.store.Stats().Pins }

func testHandler(t *testing.T) *Handler {
	t.Helper()
	h := &Handler{Path: DefaultPath, Cookie: DefaultCookie, MaxBody: DefaultMaxBody, MaxBodyMemory: DefaultMaxBodyMemory, logger: zap.NewNop()}
	h.pathNoTail = strings.TrimSuffix(h.Path, "/")
	return h
}

func testPool(dials ...string) reverseproxy.UpstreamPool {
	var pool reverseproxy.UpstreamPool
	for _, d := range dials {
		pool = append(pool, &reverseproxy.Upstream{Dial: d, Host: new(reverseproxy.Host)})
	}
	return pool
}

// newRequest builds a request with the context Caddy's server gives one.
func newRequest(method, target, clientIP string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	vars := map[string]any{caddyhttp.ClientIPVarKey: clientIP}
	return r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))
}

// fakeProxy stands in for reverse_proxy: it asks the policy for an
// upstream, then writes the response it was given in chunks.
type fakeProxy struct {
	policy reverseproxy.Selector
	pool   reverseproxy.UpstreamPool
	status int
	chunks []string
	chosen *reverseproxy.Upstream
	called bool
}

func (p *fakeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	p.called = true
	if p.policy != nil {
		p.chosen = p.policy.Select(p.pool, r, w)
	}
	w.WriteHeader(p.status)
	for _, c := range p.chunks {
		if _, err := w.Write([]byte(c)); err != nil {
			return err
		}
		http.NewResponseController(w).Flush()
	}
	return nil
}

// watchingWriter records the response and runs onFirstByte when the first
// body byte reaches it.
type watchingWriter struct {
	*httptest.ResponseRecorder
	onFirstByte       func()
	flushesBeforeBody int
	sawByte           bool
}

func (w *watchingWriter) Write(p []byte) (int, error) {
	if !w.sawByte && len(p) > 0 {
		w.sawByte = true
		if w.onFirstByte != nil {
			w.onFirstByte()
		}
	}
	return w.ResponseRecorder.Write(p)
}

func (w *watchingWriter) Flush() {
	if !w.sawByte {
		w.flushesBeforeBody++
	}
	w.ResponseRecorder.Flush()
}

// lookupDials returns the upstreams the pins of sid route to (tombstones
// left out).
func (p *testPolicy) lookupDials(sid string) []string {
	var buf [store.MaxOwners]store.Owner
	var out []string
	for _, o := range p.store.Lookup(sid, buf[:0]) {
		if !o.Gone {
			out = append(out, o.Dial)
		}
	}
	return out
}

func TestHandlerRefuses(t *testing.T) {
	h := testHandler(t)
	tests := []struct {
		name    string
		target  string
		headers map[string]string
	}{
		{"fail/repeated sid", "/socket.io/?EIO=4&transport=polling&sid=a&sid=b", nil},
		{"fail/repeated transport", "/socket.io/?EIO=4&transport=polling&transport=websocket&sid=a", nil},
		{"fail/empty sid", "/socket.io/?EIO=4&transport=polling&sid=", nil},
		{"fail/oversize sid", "/socket.io/?EIO=4&transport=polling&sid=" + strings.Repeat("a", 10_000), nil},
		{"fail/sid with NUL", "/socket.io/?EIO=4&transport=polling&sid=a%00b", nil},
		{"fail/bad EIO", "/socket.io/?EIO=four&transport=polling", nil},
		{"fail/h2c upgrade", "/socket.io/?EIO=4&transport=polling", map[string]string{"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings", "HTTP2-Settings": "AAMAAABkAAQAoAAAAAIAAAAA"}},
		{"fail/h2c upgrade on websocket transport", "/socket.io/?EIO=4&transport=websocket", map[string]string{"Upgrade": "h2c", "Connection": "Upgrade"}},
		{"fail/websocket upgrade on polling", "/socket.io/?EIO=4&transport=polling&sid=abc", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}},
		{"fail/path without trailing slash", "/socket.io?EIO=4&transport=polling&sid=a&sid=b", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(http.MethodGet, tt.target, "10.0.0.1")
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			next := &fakeProxy{status: 200}
			err := h.ServeHTTP(httptest.NewRecorder(), r, next)
			var herr caddyhttp.HandlerError
			if !errors.As(err, &herr) || herr.StatusCode != http.StatusBadRequest {
				t.Fatalf("ServeHTTP error = %v, want a 400 HandlerError", err)
			}
			if next.called {
				t.Fatal("a refused request reached the next handler")
			}
		})
	}
	t.Run("ok/outside the path nothing is refused", func(t *testing.T) {
		r := newRequest(http.MethodGet, "/api/items?sid=a&sid=b&EIO=x", "10.0.0.1")
		r.Header.Set("Upgrade", "h2c")
		next := &fakeProxy{status: 200}
		if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil || !next.called {
			t.Fatalf("err = %v, next called = %v", err, next.called)
		}
	})
	t.Run("ok/custom path", func(t *testing.T) {
		h := &Handler{Path: "/chat/io/", logger: zap.NewNop(), pathNoTail: "/chat/io"}
		next := &fakeProxy{status: 200}
		err := h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, "/chat/io/?EIO=4&transport=polling&sid=a&sid=b", "10.0.0.1"), next)
		if err == nil || next.called {
			t.Fatalf("custom path not guarded: err = %v", err)
		}
		next = &fakeProxy{status: 200}
		err = h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling&sid=a&sid=b", "10.0.0.1"), next)
		if err != nil || !next.called {
			t.Fatalf("default path guarded by a handler configured for another: err = %v", err)
		}
	})
}

func TestHandlerNormalizesUpgrade(t *testing.T) {
	h := testHandler(t)
	const ws = "/socket.io/?EIO=4&transport=websocket&sid=abc"
	tests := []struct {
		name           string
		proto          int
		method         string
		headers        map[string]string
		wantConnection string
		wantUpgrade    string
	}{
		{"ok/extra connection tokens kept", 1, "GET", map[string]string{"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"}, "keep-alive, Upgrade", "websocket"},
		{"ok/upgrade token dropped from connection", 1, "GET", map[string]string{"Connection": "keep-alive", "Upgrade": "websocket"}, "keep-alive, Upgrade", "websocket"},
		{"ok/no connection header", 1, "GET", map[string]string{"Upgrade": "websocket"}, "Upgrade", "websocket"},
		// issue 10, items 7 and 8: the hop-by-hop list is kept, and a
		// request that does not ask to switch protocols is not made to
		{"ok/hop-by-hop list kept", 1, "GET", map[string]string{"Connection": "Upgrade, X-Hop", "Upgrade": "websocket", "X-Hop": "secret"}, "Upgrade, X-Hop", "websocket"},
		{"ok/upgrade token added to the list", 1, "GET", map[string]string{"Connection": "keep-alive, X-Hop", "Upgrade": "websocket"}, "keep-alive, X-Hop, Upgrade", "websocket"},
		{"ok/no upgrade asked: no 101 made up", 1, "GET", map[string]string{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}, "", ""},
		{"ok/connection close: no upgrade made up", 1, "GET", map[string]string{"Connection": "close", "Upgrade": "websocket", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}, "close", "websocket"},
		{"ok/plain GET left alone", 1, "GET", nil, "", ""},
		{"ok/http2 extended CONNECT left alone", 2, "CONNECT", map[string]string{":protocol": "websocket"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(tt.method, ws, "10.0.0.1")
			r.ProtoMajor = tt.proto
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			next := &fakeProxy{status: 200}
			if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(r.Header.Values("Connection"), ", "); got != tt.wantConnection {
				t.Errorf("Connection = %q, want %q", got, tt.wantConnection)
			}
			if got := r.Header.Get("Upgrade"); got != tt.wantUpgrade {
				t.Errorf("Upgrade = %q, want %q", got, tt.wantUpgrade)
			}
		})
	}
}

func TestHandlerLearnsBeforeReleasing(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("a:1", "b:1")

	// the handshake is placed on b:1 (the fake proxy offers only b:1)
	chunks := []string{openPacket[:30], openPacket[30:]}
	next := &fakeProxy{policy: policy, pool: pool[1:], status: 200, chunks: chunks}
	rec := &watchingWriter{ResponseRecorder: httptest.NewRecorder()}
	var pinnedAtFirstByte []string
	rec.onFirstByte = func() { pinnedAtFirstByte = policy.lookupDials("lv_VI97HAXpY6yYWAAAC") }

	r := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling&t=abc", "10.0.0.7")
	if err := h.ServeHTTP(rec, r, next); err != nil {
		t.Fatal(err)
	}
	if rec.Body.String() != openPacket {
		t.Fatalf("client got %q, want the backend's bytes %q", rec.Body.String(), openPacket)
	}
	if len(pinnedAtFirstByte) != 1 || pinnedAtFirstByte[0] != "b:1" {
		t.Fatalf("pin when the first byte reached the client: %v, want [b:1]", pinnedAtFirstByte)
	}
	if rec.flushesBeforeBody != 0 {
		t.Errorf("%d flushes reached the client before the body: the status line left before the pin", rec.flushesBeforeBody)
	}

	// the session's next request goes to b:1 from an address that
	// client-IP hashing sends to a:1
	poll := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling&sid=lv_VI97HAXpY6yYWAAAC", addressHashingTo(t, pool, 0))
	if got := policy.Select(pool, poll, nil); got != pool[1] {
		t.Fatalf("session request routed to %v, want b:1", got)
	}
}

func TestHandlerPassesThrough(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("a:1")
	tests := []struct {
		name   string
		policy reverseproxy.Selector
		status int
		body   string
	}{
		{"ok/no socketio policy", nil, 200, `0{"sid":"passThroughNoPolicy0"}`},
		{"ok/error status", policy, 403, `{"code":4,"message":"Forbidden"}`},
		{"ok/not an open packet", policy, 200, "<html>maintenance</html>"},
		{"ok/socket.io connect packet", policy, 200, `40{"sid":"notTheEngineSid00000"}`},
		{"ok/open packet beyond the cap", policy, 200, `0{"sid":"capped00000000000000","x":"` + strings.Repeat("y", 10_000) + `"}`},
		{"ok/empty body", policy, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := policy.pins()
			next := &fakeProxy{policy: tt.policy, pool: pool, status: tt.status, chunks: []string{tt.body}}
			if len(tt.body) > 100 {
				next.chunks = []string{tt.body[:100], tt.body[100:5000], tt.body[5000:]}
			}
			rec := httptest.NewRecorder()
			r := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling", "10.0.0.1")
			if err := h.ServeHTTP(rec, r, next); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.status || rec.Body.String() != tt.body {
				t.Fatalf("client got %d %q, want %d %q", rec.Code, trunc(rec.Body.String()), tt.status, trunc(tt.body))
			}
			if after := policy.pins(); after != before {
				t.Fatalf("pins went from %d to %d", before, after)
			}
		})
	}
}

func TestHandlerReadFrom(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("c:1")
	const body = `0{"sid":"readFromPath00000000","upgrades":[]}`
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		policy.Select(pool, r, w)
		w.WriteHeader(200)
		_, err := io.Copy(w, strings.NewReader(body))
		return err
	})
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling", "10.0.0.1"), next); err != nil {
		t.Fatal(err)
	}
	if rec.Body.String() != body {
		t.Fatalf("body %q", rec.Body.String())
	}
	if got := policy.lookupDials("readFromPath00000000"); len(got) != 1 || got[0] != "c:1" {
		t.Fatalf("pins = %v, want [c:1]", got)
	}
}

func TestHandlerDropsDisownedPins(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("a:1", "b:1")
	tests := []struct {
		name     string
		status   int
		body     string
		wantPins int
	}{
		{"ok/session unknown drops", 400, `{"code":1,"message":"Session ID unknown"}`, 0},
		{"ok/bad request keeps", 400, `{"code":3,"message":"Bad request"}`, 1},
		{"ok/success keeps", 200, "ok", 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sid := "disown" + strings.Repeat("x", 10) + string(rune('a'+i))
			policy.pin(sid, "b:1")
			next := &fakeProxy{policy: policy, pool: pool, status: tt.status, chunks: []string{tt.body}}
			rec := httptest.NewRecorder()
			r := newRequest(http.MethodPost, "/socket.io/?EIO=4&transport=polling&sid="+sid, "10.0.0.1")
			if err := h.ServeHTTP(rec, r, next); err != nil {
				t.Fatal(err)
			}
			if next.chosen != pool[1] {
				t.Fatalf("routed to %v, want the owner b:1", next.chosen)
			}
			if rec.Body.String() != tt.body {
				t.Fatalf("body %q", rec.Body.String())
			}
			if got := policy.lookupDials(sid); len(got) != tt.wantPins {
				t.Fatalf("pins after %d %s: %v, want %d", tt.status, tt.body, got, tt.wantPins)
			}
		})
	}
}

// addressHashingTo returns a client address that client-IP hashing maps
// to pool[want].
func addressHashingTo(t *testing.T, pool reverseproxy.UpstreamPool, want int) string {
	t.Helper()
	for i := 1; i < 255; i++ {
		ip := fmt.Sprintf("10.9.0.%d", i)
		if selection.Hash(selectionPool(pool), ip) == want {
			return ip
		}
	}
	t.Fatal("no address hashes to the wanted upstream")
	return ""
}

// selectionPool describes a Caddy pool to the policy's routing rules.
func selectionPool(pool reverseproxy.UpstreamPool) selection.Pool[*reverseproxy.Upstream] {
	return selection.Pool[*reverseproxy.Upstream]{
		Upstreams: pool,
		Dial:      func(u *reverseproxy.Upstream) string { return u.Dial },
		Available: func(u *reverseproxy.Upstream) bool { return u.Available() },
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// v3Packet frames an ASCII packet as protocol v3 text does.
func v3Packet(p string) string { return fmt.Sprintf("%d:%s", len(p), p) }

func TestHandlerLearnsEveryFraming(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("a:1")
	gz := func(s string) string {
		var b strings.Builder
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return b.String()
	}
	tests := []struct {
		name      string
		headers   map[string]string
		body      string
		wantSID   string
		wantPin   bool
		wantBytes string
	}{
		{name: "ok/v3 text", body: v3Packet(`0{"sid":"framingV3text0000000A","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}`) + "2:40", wantSID: "framingV3text0000000A", wantPin: true},
		{name: "ok/gzip", headers: map[string]string{"Content-Encoding": "gzip"}, body: gz(`0{"sid":"framingGzip000000000B"}`), wantSID: "framingGzip000000000B", wantPin: true},
		{name: "ok/jsonp", body: `___eio[0]("0{\"sid\":\"framingJSONP00000000C\"}");`, wantSID: "framingJSONP00000000C", wantPin: true},
		{name: "ok/cookie when the body is unreadable", headers: map[string]string{"Content-Encoding": "br", "Set-Cookie": "io=framingCookie0000000D; Path=/; HttpOnly; SameSite=Lax"}, body: "\x0b\x02\x80opaque", wantSID: "framingCookie0000000D", wantPin: true},
		{name: "ok/body wins over cookie", headers: map[string]string{"Set-Cookie": "io=framingStaleCookie00E"}, body: `0{"sid":"framingBodyWins00000E"}`, wantSID: "framingBodyWins00000E", wantPin: true},
		{name: "fail/cookie with another name", headers: map[string]string{"Content-Encoding": "br", "Set-Cookie": "session=framingOtherCookie00F"}, body: "\x0b\x02\x80opaque", wantSID: "framingOtherCookie00F"},
		{name: "fail/cookie with a bad sid", headers: map[string]string{"Content-Encoding": "br", "Set-Cookie": "io=bad%26sid"}, body: "\x0b\x02\x80opaque", wantSID: "bad%26sid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				policy.Select(pool, r, w)
				for k, v := range tt.headers {
					w.Header().Set(k, v)
				}
				w.WriteHeader(200)
				_, err := w.Write([]byte(tt.body))
				return err
			})
			rec := httptest.NewRecorder()
			if err := h.ServeHTTP(rec, newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling", "10.0.0.1"), next); err != nil {
				t.Fatal(err)
			}
			if rec.Body.String() != tt.body {
				t.Fatalf("client got %q, want the backend's bytes", rec.Body.String())
			}
			pinned := len(policy.lookupDials(tt.wantSID)) == 1
			if pinned != tt.wantPin {
				t.Fatalf("pinned %q = %v, want %v", tt.wantSID, pinned, tt.wantPin)
			}
		})
	}
}

func TestHandlerRefusesExtendedConnect(t *testing.T) {
	h := testHandler(t)
	tests := []struct {
		name     string
		proto    int
		protoStr string
		target   string
		header   string
		refused  bool
	}{
		{"fail/h2 websocket on polling", 2, "HTTP/2.0", "/socket.io/?EIO=4&transport=polling&sid=abc", "websocket", true},
		{"fail/h2 other protocol", 2, "HTTP/2.0", "/socket.io/?EIO=4&transport=websocket&sid=abc", "connect-udp", true},
		{"fail/h3 other protocol", 3, "connect-udp", "/socket.io/?EIO=4&transport=websocket&sid=abc", "", true},
		{"ok/h2 websocket", 2, "HTTP/2.0", "/socket.io/?EIO=4&transport=websocket&sid=abc", "websocket", false},
		{"ok/h3 websocket", 3, "websocket", "/socket.io/?EIO=4&transport=websocket&sid=abc", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(http.MethodConnect, tt.target, "10.0.0.1")
			r.ProtoMajor, r.Proto = tt.proto, tt.protoStr
			if tt.header != "" {
				r.Header[":protocol"] = []string{tt.header}
			}
			next := &fakeProxy{status: 200}
			err := h.ServeHTTP(httptest.NewRecorder(), r, next)
			if refused := err != nil; refused != tt.refused || next.called == tt.refused {
				t.Fatalf("err = %v, next called = %v; want refused = %v", err, next.called, tt.refused)
			}
		})
	}
}

// failingBody delivers some bytes, then fails, as a request body with bad
// chunked framing or a client that hangs up does.
type failingBody struct{ sent bool }

func (b *failingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "4"), nil
	}
	return 0, errors.New("malformed chunked encoding")
}

func (b *failingBody) Close() error { return nil }

func TestHandlerReadsPostBodies(t *testing.T) {
	h := testHandler(t)
	h.MaxBody = 1000
	policy := newTestPolicy(t)
	pool := testPool("a:1")
	policy.pin("postBody000000000000", "a:1")
	const target = "/socket.io/?EIO=4&transport=polling&sid=postBody000000000000"

	t.Run("ok/body reaches the backend whole, with its length", func(t *testing.T) {
		r := newRequest(http.MethodPost, target, "10.0.0.1")
		r.Body = io.NopCloser(strings.NewReader(`42["chat","hello"]`))
		r.ContentLength = -1 // chunked
		var got, replayed []byte
		var gotLen int64
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			policy.Select(pool, r, w)
			gotLen = r.ContentLength
			got, _ = io.ReadAll(r.Body)
			// Go's transport replays a POST through GetBody when a
			// kept-alive connection closed under it
			if r.GetBody == nil {
				t.Error("no GetBody: the transport cannot retry the POST")
			} else if body, err := r.GetBody(); err != nil {
				t.Errorf("GetBody: %v", err)
			} else {
				replayed, _ = io.ReadAll(body)
			}
			w.WriteHeader(200)
			_, err := w.Write([]byte("ok"))
			return err
		})
		if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
			t.Fatal(err)
		}
		if string(got) != `42["chat","hello"]` || gotLen != int64(len(got)) {
			t.Fatalf("backend got %q with ContentLength %d", got, gotLen)
		}
		if string(replayed) != string(got) {
			t.Fatalf("GetBody replayed %q, want %q", replayed, got)
		}
	})
	tests := []struct {
		name   string
		body   io.ReadCloser
		status int
	}{
		{"fail/body the client cannot deliver", &failingBody{}, http.StatusBadRequest},
		{"fail/body over max_body", io.NopCloser(strings.NewReader(strings.Repeat("x", 1001))), http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(http.MethodPost, target, "10.0.0.1")
			r.Body = tt.body
			next := &fakeProxy{policy: policy, pool: pool, status: 200}
			err := h.ServeHTTP(httptest.NewRecorder(), r, next)
			var herr caddyhttp.HandlerError
			if !errors.As(err, &herr) || herr.StatusCode != tt.status {
				t.Fatalf("err = %v, want a %d HandlerError", err, tt.status)
			}
			if next.called {
				t.Fatal("the request reached the backend")
			}
		})
	}
}

func TestHandlerNoResponse(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("a:1")
	// reverse_proxy writes nothing when an upstream answers a polling
	// request with a 101 it was not asked for
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		policy.Select(pool, r, w)
		return nil
	})
	err := h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling", "10.0.0.1"), next)
	var herr caddyhttp.HandlerError
	if !errors.As(err, &herr) || herr.StatusCode != http.StatusBadGateway {
		t.Fatalf("err = %v, want 502", err)
	}
}

func TestHandlerPassesNonEngineIOUnderPath(t *testing.T) {
	h := testHandler(t)
	next := &fakeProxy{status: 200}
	r := newRequest(http.MethodGet, "/socket.io/socket.io.js?sid=a&sid=b", "10.0.0.1")
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil || !next.called {
		t.Fatalf("err = %v, next called = %v: a non-Engine.IO request under the path was refused", err, next.called)
	}
}

// TestPolicyRereadsRewrittenQuery: the policy reuses the query the handler
// parsed only while the request still carries it; a query rewritten
// between the two (by another handler) is routed by what it says now.
func TestPolicyRereadsRewrittenQuery(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("a:1", "b:1")
	policy.pin("originalSid000000000", "a:1")
	policy.pin("rewrittenSid00000000", "b:1")
	r := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling&sid=originalSid000000000", "10.0.0.1")
	var got *reverseproxy.Upstream
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		r.URL.RawQuery = "EIO=4&transport=polling&sid=rewrittenSid00000000"
		got = policy.Select(pool, r, w)
		w.WriteHeader(http.StatusOK)
		return nil
	})
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Dial != "b:1" {
		t.Fatalf("rewritten request went to %v, want b:1 (the owner of the sid it now carries)", got)
	}
}
