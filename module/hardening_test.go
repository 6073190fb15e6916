package module

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The tests of this file each hold one defect an outside review found
// (issue 10); each fails on the handler as it was before the fix.

// serveStatus runs r through the handler and returns the status it
// answered (200 when next answered) and whether next was called.
func serveStatus(t *testing.T, h *Handler, r *http.Request) (int, bool) {
	t.Helper()
	next := &fakeProxy{status: 200}
	err := h.ServeHTTP(httptest.NewRecorder(), r, next)
	if err == nil {
		return 200, next.called
	}
	var herr caddyhttp.HandlerError
	if !errors.As(err, &herr) {
		t.Fatalf("ServeHTTP error %v is not a HandlerError", err)
	}
	return herr.StatusCode, next.called
}

// withBody gives r a body: a declared length, or chunked (length -1).
func withBody(r *http.Request, body string, chunked bool) *http.Request {
	r.Body = io.NopCloser(strings.NewReader(body))
	r.ContentLength = int64(len(body))
	if chunked {
		r.ContentLength = -1
		r.TransferEncoding = []string{"chunked"}
	}
	return r
}

// TestHandlerRefusesBodiesWithoutPurpose: Engine.IO requests that carry no
// body by protocol never reach a backend with one (issue 10, item 1).
func TestHandlerRefusesBodiesWithoutPurpose(t *testing.T) {
	h := testHandler(t)
	const (
		handshake = "/socket.io/?EIO=4&transport=polling"
		poll      = "/socket.io/?EIO=4&transport=polling&sid=bodyless0000000000"
		upgrade   = "/socket.io/?EIO=4&transport=websocket&sid=bodyless0000000000"
	)
	tests := []struct {
		name    string
		method  string
		target  string
		body    string
		chunked bool
		headers map[string]string
		want    int
	}{
		{"fail/handshake with a body", "GET", handshake, "x", false, nil, 400},
		{"fail/poll with a chunked body", "GET", poll, "3\r\nabc", true, nil, 400},
		{"fail/preflight with a body", "OPTIONS", poll, "abc", false, nil, 400},
		{"fail/upgrade with a body", "GET", upgrade, "abc", false, map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}, 400},
		{"fail/POST handshake", "POST", handshake, "40", false, nil, 400},
		{"fail/POST on the websocket transport", "POST", upgrade, "40", false, nil, 400},
		{"ok/poll without a body", "GET", poll, "", false, nil, 200},
		{"ok/preflight without a body", "OPTIONS", poll, "", false, nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(tt.method, tt.target, "10.0.0.1")
			if tt.body != "" || tt.chunked {
				withBody(r, tt.body, tt.chunked)
			}
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			status, called := serveStatus(t, h, r)
			if status != tt.want || called != (tt.want == 200) {
				t.Fatalf("status %d, next called %v; want %d", status, called, tt.want)
			}
		})
	}
	t.Run("ok/HTTP/2 poll of unknown length reaches the backend without a body", func(t *testing.T) {
		r := withBody(newRequest("GET", poll, "10.0.0.1"), "attacker bytes", false)
		r.ProtoMajor, r.ContentLength = 2, -1
		var got []byte
		var gotLen int64
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			got, _ = io.ReadAll(r.Body)
			gotLen = r.ContentLength
			w.WriteHeader(200)
			return nil
		})
		if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 || gotLen != 0 {
			t.Fatalf("backend got a body of %d bytes (ContentLength %d)", len(got), gotLen)
		}
	})
}

// TestHandlerMarksClientBodyErrors: a request the handler passes on with
// its body unread (not Engine.IO, or a transport it does not judge) fails
// on the client's side as a client error, which reverse_proxy neither
// retries nor counts against the upstream (issue 10, item 1).
func TestHandlerMarksClientBodyErrors(t *testing.T) {
	h := testHandler(t)
	for _, target := range []string{
		"/socket.io/upload",
		"/socket.io/?EIO=4&transport=webtransport",
		"/api/upload",
	} {
		t.Run("ok/"+target, func(t *testing.T) {
			r := newRequest(http.MethodPost, target, "10.0.0.1")
			r.Body, r.ContentLength = &failingBody{}, -1
			var readErr error
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				_, readErr = io.ReadAll(r.Body)
				return nil
			})
			if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
				t.Fatal(err)
			}
			if readErr == nil || !errors.Is(readErr, context.Canceled) {
				t.Fatalf("body read error %v: reverse_proxy would count it against the upstream", readErr)
			}
		})
	}
}

