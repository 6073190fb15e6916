package selection

import (
	"fmt"
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
)

// TestPinLifetime follows pins through the policy with a fake clock: a
// pin lives as long as its session keeps making requests, expires after
// the TTL without one, ends when its owner disowns the session, and ends
// when its upstream leaves the configuration.
func TestPinLifetime(t *testing.T) {
	pool := testPool("a:1", "b:1", "c:1")
	away := addressHashingTo(t, pool, 0) // client-IP hashing picks a:1

	t.Run("ok/refreshed by every routed request", func(t *testing.T) {
		p, c := clockedPolicy(t, 60*time.Second, 100)
		p.store.Pin("busy", "b:1", 0)
		for i := 0; i < 10; i++ { // 10 × 50 s = 500 s, far past the 60 s TTL
			c.Advance(50 * time.Second)
			if up, r := route(p, pool, "busy", away); up != pool[1] || r != RouteOwner {
				t.Fatalf("after %d s: routed to %v (%v), want b:1", (i+1)*50, up, r)
			}
		}
	})
	t.Run("ok/expires after the idle TTL", func(t *testing.T) {
		p, c := clockedPolicy(t, 60*time.Second, 100)
		p.store.Pin("idle", "b:1", 0)
		c.Advance(60 * time.Second)
		if up, _ := route(p, pool, "idle", away); up != pool[1] {
			t.Fatalf("at exactly the TTL: routed to %v, want b:1", up)
		}
		c.Advance(61 * time.Second)
		if up, r := route(p, pool, "idle", away); up != pool[0] || r != RouteUnknown {
			t.Fatalf("past the TTL: routed to %v (%v), want a:1 by client-IP hash", up, r)
		}
		if n := p.store.Store.(*memory.Store).Sweep(0); n != 1 {
			t.Fatalf("sweep removed %d pins, want the expired one", n)
		}
	})
	t.Run("ok/ends on the owner's Session ID unknown", func(t *testing.T) {
		p, c := clockedPolicy(t, 60*time.Second, 100)
		p.store.Pin("disowned", "b:1", 0)
		if !p.store.DropDial("disowned", "b:1") {
			t.Fatal("drop failed")
		}
		if up, r := route(p, pool, "disowned", away); up != nil || r != RouteOwnerDown {
			t.Fatalf("routed to %v (%v), want no upstream", up, r)
		}
		c.Advance(61 * time.Second)
		if up, r := route(p, pool, "disowned", away); r != RouteUnknown || up == nil {
			t.Fatalf("tombstone outlived its TTL: %v (%v)", up, r)
		}
	})
	t.Run("ok/ends when its upstream leaves the configuration", func(t *testing.T) {
		p, _ := clockedPolicy(t, 60*time.Second, 100)
		st := p.store
		st.Acquire([]string{"a:1", "b:1", "c:1"})
		st.Pin("moved", "c:1", 0)
		st.Acquire([]string{"a:1", "b:1"}) // the new config
		st.Release([]string{"a:1", "b:1", "c:1"})
		if up, r := route(p, pool[:2], "moved", away); up != nil || r != RouteOwnerDown {
			t.Fatalf("routed to %v (%v), want no upstream", up, r)
		}
	})
}

// TestHandshakeFlood sends what an attacker can cheaply send: a handshake
// flood far beyond max_sessions. It may not grow the store beyond the
// bound, nor evict a session that keeps polling. (A flood of unknown sids
// is module's TestUnknownSIDFlood.)
func TestHandshakeFlood(t *testing.T) {
	pool := testPool("a:1", "b:1", "c:1")
	const capacity = 1000
	p, c := clockedPolicy(t, time.Hour, capacity)
	// a session that keeps polling must survive the flood: the
	// eviction rule takes the pin idle the longest
	p.store.Pin("keeper", "b:1", 0)
	for i := 0; i < 50*capacity; i++ {
		// a handshake: placed by the fallback, then pinned through
		// the handoff as the handler does when the open packet comes
		r, ho := newHandoffRequest("/socket.io/?EIO=4&transport=polling", "10.1.2.4")
		if up := p.Select(pool, r, nil); up == nil {
			t.Fatal("handshake not placed")
		}
		ho.Pin(fmt.Sprintf("flood%015d", i))
		if n := p.store.Stats().Pins; n > capacity {
			t.Fatalf("%d pins after %d handshakes, bound %d", n, i+1, capacity)
		}
		if i%500 == 0 {
			c.Advance(time.Second)
			if up, _ := route(p, pool, "keeper", "10.9.9.9"); up != pool[1] {
				t.Fatalf("the polling session lost its pin after %d handshakes", i+1)
			}
		}
	}
	st := p.store.Stats()
	t.Logf("handshake flood: %+v", st)
	if st.Pins != capacity || st.Evicted != uint64(50*capacity+1-capacity) {
		t.Fatalf("stats %+v: want %d pins and %d evicted", st, capacity, 50*capacity+1-capacity)
	}
}
