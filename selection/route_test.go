package selection

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
)

// fakeUpstream stands in for *reverseproxy.Upstream, whose availability
// cannot be set from outside Caddy's package.
type fakeUpstream struct {
	dial string
	up   bool
}

func fakePool(ups ...fakeUpstream) Pool[fakeUpstream] {
	return Pool[fakeUpstream]{
		Upstreams: ups,
		Dial:      func(u fakeUpstream) string { return u.dial },
		Available: func(u fakeUpstream) bool { return u.up },
	}
}

func up(dial string) fakeUpstream   { return fakeUpstream{dial: dial, up: true} }
func down(dial string) fakeUpstream { return fakeUpstream{dial: dial} }

type pinSpec struct {
	dial   string
	client uint64
}

const testSID = "j6ND45I1iVJGN1DyAAAA"

// ownersOf pins testSID to each spec in order, through a real store, and
// returns what Lookup gives back: the newest pin first.
func ownersOf(t testing.TB, specs ...pinSpec) []store.Owner {
	t.Helper()
	s := memory.New()
	for i, p := range specs {
		want := store.Pinned
		if i > 0 {
			want = store.Collided
		}
		if got := s.Pin(testSID, p.dial, p.client); got != want {
			t.Fatalf("Pin(%q, %q) = %v, want %v", testSID, p.dial, got, want)
		}
	}
	owners := s.Lookup(testSID, nil)
	if len(owners) != len(specs) {
		t.Fatalf("Lookup returned %d owners, want %d", len(owners), len(specs))
	}
	// the order Owner relies on: newest first
	for i, o := range owners {
		if want := specs[len(specs)-1-i]; o.Dial != want.dial || o.Client != want.client {
			t.Fatalf("Lookup()[%d] = {%q %d}, want {%q %d} (newest first)", i, o.Dial, o.Client, want.dial, want.client)
		}
	}
	return owners
}

