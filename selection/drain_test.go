package selection

import (
	"fmt"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// TestDrainHidesUpstreamFromNewSessions: a draining upstream gets no new
// session from the fallback, whatever it is, while the sessions pinned to
// it keep reaching it; undrained, it takes new sessions again.
func TestDrainHidesUpstreamFromNewSessions(t *testing.T) {
	pool := testPool("a:1", "b:1", "c:1")
	for _, fb := range []struct {
		name     string
		fallback reverseproxy.Selector
	}{
		{"client_ip_hash", reverseproxy.ClientIPHashSelection{}},
		{"round_robin", &reverseproxy.RoundRobinSelection{}},
		{"first", reverseproxy.FirstSelection{}},
	} {
		t.Run("ok/"+fb.name, func(t *testing.T) {
			p, _ := clockedPolicy(t, time.Minute, 1000)
			p.fallback = fb.fallback
			p.store.Pin("onB00000000000000000", "b:1", store.ClientHash("10.1.0.1"))
			drain(t, "b:1")
			if fb.name == "first" {
				drain(t, "a:1")
			}
			placed := map[string]int{}
			for i := range 300 {
				r, _ := newHandoffRequest("/socket.io/?EIO=4&transport=polling", fmt.Sprintf("10.2.%d.%d", i/200, i%200))
				if up, route := p.selectRoute(pool, r, nil); up != nil && route == RouteNew {
					placed[up.Dial]++
				}
			}
			if placed["b:1"] != 0 || placed["a:1"]+placed["c:1"] != 300 {
				t.Fatalf("new sessions placed %v, want none on the draining b:1", placed)
			}
			if up, r := route(p, pool, "onB00000000000000000", "10.1.0.1"); up == nil || up.Dial != "b:1" || r != RouteOwner {
				t.Fatalf("the draining upstream's session went to %v (%v), want b:1", up, r)
			}
			store.SetDraining("b:1", false)
			store.SetDraining("a:1", false)
			for i := range 300 {
				r, _ := newHandoffRequest("/socket.io/?EIO=4&transport=polling", fmt.Sprintf("10.3.%d.%d", i/200, i%200))
				if up, _ := p.selectRoute(pool, r, nil); up != nil && up.Dial == "b:1" {
					return
				}
			}
			if fb.name != "first" {
				t.Fatal("undrained, b:1 got none of 300 new sessions")
			}
		})
	}
}

// drain marks dial as draining until the test ends.
func drain(t *testing.T, dial string) {
	t.Helper()
	store.SetDraining(dial, true)
	t.Cleanup(func() { store.SetDraining(dial, false) })
}
