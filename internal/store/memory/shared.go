package memory

import (
	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// These methods let a shared store (package redis) use a Store as its
// local layer: the pins it knows, served without I/O.

// SID returns the session id of the pin behind o, an Owner this store's
// Lookup returned, or "" if o is not one.
func SID(o store.Owner) string {
	if e, _ := o.Ref.(*entry); e != nil {
		return e.sid
	}
	return ""
}

// Clock returns the store's clock reading: whole seconds since the store
// was made.
func (s *Store) Clock() uint32 { return s.clock() }

// Used calls fn for every live pin (not a tombstone, not expired) used at
// or after clock reading since, shard by shard. fn runs under a shard's
// read lock: it must be quick and must not call the store.
func (s *Store) Used(since uint32, fn func(sid, dial string, client uint64)) {
	now := s.clock()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for _, e := range sh.m {
			for ; e != nil; e = e.sibling {
				if e.touched.Load() >= since && !s.expired(e, now) && !s.gone(e) {
					fn(e.sid, s.dials.name(e.dial), e.client)
				}
			}
		}
		sh.mu.RUnlock()
	}
}

// Known reports whether dial is an upstream this store routes to: one
// that a loaded configuration uses, or that minted a pin here, and that
// has not left every configuration since.
func (s *Store) Known(dial string) bool {
	id, ok := s.dials.lookup(dial)
	return ok && !s.dials.retired(id)
}