func TestOwner(t *testing.T) {
	const (
		clientA = uint64(0xA)
		clientB = uint64(0xB)
		clientC = uint64(0xC)
	)
	cases := []struct {
		name      string
		pool      Pool[fakeUpstream]
		pins      []pinSpec // oldest first; owners come back newest first
		client    uint64
		upstream  int
		owner     int
		wantRoute Route
	}{
		{
			name:     "ok/single owner available",
			pool:     fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000")),
			pins:     []pinSpec{{"n2:3000", clientA}},
			client:   clientA,
			upstream: 1, owner: 0, wantRoute: RouteOwner,
		},
		{
			name:     "ok/single owner, other client address",
			pool:     fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000")),
			pins:     []pinSpec{{"n3:3000", clientA}},
			client:   clientB,
			upstream: 2, owner: 0, wantRoute: RouteOwner,
		},
		{
			name:     "ok/single owner, client not computed (0)",
			pool:     fakePool(up("n1:3000"), up("n2:3000")),
			pins:     []pinSpec{{"n1:3000", clientA}},
			client:   0,
			upstream: 0, owner: 0, wantRoute: RouteOwner,
		},
		{
			name:     "ok/owner down",
			pool:     fakePool(up("n1:3000"), down("n2:3000"), up("n3:3000")),
			pins:     []pinSpec{{"n2:3000", clientA}},
			client:   clientA,
			upstream: -1, owner: 0, wantRoute: RouteOwnerDown,
		},
		{
			name:     "ok/owner not in pool",
			pool:     fakePool(up("n1:3000"), up("n2:3000")),
			pins:     []pinSpec{{"gone:3000", clientA}},
			client:   clientA,
			upstream: -1, owner: -1, wantRoute: RouteUnknown,
		},
		{
			name:     "ok/no owners",
			pool:     fakePool(up("n1:3000"), up("n2:3000")),
			pins:     nil,
			client:   clientA,
			upstream: -1, owner: -1, wantRoute: RouteUnknown,
		},
		{
			name:     "ok/owner but empty pool",
			pool:     fakePool(),
			pins:     []pinSpec{{"n1:3000", clientA}},
			client:   clientA,
			upstream: -1, owner: -1, wantRoute: RouteUnknown,
		},
		{
			// owners = [n2 (B), n1 (A)]: the older pin is the client's
			name:     "ok/collision, client matches the second owner",
			pool:     fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000")),
			pins:     []pinSpec{{"n1:3000", clientA}, {"n2:3000", clientB}},
			client:   clientA,
			upstream: 0, owner: 1, wantRoute: RouteOwner,
		},
		{
			name:     "ok/collision, client matches the first owner",
			pool:     fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000")),
			pins:     []pinSpec{{"n1:3000", clientA}, {"n2:3000", clientB}},
			client:   clientB,
			upstream: 1, owner: 0, wantRoute: RouteOwner,
		},
		{
			// either owner may be another client's: name none
			name:     "ok/collision, none matching: no owner",
			pool:     fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000")),
			pins:     []pinSpec{{"n1:3000", clientA}, {"n2:3000", clientB}},
			client:   clientC,
			upstream: -1, owner: -1, wantRoute: RouteUnknown,
		},
		{
			name:     "ok/collision, both matching: no owner",
			pool:     fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000")),
			pins:     []pinSpec{{"n1:3000", clientA}, {"n2:3000", clientA}},
			client:   clientA,
			upstream: -1, owner: -1, wantRoute: RouteUnknown,
		},
		{
			name:     "ok/collision of three, client matches the oldest",
			pool:     fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000")),
			pins:     []pinSpec{{"n3:3000", clientC}, {"n1:3000", clientA}, {"n2:3000", clientB}},
			client:   clientC,
			upstream: 2, owner: 2, wantRoute: RouteOwner,
		},
		{
			// The client's own session lives on n1, which is down. n2
			// holds another client's session under the same sid: sending
			// this request there would inject it into a stranger's
			// session. Failing fast is right.
			name:     "ok/collision, matching owner down, other up",
			pool:     fakePool(down("n1:3000"), up("n2:3000")),
			pins:     []pinSpec{{"n1:3000", clientA}, {"n2:3000", clientB}},
			client:   clientA,
			upstream: -1, owner: 1, wantRoute: RouteOwnerDown,
		},
		{
			name:     "ok/collision, none matching, newest owner down",
			pool:     fakePool(up("n1:3000"), down("n2:3000")),
			pins:     []pinSpec{{"n1:3000", clientA}, {"n2:3000", clientB}},
			client:   clientC,
			upstream: -1, owner: -1, wantRoute: RouteUnknown,
		},
		{
			name:     "ok/collision, newest owner not in pool",
			pool:     fakePool(up("n1:3000"), up("n2:3000")),
			pins:     []pinSpec{{"n1:3000", clientA}, {"gone:3000", clientB}},
			client:   clientC,
			upstream: 0, owner: 1, wantRoute: RouteOwner,
		},
		{
			// the client's own owner is outside this pool (just removed,
			// see Departed): the one in the pool is another client's
			name:     "ok/collision, matching owner not in pool",
			pool:     fakePool(up("n1:3000"), up("n2:3000")),
			pins:     []pinSpec{{"n1:3000", clientB}, {"gone:3000", clientA}},
			client:   clientA,
			upstream: -1, owner: -1, wantRoute: RouteUnknown,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			owners := ownersOf(t, tc.pins...)
			upstream, owner, route := Owner(tc.pool, owners, tc.client)
			if upstream != tc.upstream || owner != tc.owner || route != tc.wantRoute {
				t.Errorf("Owner() = (%d, %d, %v), want (%d, %d, %v)", upstream, owner, route, tc.upstream, tc.owner, tc.wantRoute)
			}
			if route == RouteOwner && tc.pool.Upstreams[upstream].dial != owners[owner].Dial {
				t.Errorf("Owner() picked upstream %q for owner %q", tc.pool.Upstreams[upstream].dial, owners[owner].Dial)
			}
		})
	}
}

func TestRouteString(t *testing.T) {
	for r, want := range map[Route]string{
		RouteNew:       "new",
		RouteOwner:     "owner",
		RouteOwnerDown: "owner_down",
		RouteUnknown:   "unknown",
		RouteRefused:   "refused",
		RouteHome:      "home",
		Route(99):      "invalid",
	} {
		t.Run("ok/"+want, func(t *testing.T) {
			if got := r.String(); got != want {
				t.Errorf("Route(%d).String() = %q, want %q", r, got, want)
			}
		})
	}
}

func ipKey(i int) string {
	return fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
}

