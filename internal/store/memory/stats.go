package memory

import (
	"sync/atomic"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

type counters struct {
	pinned, collisions, evicted, expired, dropped, refused atomic.Uint64
}

// Len returns the number of pins held, live or awaiting a sweep.
func (s *Store) Len() int {
	s.writer.Lock()
	defer s.writer.Unlock()
	return s.count
}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() store.Stats {
	return store.Stats{
		Pins:       s.Len(),
		Pinned:     s.stats.pinned.Load(),
		Collisions: s.stats.collisions.Load(),
		Evicted:    s.stats.evicted.Load(),
		Expired:    s.stats.expired.Load(),
		Dropped:    s.stats.dropped.Load(),
		Refused:    s.stats.refused.Load(),
	}
}
