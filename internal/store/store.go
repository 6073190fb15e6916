// Package store defines where the socketio modules keep their pins: which
// upstream owns each Engine.IO session.
//
// A Store maps a session id (sid) to the upstream, named by its dial
// address, that minted it. The in-memory implementation (package memory)
// is the default; a shared implementation lets several Caddy instances
// agree on every pin. Stores outlive config reloads: see Acquire.
//
// A pin whose session has ended on its owner (the owner disowned it, or
// left the configuration) is not forgotten at once: it stays as a
// tombstone, reported as Gone, until it expires, so that the session's
// late requests fail fast instead of reaching a node that never knew it.
package store

import (
	"time"

	"github.com/cespare/xxhash/v2"
)

// Store is a bounded, expiring map from session ids to owning upstreams.
// All methods are safe for concurrent use. Lookup and Touch run for every
// request of a session: for a sid the store holds they must not allocate
// nor block on I/O. A shared store (see Shared) keeps the pins it knows
// in memory too and goes to its backend only when it must: Lookup of a
// sid it does not hold (one round trip, bounded by the store's timeout,
// none while the backend is known to be down) and Pin (one round trip,
// likewise bounded: the pin must be shared before the handshake's body
// reaches the client).
type Store interface {
	// Lookup appends the unexpired pins of sid, newest first, to dst and
	// returns it. Callers pass a small array on the stack
	// (var a [MaxOwners]Owner; s.Lookup(sid, a[:0])).
	Lookup(sid string, dst []Owner) []Owner
	// Touch marks the pin behind o (from Lookup) as used now, postponing
	// its expiry. Tombstones are not touched: they expire on schedule.
	// It never waits on I/O: a shared store refreshes its backend in the
	// background.
	Touch(o Owner)
	// Pin records that dial minted sid for a client whose address hashes
	// to client (see ClientHash). Expired pins and tombstones of the sid
	// are replaced: a node may mint a sid again once its session ended.
	// A shared store returns once the backend has the pin, or its
	// timeout has passed.
	Pin(sid, dial string, client uint64) PinResult
	// Drop turns the pin behind o into a tombstone and reports whether
	// it was live before.
	Drop(o Owner) bool
	// DropDial is Drop for the pin of sid to dial, if there is one.
	DropDial(sid, dial string) bool

	// Acquire records that a loaded configuration routes to each of
	// dials; Release undoes one Acquire. The pins of a dial that no
	// configuration uses any more become tombstones.
	Acquire(dials []string)
	Release(dials []string)

	// Configure sets the idle TTL and the most pins kept; Limits returns
	// them.
	Configure(ttl time.Duration, capacity int)
	Limits() (ttl time.Duration, capacity int)

	// Stats returns the store's counters; Census counts the unexpired
	// pins per owning dial address (0 for an acquired dial that owns
	// none), tombstones apart. Both are for operators, not for requests.
	Stats() Stats
	Census() (live map[string]int, tombstones int)
}

// Shared is a Store whose pins several Caddy instances share through a
// backend (Redis). While the backend cannot be reached, each instance
// only knows its own pins, so new sessions must be placed the same way by
// every instance without it: by client-IP hash.
type Shared interface {
	Store
	// Reachable reports whether the backend answered lately. It is an
	// atomic load, cheap enough for every request.
	Reachable() bool
}

// Maintainer is a Store that needs periodic work while it is in use
// (advancing its clock, sweeping expired pins). Acquire runs Maintain in
// a goroutine until the last holder releases the store.
type Maintainer interface {
	Maintain(stop <-chan struct{})
}

// MaxOwners bounds how many upstreams may hold live pins for one sid at
// the same time. Two nodes minting the same sid is rare (random 20-char
// ids) or routine (sequential ids such as "1", "2", … from some servers);
// either way a handful of owners is all that can be told apart.
const MaxOwners = 4

// Defaults used until Configure is called.
const (
	DefaultTTL      = 90 * time.Second
	DefaultCapacity = 1_000_000
)

// Owner is an unexpired pin returned by Lookup.
type Owner struct {
	// Dial is the owning upstream's dial address.
	Dial string
	// Client is the hash of the client address that made the handshake.
	Client uint64
	// Gone is true for a tombstone: the session ended on its owner, and
	// its requests must fail rather than reach another upstream.
	Gone bool

	// Ref and Stamp belong to the store that returned the owner (its
	// reference to the pin, and the clock reading of the lookup); callers
	// pass them back unchanged through Touch and Drop.
	Ref   any
	Stamp uint32
}

// PinResult says what Pin did.
type PinResult uint8

// Results of Pin.
const (
	// Pinned: a new pin was created.
	Pinned PinResult = iota
	// Refreshed: the same upstream already owned the sid.
	Refreshed
	// Collided: the sid was already live on another upstream; the new
	// owner was added beside it, and lookups tell them apart by client.
	Collided
	// Refused: MaxOwners live owners already hold the sid; nothing
	// changed.
	Refused
)

// Stats is a snapshot of a Store's counters.
type Stats struct {
	// Pins is the number of pins held, tombstones included.
	Pins int
	// Pinned counts pins ever created.
	Pinned uint64
	// Collisions counts handshakes whose sid already had a live pin to
	// another upstream.
	Collisions uint64
	// Evicted counts pins removed to stay within the capacity.
	Evicted uint64
	// Expired counts pins removed after their idle TTL.
	Expired uint64
	// Dropped counts pins turned into tombstones because their session
	// ended on the owner.
	Dropped uint64
	// Refused counts handshakes not pinned because MaxOwners live pins
	// already held their sid.
	Refused uint64
}

// ClientHash returns the value Pin and Lookup use to tell clients apart.
func ClientHash(clientIP string) uint64 {
	return xxhash.Sum64String(clientIP)
}
