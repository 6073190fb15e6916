package module

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/handoff"
	"github.com/caddy-socketio/caddy-socketio/selection"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// The benchmarks of this file compare the socketio policy and handler with
// Caddy's built-in policies on the same pools and the same requests, in the
// same process, so that results are read as ratios (benchstat -col /policy,
// -col /handler), never as absolute times. bench/go-bench.sh runs them.

const (
	benchClientIP   = "198.51.100.7"
	benchPinnedSID  = "lv_VI97HAXpY6yYWAAAC" // 20 characters, as Node and python mint
	benchUnknownSID = "Qk2vX0aPcLm9TzR1AAAB"
)

// benchPolicy returns a socketio policy provisioned as Caddy does it
// (default fallback: client_ip_hash, the process's store), with a TTL long
// enough that no pin expires while the benchmarks run, and logging at
// Caddy's default level (INFO): provisioned without a config, modules get
// zap's development logger (DEBUG), which would measure the debug logs of
// every request. It loads an empty Caddy config for that.
func benchPolicy(b *testing.B) *testPolicy {
	b.Helper()
	cfg := `{"admin":{"disabled":true},"logging":{"logs":{"default":{"level":"INFO","writer":{"output":"discard"}}}}}`
	if err := caddy.Load([]byte(cfg), true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	return provisionPolicyIn(b, caddy.ActiveContext(), &selection.SocketIOSelection{TTL: caddy.Duration(time.Hour)})
}

// benchPool returns n upstreams as reverse_proxy builds them from a static
// upstream list.
func benchPool(n int) reverseproxy.UpstreamPool {
	dials := make([]string, n)
	for i := range dials {
		dials[i] = fmt.Sprintf("10.0.0.%d:3000", i+1)
	}
	return testPool(dials...)
}

// discardWriter is a reusable http.ResponseWriter that keeps nothing, so
// that the benchmarks measure the handler, not a recorder.
type discardWriter struct {
	header http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

var okBody = []byte("ok")

// replayBody is a request body that a benchmark rewinds for every
// iteration without allocating.
type replayBody struct{ strings.Reader }

func (*replayBody) Close() error { return nil }

// benchPOSTPayload is a polling POST's body: a Socket.IO event in an
// Engine.IO v4 message packet.
const benchPOSTPayload = `42["chat","hello"]`

// BenchmarkHandler measures what the socketio handler adds to a request:
// the same trivial next handler (it asks the socketio policy for an
// upstream, as reverse_proxy would, and writes 200 "ok") runs behind the
// handler (handler=socketio) and on its own (handler=none). Cases:
//
//   - polling: a long-poll GET of a session pinned to its owner;
//   - polling_post: a polling POST of that session, with a small body
//     that next reads, as reverse_proxy would;
//   - non_engineio: a request outside the handler's path.
//
// Each iteration deletes the handoff variable the handler stores in the
// request's vars, so that every iteration inserts it anew as a fresh
// request would, and rewinds a POST's body (both in both variants).
func BenchmarkHandler(b *testing.B) {
	cases := []struct{ name, method, target string }{
		{"polling", http.MethodGet, "/socket.io/?EIO=4&transport=polling&t=PabcXYZ&sid=" + benchPinnedSID},
		{"polling_post", http.MethodPost, "/socket.io/?EIO=4&transport=polling&t=PabcXYZ&sid=" + benchPinnedSID},
		{"non_engineio", http.MethodGet, "/api/items?x=1"},
	}
	pool := benchPool(3)
	policy := benchPolicy(b)
	policy.pin(benchPinnedSID, pool[2].Dial)
	h := &Handler{}
	ctx, cancel := caddy.NewContext(caddy.ActiveContext())
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		b.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if policy.Select(pool, r, w) == nil {
			return fmt.Errorf("no upstream selected")
		}
		if r.Body != nil {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return err
			}
		}
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(okBody)
		return err
	})
	for _, c := range cases {
		b.Run("case="+c.name, func(b *testing.B) {
			for _, withHandler := range []bool{true, false} {
				name := "handler=none"
				if withHandler {
					name = "handler=socketio"
				}
				b.Run(name, func(b *testing.B) {
					r := newRequest(c.method, c.target, benchClientIP)
					vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
					w := &discardWriter{header: make(http.Header)}
					body := new(replayBody)
					// rewind the request as a new one: no exchange yet, and
					// a POST's body unread
					reset := func() {
						delete(vars, handoff.VarKey)
						if c.method == http.MethodPost {
							body.Reset(benchPOSTPayload)
							r.Body, r.ContentLength = body, int64(len(benchPOSTPayload))
						}
					}
					serve := func() error { return next.ServeHTTP(w, r) }
					if withHandler {
						serve = func() error { return h.ServeHTTP(w, r, next) }
					}
					reset()
					if err := serve(); err != nil || w.status != http.StatusOK {
						b.Fatalf("status %d, error %v", w.status, err)
					}
					if _, learning := vars[handoff.VarKey]; learning != (withHandler && c.name != "non_engineio") {
						b.Fatalf("exchange attached: %v", learning)
					}
					b.ReportAllocs()
					for b.Loop() {
						reset()
						if err := serve(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