func TestHash(t *testing.T) {
	t.Run("fail/none available", func(t *testing.T) {
		for _, p := range []Pool[fakeUpstream]{
			fakePool(),
			fakePool(down("n1:3000")),
			fakePool(down("n1:3000"), down("n2:3000"), down("n3:3000")),
		} {
			if got := Hash(p, "192.0.2.1"); got != -1 {
				t.Errorf("Hash(%v) = %d, want -1", p.Upstreams, got)
			}
		}
	})

	t.Run("ok/single available", func(t *testing.T) {
		p := fakePool(down("n1:3000"), up("n2:3000"), down("n3:3000"))
		for i := range 100 {
			if got := Hash(p, ipKey(i)); got != 1 {
				t.Fatalf("Hash(%q) = %d, want 1", ipKey(i), got)
			}
		}
	})

	t.Run("ok/skips unavailable, as if they were not in the pool", func(t *testing.T) {
		all := fakePool(up("n1:3000"), down("n2:3000"), up("n3:3000"), down("n4:3000"), up("n5:3000"))
		onlyUp := fakePool(up("n1:3000"), up("n3:3000"), up("n5:3000"))
		for i := range 1000 {
			k := ipKey(i)
			got := Hash(all, k)
			if got < 0 || !all.Upstreams[got].up {
				t.Fatalf("Hash(%q) = %d, an unavailable upstream", k, got)
			}
			if want := onlyUp.Upstreams[Hash(onlyUp, k)].dial; all.Upstreams[got].dial != want {
				t.Fatalf("Hash(%q) picked %q, want %q as without the down upstreams", k, all.Upstreams[got].dial, want)
			}
		}
	})

	t.Run("ok/deterministic", func(t *testing.T) {
		p := fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000"))
		p2 := fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000"))
		for i := range 1000 {
			k := ipKey(i)
			a, b, c := Hash(p, k), Hash(p, k), Hash(p2, k)
			if a != b || a != c {
				t.Fatalf("Hash(%q) = %d, %d, %d", k, a, b, c)
			}
		}
	})

	t.Run("ok/order of the pool does not matter", func(t *testing.T) {
		p := fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000"))
		r := fakePool(up("n3:3000"), up("n1:3000"), up("n2:3000"))
		for i := range 1000 {
			k := ipKey(i)
			if a, b := p.Upstreams[Hash(p, k)].dial, r.Upstreams[Hash(r, k)].dial; a != b {
				t.Fatalf("Hash(%q) picked %q in one order, %q in another", k, a, b)
			}
		}
	})

	t.Run("ok/one upstream down moves only its keys", func(t *testing.T) {
		p := fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000"))
		q := fakePool(up("n1:3000"), down("n2:3000"), up("n3:3000"))
		for i := range 1000 {
			k := ipKey(i)
			if before, after := Hash(p, k), Hash(q, k); before != 1 && before != after {
				t.Fatalf("Hash(%q) moved from %d to %d when upstream 1 went down", k, before, after)
			}
		}
	})

	t.Run("ok/distribution over 3 upstreams", func(t *testing.T) {
		p := fakePool(up("10.0.0.1:3000"), up("10.0.0.2:3000"), up("10.0.0.3:3000"))
		const keys = 3000
		var counts [3]int
		for i := range keys {
			counts[Hash(p, ipKey(i))]++
		}
		for i, n := range counts {
			if share := float64(n) / keys; share < 0.25 || share > 0.42 {
				t.Errorf("upstream %d got %d of %d keys (%.1f%%), want 25%%..42%%", i, n, keys, 100*share)
			}
		}
	})
}

// caddyUpstreams returns a pool of real Caddy upstreams. Available()
// needs Host for MaxRequests only, but set it as provisioning would.
func caddyUpstreams(n int) reverseproxy.UpstreamPool {
	pool := make(reverseproxy.UpstreamPool, n)
	for i := range pool {
		pool[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: fmt.Sprintf("node%d.internal:%d", i, 3000+i)}
	}
	return pool
}

// TestHashMatchesClientIPHash checks the promise Hash's documentation makes:
// the same key and pool give the upstream Caddy's own client_ip_hash picks,
// so a session placed by that fallback is found again by its client IP.
func TestHashMatchesClientIPHash(t *testing.T) {
	var caddyPolicy reverseproxy.ClientIPHashSelection
	ips := make([]string, 0, 1000)
	for i := range 900 {
		ips = append(ips, fmt.Sprintf("%d.%d.%d.%d", 1+i%223, i*7%256, i*13%256, i%254+1))
	}
	for i := range 100 {
		ips = append(ips, fmt.Sprintf("2001:db8:%x::%x", i, i*31+1))
	}
	for _, n := range []int{1, 2, 3, 10} {
		t.Run(fmt.Sprintf("ok/%d upstreams", n), func(t *testing.T) {
			pool := caddyUpstreams(n)
			p := Pool[*reverseproxy.Upstream]{
				Upstreams: pool,
				Dial:      func(u *reverseproxy.Upstream) string { return u.Dial },
				Available: func(u *reverseproxy.Upstream) bool { return u.Available() },
			}
			picked := make(map[int]int)
			for _, ip := range ips {
				vars := map[string]any{caddyhttp.ClientIPVarKey: ip}
				r := httptest.NewRequest("GET", "/socket.io/?EIO=4&transport=polling", nil)
				r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))
				want := caddyPolicy.Select(pool, r, nil)
				if want == nil {
					t.Fatalf("client_ip_hash selected nothing for %s", ip)
				}
				got := Hash(p, ip)
				if got < 0 || pool[got] != want {
					gotDial := "<none>"
					if got >= 0 {
						gotDial = pool[got].Dial
					}
					t.Fatalf("Hash(%q) = %s, client_ip_hash picks %s", ip, gotDial, want.Dial)
				}
				picked[got]++
			}
			// guard against a vacuous comparison
			if len(picked) != n {
				t.Errorf("only %d of %d upstreams picked for %d IPs: %v", len(picked), n, len(ips), picked)
			}
		})
	}
}