// TestHandlerLeavesNonEngineIOAlone: only Engine.IO requests are judged
// (issue 10, item 6).
func TestHandlerLeavesNonEngineIOAlone(t *testing.T) {
	h := testHandler(t)
	root := &Handler{Path: "/", Cookie: DefaultCookie, MaxBody: DefaultMaxBody, logger: h.logger}
	tests := []struct {
		name    string
		h       *Handler
		target  string
		headers map[string]string
	}{
		{"ok/websocket under the path", h, "/socket.io/chat", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}},
		{"ok/h2c on the client bundle", h, "/socket.io/socket.io.js", map[string]string{"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings"}},
		{"ok/webtransport upgrade", h, "/socket.io/?EIO=4&transport=webtransport", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}},
		{"ok/any websocket of a site on path /", root, "/live/feed", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(http.MethodGet, tt.target, "10.0.0.1")
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			before := r.Header.Clone()
			status, called := serveStatus(t, tt.h, r)
			if status != 200 || !called {
				t.Fatalf("status %d, next called %v: a request that is not Engine.IO was judged", status, called)
			}
			for k, v := range before {
				if got := r.Header[k]; strings.Join(got, ",") != strings.Join(v, ",") {
					t.Fatalf("header %s changed from %q to %q", k, v, got)
				}
			}
		})
	}
}

// TestHandlerBodyOutlivesTheHandler: Go's transport may read a request
// body after ServeHTTP returned, until it closes the body; no other
// request may reuse its buffer before then (issue 10, item 4).
func TestHandlerBodyOutlivesTheHandler(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("a:1")
	policy.pin("outlives000000000000", "a:1")
	const target = "/socket.io/?EIO=4&transport=polling&sid=outlives000000000000"
	post := func(body string, keep *io.ReadCloser) {
		t.Helper()
		r := withBody(newRequest(http.MethodPost, target, "10.0.0.1"), body, false)
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			policy.Select(pool, r, w)
			if keep != nil {
				*keep = r.Body // the transport's write loop still has it
			} else {
				_, _ = io.Copy(io.Discard, r.Body)
				_ = r.Body.Close()
			}
			w.WriteHeader(200)
			return nil
		})
		if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
			t.Fatal(err)
		}
	}
	// sync.Pool drops items at random under the race detector: try often
	for i := 0; i < 50; i++ {
		first := fmt.Sprintf(`42["first",%d]`, i)
		var late io.ReadCloser
		post(first, &late)
		post(`42["second","xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]`, nil)
		got, _ := io.ReadAll(late)
		_ = late.Close()
		if string(got) != first {
			t.Fatalf("round %d: the transport read %q, want %q: the buffer was reused before the body was closed", i, got, first)
		}
	}
}

// TestHandlerBodyMemoryBudget: POST bodies held for checking may not hold
// more memory than max_body_memory in the whole process; beyond it, 503
// with Retry-After (issue 10, item 3).
func TestHandlerBodyMemoryBudget(t *testing.T) {
	h, target, next := budgetedHandler(t, 256<<10)

	// stalled clients: each declares 1 MB, sends 100 KB and stops
	const stalled = 12
	var writers []*io.PipeWriter
	type answer struct {
		status     int
		retryAfter string
	}
	answers := make(chan answer, stalled)
	var wg sync.WaitGroup
	for i := 0; i < stalled; i++ {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		r := newRequest(http.MethodPost, target, "10.0.0.1")
		r.Body, r.ContentLength = pr, 1_000_000
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			err := h.ServeHTTP(rec, r, next)
			a := answer{status: 200, retryAfter: rec.Header().Get("Retry-After")}
			var herr caddyhttp.HandlerError
			if errors.As(err, &herr) {
				a.status = herr.StatusCode
			}
			answers <- a
		}()
		go func() { _, _ = pw.Write(bytes.Repeat([]byte("x"), 100_000)) }()
	}
	// the budget fits two such bodies; the others must be refused while
	// the first ones still stall
	refused := 0
	deadline := time.After(10 * time.Second)
	for refused < stalled-2 {
		select {
		case a := <-answers:
			if a.status != http.StatusServiceUnavailable || a.retryAfter == "" {
				t.Fatalf("a POST beyond the budget got %d (Retry-After %q), want 503 with Retry-After", a.status, a.retryAfter)
			}
			refused++
		case <-deadline:
			t.Fatalf("%d of %d stalled POSTs refused; the rest are held beyond the budget (held: %d bytes)", refused, stalled, heldBodyBytes.Load())
		}
	}
	if held := heldBodyBytes.Load(); held > h.MaxBodyMemory {
		t.Fatalf("%d bytes held, budget %d", held, h.MaxBodyMemory)
	}
	for _, pw := range writers {
		_ = pw.CloseWithError(errors.New("client gone"))
	}
	wg.Wait()
	if held := heldBodyBytes.Load(); held != 0 {
		t.Fatalf("%d bytes still counted after every POST ended", held)
	}
}

