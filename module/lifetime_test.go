package module

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/selection"
	"github.com/caddy-socketio/caddy-socketio/selection/pins"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// clockedPolicy returns a policy on a store of its own that reads time
// from the returned clock, with the given TTL and capacity.
func clockedPolicy(t *testing.T, ttl time.Duration, capacity int) (*SocketIOSelection, *fakeClock) {
	t.Helper()
	c := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	store := pins.NewWithClock(c.now)
	store.Configure(ttl, capacity)
	return &SocketIOSelection{logger: zap.NewNop(), fallback: reverseproxy.FirstSelection{}, sessions: &sharedSessions{store: store}}, c
}

// route runs one request of sid through the policy and says where it went.
func route(p *SocketIOSelection, pool reverseproxy.UpstreamPool, sid, client string) (*reverseproxy.Upstream, selection.Route) {
	r := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling&sid="+sid, client)
	ex := &exchange{}
	caddyhttp.SetVar(r.Context(), exchangeVar, ex)
	up := p.Select(pool, r, nil)
	return up, ex.route
}

// TestPinLifetime follows pins through the policy with a fake clock: a
// pin lives as long as its session keeps making requests, expires after
// the TTL without one, ends when its owner disowns the session, and ends
// when its upstream leaves the configuration.
func TestPinLifetime(t *testing.T) {
	pool := testPool("a:1", "b:1", "c:1")
	away := addressHashingTo(t, pool, 0) // client-IP hashing picks a:1

	t.Run("ok/refreshed by every routed request", func(t *testing.T) {
		p, c := clockedPolicy(t, 60*time.Second, 100)
		p.sessions.store.Pin("busy", "b:1", 0)
		for i := 0; i < 10; i++ { // 10 × 50 s = 500 s, far past the 60 s TTL
			c.advance(50 * time.Second)
			if up, r := route(p, pool, "busy", away); up != pool[1] || r != selection.RouteOwner {
				t.Fatalf("after %d s: routed to %v (%v), want b:1", (i+1)*50, up, r)
			}
		}
	})
	t.Run("ok/expires after the idle TTL", func(t *testing.T) {
		p, c := clockedPolicy(t, 60*time.Second, 100)
		p.sessions.store.Pin("idle", "b:1", 0)
		c.advance(60 * time.Second)
		if up, _ := route(p, pool, "idle", away); up != pool[1] {
			t.Fatalf("at exactly the TTL: routed to %v, want b:1", up)
		}
		c.advance(61 * time.Second)
		if up, r := route(p, pool, "idle", away); up != pool[0] || r != selection.RouteUnknown {
			t.Fatalf("past the TTL: routed to %v (%v), want a:1 by client-IP hash", up, r)
		}
		if n := p.sessions.store.Sweep(0); n != 1 {
			t.Fatalf("sweep removed %d pins, want the expired one", n)
		}
	})
	t.Run("ok/ends on the owner's Session ID unknown", func(t *testing.T) {
		p, c := clockedPolicy(t, 60*time.Second, 100)
		p.sessions.store.Pin("disowned", "b:1", 0)
		if !p.drop("disowned", pool[1]) {
			t.Fatal("drop failed")
		}
		if up, r := route(p, pool, "disowned", away); up != nil || r != selection.RouteOwnerDown {
			t.Fatalf("routed to %v (%v), want no upstream", up, r)
		}
		c.advance(61 * time.Second)
		if up, r := route(p, pool, "disowned", away); r != selection.RouteUnknown || up == nil {
			t.Fatalf("tombstone outlived its TTL: %v (%v)", up, r)
		}
	})
	t.Run("ok/ends when its upstream leaves the configuration", func(t *testing.T) {
		p, _ := clockedPolicy(t, 60*time.Second, 100)
		store := p.sessions.store
		store.Acquire([]string{"a:1", "b:1", "c:1"})
		store.Pin("moved", "c:1", 0)
		store.Acquire([]string{"a:1", "b:1"}) // the new config
		store.Release([]string{"a:1", "b:1", "c:1"})
		if up, r := route(p, pool[:2], "moved", away); up != nil || r != selection.RouteOwnerDown {
			t.Fatalf("routed to %v (%v), want no upstream", up, r)
		}
	})
}

// TestFloods sends what an attacker can cheaply send: a million requests
// with random sids the store never saw, and a handshake flood far beyond
// max_sessions. Neither may grow memory beyond the bound.
func TestFloods(t *testing.T) {
	if testing.Short() {
		t.Skip("a million requests")
	}
	h := testHandler(t)
	pool := testPool("a:1", "b:1", "c:1")

	t.Run("ok/unknown sids create no pins", func(t *testing.T) {
		p, _ := clockedPolicy(t, time.Minute, 1000)
		next := &fakeProxy{policy: p, pool: pool, status: 400, chunks: []string{`{"code":1,"message":"Session ID unknown"}`}}
		r := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling&sid=x", "10.1.2.3")
		w := httptest.NewRecorder()
		sid := make([]byte, 20)
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		heapBefore := heapInUse()
		const requests = 1_000_000
		for i := 0; i < requests; i++ {
			for j := range sid {
				sid[j] = alphabet[rand.IntN(len(alphabet))]
			}
			r.URL.RawQuery = "EIO=4&transport=polling&sid=" + string(sid)
			w.Body.Reset()
			if err := h.ServeHTTP(w, r, next); err != nil {
				t.Fatal(err)
			}
		}
		growth := int64(heapInUse()) - int64(heapBefore)
		t.Logf("%d requests with unknown sids: %d pins, heap growth %d bytes", requests, p.sessions.store.Len(), growth)
		if n := p.sessions.store.Len(); n != 0 {
			t.Fatalf("%d pins created by unknown sids", n)
		}
		if growth > 4<<20 {
			t.Fatalf("heap grew by %d bytes", growth)
		}
	})

	t.Run("ok/handshake flood stays within max_sessions", func(t *testing.T) {
		const capacity = 1000
		p, c := clockedPolicy(t, time.Hour, capacity)
		// a session that keeps polling must survive the flood: the
		// eviction rule takes the pin idle the longest
		p.sessions.store.Pin("keeper", "b:1", 0)
		for i := 0; i < 50*capacity; i++ {
			next := &fakeProxy{policy: p, pool: pool, status: 200,
				chunks: []string{fmt.Sprintf(`0{"sid":"flood%015d","upgrades":[],"pingInterval":25000}`, i)}}
			r := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling", "10.1.2.4")
			if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
				t.Fatal(err)
			}
			if n := p.sessions.store.Len(); n > capacity {
				t.Fatalf("%d pins after %d handshakes, bound %d", n, i+1, capacity)
			}
			if i%500 == 0 {
				c.advance(time.Second)
				if up, _ := route(p, pool, "keeper", "10.9.9.9"); up != pool[1] {
					t.Fatalf("the polling session lost its pin after %d handshakes", i+1)
				}
			}
		}
		st := p.sessions.store.Stats()
		t.Logf("handshake flood: %+v", st)
		if st.Pins != capacity || st.Evicted != uint64(50*capacity+1-capacity) {
			t.Fatalf("stats %+v: want %d pins and %d evicted", st, capacity, 50*capacity+1-capacity)
		}
	})
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
