// Package memory is the default pin store: it keeps every pin in this
// process's memory.
//
// Lookups are lock-striped (index.go) so that the requests of many
// sessions never wait on one another; every change (a new pin, an
// eviction) goes through one writer lock that also keeps the pins in
// least-recently-used order (eviction.go), which makes expiry and eviction
// exact and O(1) per pin. Time is a ticked clock of whole seconds
// (clock.go).
package memory

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// Store is the in-memory store.Store. The zero value is not usable; use
// New.
type Store struct {
	shards [shardCount]shard

	// writer serialises every change to the maps and the LRU list.
	writer sync.Mutex
	// head is the most recently (re)queued entry, tail the least.
	head, tail *entry
	count      int

	dials dialTable

	// limits, set by Configure; read without the writer lock
	ttl      atomic.Uint32 // seconds
	capacity atomic.Int64

	// elapsed reads the clock: the time since the store was made. Tests
	// replace the clock; the real one reads only the monotonic clock
	// (time.Since), half the cost of time.Now.
	elapsed func() time.Duration
	// ticked is elapsed in seconds as of the last Tick; once ticking is
	// set, every operation reads it instead of the clock.
	ticked  atomic.Uint32
	ticking atomic.Bool

	stats counters
}

// entry is one (sid, owner) pin. Its size is what a session costs: keep it
// at 64 bytes.
type entry struct {
	sid  string
	dial uint32 // index in the dial table
	// touched is the clock reading (seconds since the store's epoch) of
	// the last request routed by this pin; refreshed without locks.
	touched atomic.Uint32
	// queued is the value touched had when the entry was last put at the
	// head of the LRU list; guarded by Store.writer.
	queued uint32
	// gone marks a tombstone: the session ended on its owner. It sits
	// here, in the padding after the three uint32s, so that the entry
	// is 64 bytes (72 after client would take the 80-byte size class).
	gone atomic.Bool
	// client is a hash of the client address that made the handshake; it
	// tells colliding owners of one sid apart.
	client     uint64
	prev, next *entry // LRU list, guarded by Store.writer
	sibling    *entry // another owner of the same sid, guarded by the shard
}

// ProcessKey names the process's in-memory store among the stores that
// outlive config reloads: store.Acquire(ProcessKey, Open).
const ProcessKey = "socketio.store.memory"

// Open returns a new store for store.Acquire.
func Open() (store.Store, error) { return New(), nil }

// New returns an empty store with the default limits.
func New() *Store {
	epoch := time.Now()
	return newWithClock(func() time.Duration { return time.Since(epoch) })
}

// NewWithClock returns an empty store that reads the time from now; it is
// for tests that move time forward without sleeping.
func NewWithClock(now func() time.Time) *Store {
	epoch := now()
	return newWithClock(func() time.Duration { return now().Sub(epoch) })
}

func newWithClock(elapsed func() time.Duration) *Store {
	s := &Store{elapsed: elapsed}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*entry)
	}
	s.dials.init()
	s.Configure(store.DefaultTTL, store.DefaultCapacity)
	return s
}

// Configure sets the idle TTL (rounded up to whole seconds) and the
// capacity. A smaller capacity takes effect at the next pin.
func (s *Store) Configure(ttl time.Duration, capacity int) {
	secs := (ttl + time.Second - 1) / time.Second
	if secs < 1 {
		secs = 1
	}
	s.ttl.Store(uint32(min(secs, 1<<31)))
	s.capacity.Store(int64(max(capacity, 1)))
}

// gone reports whether e is a tombstone: its session ended on the owner,
// or the owner left every configuration.
func (s *Store) gone(e *entry) bool {
	return e.gone.Load() || s.dials.retired(e.dial)
}

// Lookup appends the unexpired pins of sid, newest first, to dst and
// returns it. Callers pass a small array on the stack
// (var a [store.MaxOwners]store.Owner; s.Lookup(sid, a[:0])) so that a lookup does not
// allocate.
func (s *Store) Lookup(sid string, dst []store.Owner) []store.Owner {
	now := s.clock()
	sh := s.shardFor(sid)
	sh.mu.RLock()
	for e := sh.m[sid]; e != nil; e = e.sibling {
		if !s.expired(e, now) {
			dst = append(dst, store.Owner{Dial: s.dials.name(e.dial), Client: e.client, Gone: s.gone(e), Ref: e, Stamp: now})
		}
	}
	sh.mu.RUnlock()
	return dst
}

