package selection

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/internal/engineio"
	"github.com/caddy-socketio/caddy-socketio/internal/fakeclock"
	"github.com/caddy-socketio/caddy-socketio/internal/handoff"
	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
)

// clockedPolicy returns a policy on a memory store of its own that reads
// time from the returned clock, with the given TTL and capacity, and a
// fallback that always picks the first upstream.
func clockedPolicy(t testing.TB, ttl time.Duration, capacity int) (*SocketIOSelection, *fakeclock.Clock) {
	t.Helper()
	c := fakeclock.New(time.Unix(1_800_000_000, 0))
	st := memory.NewWithClock(c.Now)
	st.Configure(ttl, capacity)
	return &SocketIOSelection{logger: zap.NewNop(), fallback: reverseproxy.FirstSelection{}, store: &store.Handle{Store: st}}, c
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

// newHandoffRequest builds a GET as the socketio handler passes it on:
// with its parsed query in a handoff, if it has a valid one (the handler
// refuses the others).
func newHandoffRequest(target, clientIP string) (*http.Request, *handoff.Handoff) {
	r := newRequest(http.MethodGet, target, clientIP)
	q, err := engineio.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return r, nil
	}
	ho := new(handoff.Handoff)
	handoff.Attach(ho, r, q)
	return r, ho
}

// checkHandoff fails unless ho tells the handler what Select did.
func checkHandoff(t testing.TB, ho *handoff.Handoff, got *reverseproxy.Upstream, route Route) {
	t.Helper()
	if ho == nil {
		return
	}
	dial, chosen := ho.Chosen()
	switch {
	case chosen != (got != nil), got != nil && dial != got.Dial:
		t.Fatalf("handoff says %q (chosen %v), Select returned %v", dial, chosen, got)
	case ho.ToOwner() != (route == RouteOwner):
		t.Fatalf("handoff says owner %v, route is %v", ho.ToOwner(), route)
	}
}

// route runs one request of sid through the policy and says where it went.
func route(p *SocketIOSelection, pool reverseproxy.UpstreamPool, sid, client string) (*reverseproxy.Upstream, Route) {
	r, _ := newHandoffRequest("/socket.io/?EIO=4&transport=polling&sid="+sid, client)
	return p.selectRoute(pool, r, nil)
}

// addressHashingTo returns a client address that client-IP hashing maps
// to pool[want].
func addressHashingTo(t testing.TB, pool reverseproxy.UpstreamPool, want int) string {
	t.Helper()
	for i := 1; i < 255; i++ {
		ip := fmt.Sprintf("10.9.0.%d", i)
		if Hash(upstreamPool(pool), ip) == want {
			return ip
		}
	}
	t.Fatal("no address hashes to the wanted upstream")
	return ""
}

// lookupDials returns the upstreams the pins of sid route to (tombstones
// left out).
func lookupDials(st store.Store, sid string) []string {
	var buf [store.MaxOwners]store.Owner
	var out []string
	for _, o := range st.Lookup(sid, buf[:0]) {
		if !o.Gone {
			out = append(out, o.Dial)
		}
	}
	return out
}
