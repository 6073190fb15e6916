// Package selection is the `lb_policy socketio` module of reverse_proxy
// (http.reverse_proxy.selection_policies.socketio): it decides which
// upstream serves an Engine.IO request.
//
// policy.go and caddyfile.go are the Caddy module; route.go holds the
// pure routing rules it applies: given a pool of upstreams, a way to name
// them and to tell whether each is available, and what the pin store
// knows about a session, they pick the owner of the session or say why
// they cannot. The rules know nothing of Caddy, so every one is testable
// with plain values, down hosts included.
package selection

import (
	"github.com/cespare/xxhash/v2"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// Route says how a request was (or could not be) routed.
type Route uint8

// Routes, in the order Select considers them.
const (
	// RouteNew: the request starts a new session (no sid); the fallback
	// policy places it.
	RouteNew Route = iota
	// RouteOwner: the sid is pinned and its owner is available.
	RouteOwner
	// RouteOwnerDown: the sid's owner cannot take the request now (it is
	// unavailable, the session ended on it, or it just left the pool), or
	// the only upstream left to try holds another client's session under
	// the same sid. No other upstream knows the session, so the request
	// fails (reverse_proxy answers 503 once lb_try_duration is spent);
	// the pin of an owner that is only unavailable is kept.
	RouteOwnerDown
	// RouteUnknown: the sid is not pinned to any upstream of this pool
	// (the proxy restarted, the pin expired, or the handshake was not
	// observed); the client address picks the upstream, as the default
	// fallback did for the handshake.
	RouteUnknown
	// RouteRefused: the request's Engine.IO parameters are malformed and
	// it must not be routed at all.
	RouteRefused
	// RouteHome: a new session whose handshake carries the handler's
	// reconnect hint goes back to the upstream of the client's last
	// session, available and not draining.
	RouteHome

	routeCount = iota
)

// String returns a short name for r, used in logs and metrics.
func (r Route) String() string {
	switch r {
	case RouteNew:
		return "new"
	case RouteOwner:
		return "owner"
	case RouteOwnerDown:
		return "owner_down"
	case RouteUnknown:
		return "unknown"
	case RouteRefused:
		return "refused"
	case RouteHome:
		return "home"
	default:
		return "invalid"
	}
}

// Pool describes a set of upstreams of type U to the selection core.
type Pool[U any] struct {
	Upstreams []U
	// Dial names an upstream; it is the key of every pin.
	Dial func(U) string
	// Available reports whether an upstream may take a request now.
	Available func(U) bool
}

// Resolve routes a request of a session: given the session's unexpired
// pins (newest first, from the store's Lookup) and the requesting
// client's address, it returns the index in p.Upstreams of the upstream
// that must serve it (-1 if none may), the index in owners of the pin
// that decided (-1 if none did; the caller touches it on RouteOwner), and
// the route:
//
//   - RouteOwner: the session's owner, available;
//   - RouteOwnerDown: the owner is unavailable, or the session ended on
//     it (a tombstone), or its owner just left the pool, or the request
//     would otherwise reach another client's owner: no upstream may serve
//     the request now;
//   - RouteUnknown: no pin tells the owner apart; the client address
//     picks the upstream (Hash), as Caddy's client_ip_hash would, but
//     never one that holds another client's pin of the sid.
//
// An owner that is only unavailable keeps its pin: if it is back in time
// (a retry within lb_try_duration, the client's next poll), the session
// goes on; if it lost the session, its own "Session ID unknown" ends it.
func Resolve[U any](p Pool[U], owners []store.Owner, ip string) (upstream, owner int, route Route) {
	if len(owners) == 0 {
		return Hash(p, ip), -1, RouteUnknown
	}
	// one pin in the pool decides whatever the client's address: the
	// usual case costs no hashing of it
	var client uint64
	if len(owners) > 1 {
		client = store.ClientHash(ip)
	}
	upstream, owner, route = Owner(p, owners, client)
	if route != RouteUnknown {
		return upstream, owner, route
	}
	if client == 0 {
		client = store.ClientHash(ip)
	}
	if d := Departed(p, owners, client); d >= 0 {
		return -1, d, RouteOwnerDown
	}
	upstream = Hash(p, ip)
	if upstream >= 0 {
		dial := p.Dial(p.Upstreams[upstream])
		for _, o := range owners {
			if o.Dial == dial {
				// another client's session (or one that cannot be told
				// from it) lives there under this sid
				return -1, -1, RouteOwnerDown
			}
		}
	}
	return upstream, -1, RouteUnknown
}

// Owner picks the upstream of p that owns a session, given the session's
// unexpired pins (newest first) and the hash of the requesting client's
// address. It returns the index of the upstream in p.Upstreams (-1 unless
// RouteOwner), the index in owners of the pin that decided (-1 for
// RouteUnknown), and one of:
//
//   - RouteOwner: the owner is in the pool and available;
//   - RouteOwnerDown: the owner is in the pool but unavailable, or the
//     pin is a tombstone (the session ended on its owner, or the owner
//     left the configuration): no upstream can serve the request;
//   - RouteUnknown: no pin names an upstream of this pool, or the pins
//     cannot tell which is the client's.
//
// One pin in the pool is the session's, whatever the client's address
// now (mobile clients change networks), unless a pin outside the pool was
// made for this address and that one was not. When several upstreams
// minted the same sid (a collision: sequential ids such as "7" from some
// servers), only the pin made for the same client address tells its
// owner; if none or several match, the request could land in another
// client's session, so Owner names none. Pins naming upstreams outside
// the pool belong to another pool (another site's cluster may mint the
// same ids), except tombstones of upstreams that left every
// configuration: those still fail the request.
func Owner[U any](p Pool[U], owners []store.Owner, client uint64) (upstream, owner int, route Route) {
	inPool, matches := 0, 0
	first, firstUp, match, matchUp, goneOutside := -1, -1, -1, -1, -1
	matchOutside := false
	for oi, o := range owners {
		i := p.index(o.Dial)
		if i < 0 {
			if o.Gone && goneOutside < 0 {
				goneOutside = oi
			}
			matchOutside = matchOutside || (!o.Gone && o.Client == client)
			continue
		}
		inPool++
		if first < 0 {
			first, firstUp = oi, i
		}
		if o.Client == client {
			matches++
			if match < 0 {
				match, matchUp = oi, i
			}
		}
	}
	switch {
	case inPool == 0 && goneOutside >= 0:
		return -1, goneOutside, RouteOwnerDown
	case matches == 1:
		upstream, owner = matchUp, match
	case inPool == 1 && matches == 0 && !matchOutside:
		upstream, owner = firstUp, first
	default:
		return -1, -1, RouteUnknown
	}
	if owners[owner].Gone || !p.Available(p.Upstreams[upstream]) {
		return -1, owner, RouteOwnerDown
	}
	return upstream, owner, RouteOwner
}

// Departed returns the index in owners of a live pin made for the same
// client (hash) that names none of p's upstreams, or -1. Call it when
// Owner says RouteUnknown: such a pin is most likely the session's own,
// its owner just removed from the pool by a reload. Caddy runs the new
// configuration before it cleans up the old one, and only that clean-up
// turns the removed upstream's pins into tombstones; in between, the
// session's requests must still fail rather than reach a node that never
// knew it. (Another pool whose server minted the same sid for the same
// client address is the price: its session's requests here would fail
// too.)
func Departed[U any](p Pool[U], owners []store.Owner, client uint64) int {
	for i, o := range owners {
		if !o.Gone && o.Client == client && p.index(o.Dial) < 0 {
			return i
		}
	}
	return -1
}

func (p Pool[U]) index(dial string) int {
	for i, u := range p.Upstreams {
		if p.Dial(u) == dial {
			return i
		}
	}
	return -1
}

// Hash picks an available upstream by rendezvous (highest random weight)
// hashing of key, exactly as Caddy's ip_hash and client_ip_hash policies
// do: the same key and pool give the same upstream as Caddy's own
// client_ip_hash, so a handshake placed by that fallback and a later
// request for the same session agree. It returns -1 if none is available.
func Hash[U any](p Pool[U], key string) int {
	var best uint64
	chosen := -1
	for i, u := range p.Upstreams {
		if !p.Available(u) {
			continue
		}
		// xxhash over dial+key, streamed so that nothing is allocated;
		// identical to hashing the concatenation as Caddy does
		var d xxhash.Digest
		d.Reset()
		_, _ = d.WriteString(p.Dial(u))
		_, _ = d.WriteString(key)
		if h := d.Sum64(); h > best {
			best, chosen = h, i
		}
	}
	return chosen
}
