package selection

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// TestSelect covers the policy's routes through the Caddy types; the
// owner-down route needs an unavailable *reverseproxy.Upstream, which only
// Caddy's own package can make, so it is tested on the selection core and
// end to end.
func TestSelect(t *testing.T) {
	policy, _ := clockedPolicy(t, store.DefaultTTL, store.DefaultCapacity)
	pool := testPool("a:1", "b:1", "c:1")
	awayFromB := addressHashingTo(t, pool, 0)
	policy.store.Pin("pinnedToB00000000000", "b:1", 0)
	policy.store.Pin("pinnedToGone00000000", "z:1", 0)
	policy.store.Pin("departedFromPool0000", "gone:1", store.ClientHash(awayFromB))
	policy.store.Pin("tombstoneOnB00000000", "b:1", 0)
	policy.store.DropDial("tombstoneOnB00000000", "b:1")
	tests := []struct {
		name      string
		pool      reverseproxy.UpstreamPool
		target    string
		client    string
		want      int // index in pool, -1 for nil
		wantRoute Route
	}{
		{"ok/pinned sid goes to its owner", pool, "/socket.io/?EIO=4&transport=polling&sid=pinnedToB00000000000", awayFromB, 1, RouteOwner},
		{"ok/upgrade probe goes to its owner", pool, "/socket.io/?EIO=4&transport=websocket&sid=pinnedToB00000000000", awayFromB, 1, RouteOwner},
		{"ok/handshake goes to the fallback", pool, "/socket.io/?EIO=4&transport=polling", awayFromB, 0, RouteNew},
		{"ok/websocket-only session goes to the fallback", pool, "/socket.io/?EIO=4&transport=websocket", awayFromB, 0, RouteNew},
		{"ok/non-engine.io request goes to the fallback", pool, "/api?sid=pinnedToB00000000000", awayFromB, 0, RouteNew},
		{"ok/unknown sid goes by client address", pool, "/socket.io/?EIO=4&transport=polling&sid=neverPinned000000000", awayFromB, 0, RouteUnknown},
		{"ok/sid pinned outside this pool goes by client address", pool, "/socket.io/?EIO=4&transport=polling&sid=pinnedToGone00000000", awayFromB, 0, RouteUnknown},
		{"fail/owner just removed from the pool, same client", pool, "/socket.io/?EIO=4&transport=polling&sid=departedFromPool0000", awayFromB, -1, RouteOwnerDown},
		{"ok/owner outside the pool, another client", pool, "/socket.io/?EIO=4&transport=polling&sid=departedFromPool0000", addressHashingTo(t, pool, 2), 2, RouteUnknown},
		{"fail/tombstone fails fast with its owner up", pool, "/socket.io/?EIO=4&transport=polling&sid=tombstoneOnB00000000", awayFromB, -1, RouteOwnerDown},
		{"ok/an application's odd sid goes to the fallback", pool, "/api/items?sid=1&sid=2", awayFromB, 0, RouteNew},
		{"ok/an application's empty sid goes to the fallback", pool, "/search?sid=", awayFromB, 0, RouteNew},
		{"fail/repeated sid is not routed", pool, "/socket.io/?EIO=4&transport=polling&sid=pinnedToB00000000000&sid=x", awayFromB, -1, RouteRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ho := newHandoffRequest(tt.target, tt.client)
			got, route := policy.selectRoute(tt.pool, r, nil)
			if (tt.want < 0 && got != nil) || (tt.want >= 0 && got != tt.pool[tt.want]) {
				t.Fatalf("Select = %v, want index %d", got, tt.want)
			}
			if route != tt.wantRoute {
				t.Fatalf("route %v, want %v", route, tt.wantRoute)
			}
			checkHandoff(t, ho, got, route)
		})
	}
	t.Run("ok/unknown sid agrees with client_ip_hash", func(t *testing.T) {
		for i := 0; i < 50; i++ {
			r := newRequest(http.MethodGet, "/socket.io/?EIO=4&transport=polling&sid=neverPinned000000000", addressHashingTo(t, pool, i%3))
			want := reverseproxy.ClientIPHashSelection{}.Select(pool, r, nil)
			if got := policy.Select(pool, r, nil); got != want {
				t.Fatalf("unknown sid routed to %v, client_ip_hash picks %v", got, want)
			}
		}
	})
}

func TestHealthCheckWarnings(t *testing.T) {
	tests := []struct {
		name    string
		passive *reverseproxy.PassiveHealthChecks
		want    string // part of the warning, "" for none
	}{
		{"ok/no passive checks", nil, ""},
		{"ok/recommended", &reverseproxy.PassiveHealthChecks{FailDuration: caddy.Duration(10 * time.Second), MaxFails: 1}, ""},
		{"ok/5xx", &reverseproxy.PassiveHealthChecks{UnhealthyStatus: []int{5}}, ""},
		{"fail/400", &reverseproxy.PassiveHealthChecks{UnhealthyStatus: []int{502, 400}}, "count 400 answers as failures"},
		{"fail/4xx", &reverseproxy.PassiveHealthChecks{UnhealthyStatus: []int{4}}, "count 400 answers as failures"},
		{"fail/latency under a long-poll", &reverseproxy.PassiveHealthChecks{UnhealthyLatency: caddy.Duration(5 * time.Second)}, "long-polls are held open"},
		{"ok/latency above a long-poll", &reverseproxy.PassiveHealthChecks{UnhealthyLatency: caddy.Duration(time.Minute)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			s := &SocketIOSelection{logger: zap.New(core)}
			proxy := &reverseproxy.Handler{}
			if tt.passive != nil {
				proxy.HealthChecks = &reverseproxy.HealthChecks{Passive: tt.passive}
			}
			s.checkHealthChecks(proxy)
			got := ""
			for _, e := range logs.All() {
				got += e.Message
			}
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Fatalf("warnings %q, want one containing %q", got, tt.want)
			}
		})
	}
}