// Touch marks the pin behind o as used now, postponing its expiry. It
// takes no lock. Tombstones are not touched: they expire on schedule.
func (s *Store) Touch(o store.Owner) {
	e, _ := o.Ref.(*entry)
	if e == nil || o.Gone {
		return
	}
	// skip the store when it would not change, so that the requests of a
	// busy session do not keep writing to the same cache line; and never
	// move touched back (a concurrent request may have read the clock
	// later)
	if e.touched.Load() < o.Stamp {
		e.touched.Store(o.Stamp)
	}
}

// Pin records that dial minted sid for a client whose address hashes to
// client (see ClientHash), evicting the least recently used pins if the
// store is full. Expired pins and tombstones of the sid are replaced: a
// node may mint a sid again once the session that had it ended.
func (s *Store) Pin(sid, dial string, client uint64) store.PinResult {
	id := s.dials.intern(dial)
	now := s.clock()

	s.writer.Lock()
	defer s.writer.Unlock()

	s.removeDead(sid, now)

	sh := s.shardFor(sid)
	sh.mu.Lock()
	var liveOwners int
	for e := sh.m[sid]; e != nil; e = e.sibling {
		if e.dial == id {
			e.client = client
			sh.mu.Unlock()
			e.touched.Store(now)
			s.requeue(e)
			return store.Refreshed
		}
		liveOwners++
	}
	if liveOwners >= store.MaxOwners {
		sh.mu.Unlock()
		s.stats.refused.Add(1)
		return store.Refused
	}
	// the sid is shared with the raw query or a response buffer: copy it
	// so that the pin does not keep either alive
	e := &entry{sid: strings.Clone(sid), dial: id, client: client, queued: now}
	e.touched.Store(now)
	e.sibling = sh.m[sid]
	sh.m[e.sid] = e
	sh.mu.Unlock()

	s.pushFront(e)
	s.count++
	s.stats.pinned.Add(1)
	result := store.Pinned
	if liveOwners > 0 {
		result = store.Collided
		s.stats.collisions.Add(1)
	}
	for capacity := int(s.capacity.Load()); s.count > capacity; {
		s.evictOldest(now)
	}
	return result
}

// Drop turns the pin behind o into a tombstone: its session ended on the
// owner (engine.io answered "Session ID unknown", or the owner is down).
// Until the pin expires, Lookup reports it Gone, so the session's late
// requests fail fast. It reports whether o was live before.
func (s *Store) Drop(o store.Owner) bool {
	e, _ := o.Ref.(*entry)
	if e == nil || !e.gone.CompareAndSwap(false, true) {
		return false
	}
	s.stats.dropped.Add(1)
	return true
}

// DropDial is Drop for the pin of sid to dial, if there is one.
func (s *Store) DropDial(sid, dial string) bool {
	var buf [store.MaxOwners]store.Owner
	for _, o := range s.Lookup(sid, buf[:0]) {
		if o.Dial == dial {
			return s.Drop(o)
		}
	}
	return false
}

// Acquire records that a loaded configuration routes to each of dials. A
// dial stays current until every Acquire of it has been matched by a
// Release.
func (s *Store) Acquire(dials []string) {
	s.dials.acquire(dials)
}

// Release undoes one Acquire. The pins of a dial that no configuration
// uses any more become tombstones at once: its sessions cannot be reached
// through this proxy, and if the address comes back it is a new upstream
// that never knew them. They are removed as they expire.
func (s *Store) Release(dials []string) {
	s.dials.release(dials)
}

// Census counts the unexpired pins per owning dial address, tombstones
// apart; a dial that a loaded configuration routes to is counted even
// when it owns no pin (0). It reads every shard, so it is for operators,
// not for requests.
func (s *Store) Census() (live map[string]int, tombstones int) {
	now := s.clock()
	live = make(map[string]int)
	for _, dial := range s.dials.current() {
		live[dial] = 0
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for _, e := range sh.m {
			for ; e != nil; e = e.sibling {
				switch {
				case s.expired(e, now):
				case s.gone(e):
					tombstones++
				default:
					live[s.dials.name(e.dial)]++
				}
			}
		}
		sh.mu.RUnlock()
	}
	return live, tombstones
}

// Limits returns the TTL and capacity in force.
func (s *Store) Limits() (ttl time.Duration, capacity int) {
	return time.Duration(s.ttl.Load()) * time.Second, int(s.capacity.Load())
}

// Interface guards
var (
	_ store.Store      = (*Store)(nil)
	_ store.Maintainer = (*Store)(nil)
)
