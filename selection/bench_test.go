package selection

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// The benchmarks of this file compare the socketio policy with Caddy's
// built-in policies on the same pools and the same requests, in the same
// process, so that results are read as ratios (benchstat -col /policy),
// never as absolute times. bench/go-bench.sh runs them.

const (
	benchClientIP   = "198.51.100.7"
	benchPinnedSID  = "lv_VI97HAXpY6yYWAAAC" // 20 characters, as Node and python mint
	benchUnknownSID = "Qk2vX0aPcLm9TzR1AAAB"
)

// benchLogger is a logger at Caddy's default level (INFO), writing
// nowhere. Provisioned without a config, modules get zap's development
// logger (DEBUG), which would measure the debug logs of every request.
func benchLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zapcore.InfoLevel))
}

// benchProvisioned returns a socketio policy provisioned as Caddy does it
// (default fallback: client_ip_hash, the process's shared pin store), with
// a TTL long enough that no pin expires while the benchmarks run.
func benchProvisioned(b *testing.B) *SocketIOSelection {
	b.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	p := &SocketIOSelection{TTL: caddy.Duration(time.Hour)}
	if err := p.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Cleanup() })
	p.logger = benchLogger()
	if _, ok := p.fallback.(*reverseproxy.ClientIPHashSelection); !ok {
		b.Fatalf("default fallback is %T, want client_ip_hash", p.fallback)
	}
	return p
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

// BenchmarkSelect runs the same request through the socketio policy and
// through Caddy's client_ip_hash and round_robin, for pools of 3, 10 and
// 100 upstreams. Cases:
//
//   - sid_hit: the sid is pinned to an available upstream, the last one
//     of the pool (the worst case of the owner's linear search);
//   - sid_miss: the sid is pinned nowhere: client-IP hashing;
//   - handshake: no sid, so the fallback (client_ip_hash) places it.
//
// The request is built once, with the context Caddy's server gives it (a
// vars map holding the client IP, without port, as Caddy stores it).
func BenchmarkSelect(b *testing.B) {
	cases := []struct{ name, target string }{
		{"sid_hit", "/socket.io/?EIO=4&transport=polling&t=PabcXYZ&sid=" + benchPinnedSID},
		{"sid_miss", "/socket.io/?EIO=4&transport=polling&t=PabcXYZ&sid=" + benchUnknownSID},
		{"handshake", "/socket.io/?EIO=4&transport=polling&t=PabcXYZ"},
	}
	for _, n := range []int{3, 10, 100} {
		b.Run(fmt.Sprintf("upstreams=%d", n), func(b *testing.B) {
			pool := benchPool(n)
			socketio := benchProvisioned(b)
			socketio.store.Pin(benchPinnedSID, pool[n-1].Dial, 0)
			if owners := lookupDials(socketio.store, benchPinnedSID); len(owners) != 1 {
				b.Fatalf("pinned sid has owners %v, want exactly one", owners)
			}
			policies := []struct {
				name   string
				policy reverseproxy.Selector
			}{
				{"socketio", socketio},
				{"client_ip_hash", new(reverseproxy.ClientIPHashSelection)},
				{"round_robin", new(reverseproxy.RoundRobinSelection)},
			}
			for _, p := range policies {
				b.Run("policy="+p.name, func(b *testing.B) {
					for _, c := range cases {
						b.Run("case="+c.name, func(b *testing.B) {
							r := newRequest(http.MethodGet, c.target, benchClientIP)
							if p.name == "socketio" && c.name == "sid_hit" {
								if got := p.policy.Select(pool, r, nil); got != pool[n-1] {
									b.Fatalf("pinned sid routed to %v, want its owner %s", got, pool[n-1].Dial)
								}
							}
							b.ReportAllocs()
							for b.Loop() {
								if p.policy.Select(pool, r, nil) == nil {
									b.Fatal("no upstream selected")
								}
							}
						})
					}
				})
			}
		})
	}
}