func TestAllocs(t *testing.T) {
	owners := ownersOf(t, pinSpec{"n1:3000", 1}, pinSpec{"n2:3000", 2})
	p := fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000"))
	cp := Pool[*reverseproxy.Upstream]{
		Upstreams: caddyUpstreams(10),
		Dial:      func(u *reverseproxy.Upstream) string { return u.Dial },
		Available: func(u *reverseproxy.Upstream) bool { return u.Available() },
	}
	var sink int
	cases := []struct {
		name string
		fn   func()
	}{
		{"ok/Owner", func() { sink, _, _ = Owner(p, owners, 1) }},
		{"ok/Owner, no owners", func() { sink, _, _ = Owner(p, nil, 1) }},
		{"ok/Resolve, collision", func() { sink, _, _ = Resolve(p, owners, "192.0.2.1") }},
		{"ok/Resolve, no owners", func() { sink, _, _ = Resolve(p, nil, "192.0.2.1") }},
		{"ok/Hash", func() { sink = Hash(p, "192.0.2.1") }},
		{"ok/Hash, caddy upstreams", func() { sink = Hash(cp, "2001:db8::1") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if allocs := testing.AllocsPerRun(200, tc.fn); allocs != 0 {
				t.Errorf("allocates %v times, want 0", allocs)
			}
		})
	}
	_ = sink
}

func BenchmarkHash(b *testing.B) {
	p := fakePool(up("n1:3000"), up("n2:3000"), up("n3:3000"))
	b.ReportAllocs()
	for b.Loop() {
		Hash(p, "192.0.2.1")
	}
}

// TestOwnerTombstones: a pin whose session ended (dropped, or its
// upstream left every configuration) fails the request even when the
// upstream is available, and is never routed around.
func TestOwnerTombstones(t *testing.T) {
	pool := fakePool(up("n1:3000"), up("n2:3000"))
	tests := []struct {
		name      string
		setup     func(s *memory.Store)
		wantRoute Route
		upstream  int
	}{
		{"fail/dropped pin, owner back up", func(s *memory.Store) {
			s.Pin(testSID, "n2:3000", 1)
			s.DropDial(testSID, "n2:3000")
		}, RouteOwnerDown, -1},
		{"fail/owner left the configuration", func(s *memory.Store) {
			s.Acquire([]string{"old:3000"})
			s.Pin(testSID, "old:3000", 1)
			s.Release([]string{"old:3000"})
		}, RouteOwnerDown, -1},
		{"ok/owner of another pool is not a tombstone", func(s *memory.Store) {
			s.Acquire([]string{"other:3000"})
			s.Pin(testSID, "other:3000", 1)
		}, RouteUnknown, -1},
		{"ok/live owner beside a tombstone elsewhere", func(s *memory.Store) {
			s.Acquire([]string{"old:3000"})
			s.Pin(testSID, "old:3000", 1)
			s.Release([]string{"old:3000"})
			s.Pin(testSID, "n1:3000", 1)
		}, RouteOwner, 0},
		{"ok/re-pinned after a tombstone", func(s *memory.Store) {
			s.Pin(testSID, "n2:3000", 1)
			s.DropDial(testSID, "n2:3000")
			s.Pin(testSID, "n2:3000", 1)
		}, RouteOwner, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := memory.New()
			tt.setup(s)
			upstream, _, route := Owner(pool, s.Lookup(testSID, nil), 1)
			if route != tt.wantRoute || upstream != tt.upstream {
				t.Fatalf("Owner() = (%d, %v), want (%d, %v)", upstream, route, tt.upstream, tt.wantRoute)
			}
		})
	}
}

