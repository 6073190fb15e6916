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
	// RouteOwnerDown: the sid is pinned to an upstream of this pool that
	// is not available. No other upstream knows the session, so the
	// request must fail fast and the client start a new one.
	RouteOwnerDown
	// RouteUnknown: the sid is not pinned to any upstream of this pool
	// (the proxy restarted, the pin expired, or the handshake was not
	// observed); the client address picks the upstream, as the default
	// fallback did for the handshake.
	RouteUnknown
	// RouteRefused: the request's Engine.IO parameters are malformed and
	// it must not be routed at all.
	RouteRefused
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
//   - RouteUnknown: no pin names an upstream of this pool.
//
// When two upstreams minted the same sid (a collision), the pin made for
// the same client address wins; when none or both match, the newest does.
// Pins naming upstreams outside the pool belong to another pool (another
// site's cluster may mint the same ids), except tombstones of upstreams
// that left every configuration: those still fail the request.
func Owner[U any](p Pool[U], owners []store.Owner, client uint64) (upstream, owner int, route Route) {
	best, bestOwner, goneOwner := -1, -1, -1
	for oi, o := range owners {
		i := p.index(o.Dial)
		if i < 0 {
			if o.Gone && goneOwner < 0 {
				goneOwner = oi
			}
			continue
		}
		switch {
		case best < 0:
			best, bestOwner = i, oi
		case o.Client == client && owners[bestOwner].Client != client:
			best, bestOwner = i, oi
		}
	}
	switch {
	case best < 0 && goneOwner >= 0:
		return -1, goneOwner, RouteOwnerDown
	case best < 0:
		return -1, -1, RouteUnknown
	case owners[bestOwner].Gone || !p.Available(p.Upstreams[best]):
		return -1, bestOwner, RouteOwnerDown
	}
	return best, bestOwner, RouteOwner
}

// Departed returns the index in owners of a pin made for the same client
// (hash) that names none of p's upstreams, or -1. Call it when Owner says
// RouteUnknown: such a pin is most likely the session's own, its owner
// just removed from the pool by a reload. Caddy runs the new configuration
// before it cleans up the old one, and only that clean-up turns the
// removed upstream's pins into tombstones; in between, the session's
// requests must still fail rather than reach a node that never knew it.
// (Another pool whose server minted the same sid for the same client
// address is the price: its session's requests here would fail too.)
func Departed(owners []store.Owner, client uint64) int {
	for i, o := range owners {
		if !o.Gone && o.Client == client {
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