// TestHandlerTrickledHandshakeIsLinear: a handshake trickled one byte per
// write costs decoding work linear in its size (issue 10, item 10).
func TestHandlerTrickledHandshakeIsLinear(t *testing.T) {
	h := testHandler(t)
	policy := newTestPolicy(t)
	pool := testPool("a:1")
	// a padding that does not compress away, so that the gzip body is
	// about 2 KB, as a real handshake with a large extra field could be
	pad := make([]byte, 2600)
	for i, x := 0, uint32(1); i < len(pad); i++ {
		x = x*1664525 + 1013904223
		pad[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[x>>24%36]
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`0{"sid":"trickled000000000000","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"pad":"` + string(pad) + `"}`))
	_ = zw.Close()
	body := gz.Bytes()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		policy.Select(pool, r, w)
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(200)
		for i := range body {
			if _, err := w.Write(body[i : i+1]); err != nil {
				return err
			}
		}
		return nil
	})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling", "10.0.0.1"), next); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d-byte gzip handshake in %d writes: %d bytes allocated", len(body), len(body), allocated)
	if !bytes.Equal(rec.Body.Bytes(), body) {
		t.Fatal("the client did not get the backend's bytes")
	}
	if got := policy.lookupDials("trickled000000000000"); len(got) != 1 {
		t.Fatalf("pins %v, want the trickled handshake learned", got)
	}
	if allocated > 4<<20 {
		t.Fatalf("%d bytes allocated for one handshake: decoding is not linear in the bytes held", allocated)
	}
}

// TestHandlerBodyMemoryKeepsRoomForUsualPosts: one client stalling a
// large body exactly at the budget cannot make every other polling POST
// fail: large bodies may use only part of max_body_memory.
func TestHandlerBodyMemoryKeepsRoomForUsualPosts(t *testing.T) {
	h, target, next := budgetedHandler(t, firstBodyChunk+4*bodyChunk)

	// the attacker's body fills its chunks up to the budget, less one
	// byte, and stalls
	pr, pw := io.Pipe()
	r := newRequest(http.MethodPost, target, "10.0.0.1")
	r.Body, r.ContentLength = pr, 1_000_000
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.ServeHTTP(httptest.NewRecorder(), r, next)
	}()
	go func() { _, _ = pw.Write(bytes.Repeat([]byte("x"), int(h.MaxBodyMemory)-1)) }()
	defer func() {
		_ = pw.CloseWithError(errors.New("client gone"))
		<-done
	}()
	// until it holds the whole budget, or was refused for asking more
	// than large bodies may hold
	for deadline := time.Now().Add(5 * time.Second); heldBodyBytes.Load() < h.MaxBodyMemory && time.Now().Before(deadline); {
		select {
		case <-done:
			deadline = time.Time{}
		case <-time.After(time.Millisecond):
		}
	}

	for i := range 8 {
		r := newRequest(http.MethodPost, target, "10.0.0.2")
		r.Body, r.ContentLength = io.NopCloser(strings.NewReader(`42["chat","hi"]`)), 15
		if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
			t.Fatalf("usual POST %d while a large one stalls: %v (held: %d of %d bytes)", i, err, heldBodyBytes.Load(), h.MaxBodyMemory)
		}
	}
}

// budgetedHandler returns a handler whose POST bodies may hold budget
// bytes, the target of a pinned session, and a next handler that routes
// it and answers 200.
func budgetedHandler(t *testing.T, budget int64) (*Handler, string, caddyhttp.Handler) {
	t.Helper()
	h := testHandler(t)
	h.MaxBody = 1_000_000
	h.MaxBodyMemory = budget
	policy := newTestPolicy(t)
	pool := testPool("a:1")
	policy.pin("budget00000000000000", "a:1")
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		policy.Select(pool, r, w)
		w.WriteHeader(200)
		return nil
	})
	return h, "/socket.io/?EIO=4&transport=polling&sid=budget00000000000000", next
}
