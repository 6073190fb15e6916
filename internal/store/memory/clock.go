package memory

import (
	"time"
)

// The store's clock counts whole seconds since the store was made: one
// second is the resolution of every TTL, and a reading fits the uint32
// fields of an entry.

// tickInterval is how often Maintain advances the clock (see Tick).
const tickInterval = time.Second

// sweepTicks is how many ticks pass between two sweeps of expired pins.
// Expired pins never route a request (Lookup checks the TTL), so this only
// bounds how long they hold memory.
const sweepTicks = 5

// sweepBatch bounds the pins one Sweep call removes, so that handshakes
// never wait long for the store's writer lock.
const sweepBatch = 4096

// clock returns seconds since the store's epoch; one second is the
// resolution of every TTL.
func (s *Store) clock() uint32 {
	if s.ticking.Load() {
		return s.ticked.Load()
	}
	return s.read()
}

func (s *Store) read() uint32 {
	return uint32(s.elapsed() / time.Second)
}

// Tick reads the clock for the store's operations. Once a store has been
// ticked, lookups, pins and sweeps use the reading of the last Tick
// instead of reading the clock themselves (an atomic load instead of a
// clock read on every request), so its owner must keep calling Tick,
// about once a second. The reading is then up to one tick old: TTLs are
// whole seconds anyway, and a store whose ticks stop keeps its pins
// longer, never shorter.
func (s *Store) Tick() {
	now := s.read()
	for {
		old := s.ticked.Load()
		if now <= old || s.ticked.CompareAndSwap(old, now) {
			break
		}
	}
	s.ticking.Store(true)
}

// expired reports whether e has outlived the TTL at clock reading now.
// A concurrent request may have touched e after now was read, so touched
// can be ahead of now: that pin is fresh (now-touched would wrap).
func (s *Store) expired(e *entry, now uint32) bool {
	return isExpired(now, e.touched.Load(), s.ttl.Load())
}

func isExpired(now, touched, ttl uint32) bool {
	return now > touched && now-touched > ttl
}

// Maintain ticks the store's clock every second and sweeps expired pins
// every few seconds, in batches, until stop is closed.
func (s *Store) Maintain(stop <-chan struct{}) {
	s.Tick()
	ticker := time.NewTicker(tickInterval)
	defer ticker.Stop()
	for ticks := 1; ; ticks++ {
		select {
		case <-stop:
			return
		case <-ticker.C:
			s.Tick()
			if ticks%sweepTicks != 0 {
				continue
			}
			for s.Sweep(sweepBatch) == sweepBatch {
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}
}
