package selection

import (
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/internal/homecookie"
	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
)

// sharedStore is a memory store posing as a shared one.
type sharedStore struct {
	*memory.Store
	up atomic.Bool
}

func (s *sharedStore) Reachable() bool { return s.up.Load() }

func TestWhileUnshared(t *testing.T) {
	pool := testPool("10.0.0.1:3000", "10.0.0.2:3000", "10.0.0.3:3000")
	// an address that client-IP hashing does not send to the first
	// upstream, where FirstSelection always goes
	ip := addressHashingTo(t, pool, 2)
	newSession := func(p *SocketIOSelection) *reverseproxy.Upstream {
		r, _ := newHandoffRequest("/socket.io/?EIO=4&transport=polling", ip)
		up, route := p.selectRoute(pool, r, nil)
		if route != RouteNew {
			t.Fatalf("route %v, want RouteNew", route)
		}
		return up
	}

	t.Run("ok/memory store keeps the fallback", func(t *testing.T) {
		fb := reverseproxy.FirstSelection{}
		if got := whileUnshared(memory.New(), fb); got != reverseproxy.Selector(fb) {
			t.Fatalf("fallback wrapped: %T", got)
		}
	})
	t.Run("ok/client_ip_hash needs no wrapper", func(t *testing.T) {
		fb := new(reverseproxy.ClientIPHashSelection)
		if got := whileUnshared(&sharedStore{Store: memory.New()}, fb); got != reverseproxy.Selector(fb) {
			t.Fatalf("fallback wrapped: %T", got)
		}
	})
	t.Run("ok/shared store: fallback while reachable, client-IP hash while not", func(t *testing.T) {
		p, _ := clockedPolicy(t, 0, 100)
		st := &sharedStore{Store: memory.New()}
		p.store = &store.Handle{Store: st}
		p.fallback = whileUnshared(st, reverseproxy.FirstSelection{})

		st.up.Store(true)
		if got := newSession(p); got != pool[0] {
			t.Fatalf("reachable: new session to %v, want the fallback's %v", got.Dial, pool[0].Dial)
		}
		st.up.Store(false)
		if got := newSession(p); got != pool[2] {
			t.Fatalf("unreachable: new session to %v, want the hashed %v", got.Dial, pool[2].Dial)
		}
		st.up.Store(true)
		if got := newSession(p); got != pool[0] {
			t.Fatalf("back: new session to %v, want the fallback's %v", got.Dial, pool[0].Dial)
		}
	})
}

// TestHomeHintWhileUnshared: while the shared store is unreachable, a
// reconnect hint is not followed: the other instances could only find the
// session's node by client-IP hash.
func TestHomeHintWhileUnshared(t *testing.T) {
	pool := testPool("10.0.0.1:3000", "10.0.0.2:3000", "10.0.0.3:3000")
	ip := addressHashingTo(t, pool, 2)
	hint := homecookie.New("test secret")
	p, _ := clockedPolicy(t, 0, 100)
	st := &sharedStore{Store: memory.New()}
	p.store = &store.Handle{Store: st}
	p.fallback = whileUnshared(st, reverseproxy.FirstSelection{})
	handshake := func() (*reverseproxy.Upstream, Route) {
		r, ho := newHandoffRequest("/socket.io/?EIO=4&transport=polling", ip)
		ho.SetHome(hint, hint.Token("10.0.0.2:3000"))
		return p.selectRoute(pool, r, nil)
	}
	st.up.Store(true)
	if up, route := handshake(); up != pool[1] || route != RouteHome {
		t.Fatalf("reachable: %v (%v), want home %v", up.Dial, route, pool[1].Dial)
	}
	st.up.Store(false)
	if up, route := handshake(); up != pool[2] || route != RouteNew {
		t.Fatalf("unreachable: %v (%v), want the hashed %v", up.Dial, route, pool[2].Dial)
	}
}