func TestDeparted(t *testing.T) {
	s := memory.New()
	s.Pin(testSID, "old:3000", 7)
	s.Pin(testSID, "other:3000", 8)
	s.DropDial(testSID, "other:3000")
	s.Pin(testSID, "kept:3000", 10)
	owners := s.Lookup(testSID, nil)
	pool := fakePool(up("kept:3000"))
	tests := []struct {
		name   string
		client uint64
		want   string
	}{
		{"ok/same client", 7, "old:3000"},
		{"ok/pins in the pool do not count", 10, ""},
		{"ok/another client", 9, ""},
		{"ok/tombstones do not count", 8, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := Departed(pool, owners, tt.client)
			got := ""
			if i >= 0 {
				got = owners[i].Dial
			}
			if got != tt.want {
				t.Fatalf("Departed(client %d) = %q, want %q", tt.client, got, tt.want)
			}
		})
	}
}

// TestResolve routes requests of a session the way Select does, through
// a real store: never into another client's session (issue 10, item 5),
// and an owner that is only unavailable keeps its pin (item 2).
func TestResolve(t *testing.T) {
	nodes := []string{"n1:3000", "n2:3000", "n3:3000", "n4:3000", "n5:3000"}
	all := func() Pool[fakeUpstream] {
		ups := make([]fakeUpstream, len(nodes))
		for i, d := range nodes {
			ups[i] = up(d)
		}
		return fakePool(ups...)
	}

	t.Run("ok/five nodes mint the same sequential sid", func(t *testing.T) {
		// each client's handshake went to the node its address hashes to
		// (the default fallback), and each node minted "7"
		p := all()
		s := memory.New()
		clients := make([]string, len(nodes))
		for i := range nodes {
			clients[i] = addressHashingToFake(t, p, i)
			res := s.Pin("7", nodes[i], store.ClientHash(clients[i]))
			if want := map[bool]store.PinResult{true: store.Refused, false: store.Collided}[i == store.MaxOwners]; i > 0 && res != want {
				t.Fatalf("pin %d: %v, want %v", i, res, want)
			}
		}
		for i, ip := range clients {
			upstream, _, route := Resolve(p, s.Lookup("7", nil), ip)
			if upstream != i {
				t.Errorf("client of %s routed to %d (%v), want its own node", nodes[i], upstream, route)
			}
		}
		// a stranger behind none of those addresses, hashing onto an
		// owner, reaches nobody's session
		for j := range 200 {
			ip := fmt.Sprintf("198.51.100.%d", j)
			upstream, _, route := Resolve(p, s.Lookup("7", nil), ip)
			if h := Hash(p, ip); h < store.MaxOwners && (upstream != -1 || route != RouteOwnerDown) {
				t.Fatalf("stranger %s hashing onto owner %s routed to %d (%v), want none", ip, nodes[h], upstream, route)
			}
		}
	})

	t.Run("ok/owner unavailable, then back", func(t *testing.T) {
		p := all()
		s := memory.New()
		s.Pin(testSID, "n3:3000", store.ClientHash("192.0.2.9"))
		p.Upstreams[2].up = false
		upstream, _, route := Resolve(p, s.Lookup(testSID, nil), "192.0.2.9")
		if upstream != -1 || route != RouteOwnerDown {
			t.Fatalf("owner down: (%d, %v), want (-1, owner_down)", upstream, route)
		}
		if got := s.Lookup(testSID, nil); len(got) != 1 || got[0].Gone {
			t.Fatalf("owner down: pins %+v, want the live pin kept", got)
		}
		p.Upstreams[2].up = true
		if upstream, _, route := Resolve(p, s.Lookup(testSID, nil), "192.0.2.9"); upstream != 2 || route != RouteOwner {
			t.Fatalf("owner back: (%d, %v), want (2, owner)", upstream, route)
		}
	})

	t.Run("ok/no pin: client-IP hash", func(t *testing.T) {
		p := all()
		ip := addressHashingToFake(t, p, 3)
		if upstream, owner, route := Resolve(p, nil, ip); upstream != 3 || owner != -1 || route != RouteUnknown {
			t.Fatalf("(%d, %d, %v), want (3, -1, unknown)", upstream, owner, route)
		}
	})
}

// addressHashingToFake returns a client address that Hash sends to
// p.Upstreams[want].
func addressHashingToFake(t testing.TB, p Pool[fakeUpstream], want int) string {
	t.Helper()
	for i := range 100000 {
		if ip := ipKey(i); Hash(p, ip) == want {
			return ip
		}
	}
	t.Fatalf("no address hashes to %d", want)
	return ""
}
