// Package pins remembers which upstream owns each Engine.IO session.
//
// A Store maps a session id (sid) to the upstream, named by its dial
// address, that minted it. Lookups are lock-striped so that the requests
// of many sessions never wait on one another; every change (a new pin, an
// eviction) goes through one writer lock that also keeps the pins in
// least-recently-used order, which makes expiry and eviction exact and
// O(1) per pin.
//
// A pin whose session has ended on its owner (the owner disowned it, went
// down, or left the configuration) is not forgotten at once: it stays as a
// tombstone, reported as Gone, until it expires, so that the session's
// late requests fail fast instead of reaching a node that never knew it.
package pins

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// MaxOwners bounds how many upstreams may hold live pins for one sid at
// the same time. Two nodes minting the same sid is rare (random 20-char
// ids) or routine (sequential ids such as "1", "2", … from some servers);
// either way a handful of owners is all that can be told apart.
const MaxOwners = 4

const shardCount = 64

// Store is a bounded, expiring map from session ids to owning upstreams.
// The zero value is not usable; use New. All methods are safe for
// concurrent use.
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

// shard is one stripe of the sid index, padded to a cache line so that
// readers of neighbouring shards do not slow each other down.
type shard struct {
	shardData
	_ [cacheLine - unsafe.Sizeof(shardData{})%cacheLine]byte
}

type shardData struct {
	mu sync.RWMutex
	m  map[string]*entry
}

const cacheLine = 64

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

type counters struct {
	pinned, collisions, evicted, expired, dropped, refused atomic.Uint64
}

// Stats is a snapshot of a Store's counters.
type Stats struct {
	// Pins is the number of live pins.
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
	// ended on the owner (it disowned the sid or was unavailable).
	Dropped uint64
	// Refused counts handshakes not pinned because MaxOwners live pins
	// already held their sid.
	Refused uint64
}

// Defaults used until Configure is called.
const (
	DefaultTTL      = 90 * time.Second
	DefaultCapacity = 1_000_000
)

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
	s.Configure(DefaultTTL, DefaultCapacity)
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

func (s *Store) shardFor(sid string) *shard {
	return &s.shards[xxhash.Sum64String(sid)%shardCount]
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

// gone reports whether e is a tombstone: its session ended on the owner,
// or the owner left every configuration.
func (s *Store) gone(e *entry) bool {
	return e.gone.Load() || s.dials.retired(e.dial)
}

// Owner is an unexpired pin returned by Lookup.
type Owner struct {
	// Dial is the owning upstream's dial address.
	Dial string
	// Client is the hash of the client address that made the handshake.
	Client uint64
	// Gone is true for a tombstone: the session ended on its owner, and
	// its requests must fail rather than reach another upstream.
	Gone bool
	// now is the clock reading of the Lookup that returned this owner,
	// so that Touch does not read the clock again
	now uint32
	e   *entry
}

// Lookup appends the unexpired pins of sid, newest first, to dst and
// returns it. Callers pass a small array on the stack
// (var a [MaxOwners]Owner; s.Lookup(sid, a[:0])) so that a lookup does not
// allocate.
func (s *Store) Lookup(sid string, dst []Owner) []Owner {
	now := s.clock()
	sh := s.shardFor(sid)
	sh.mu.RLock()
	for e := sh.m[sid]; e != nil; e = e.sibling {
		if !s.expired(e, now) {
			dst = append(dst, Owner{Dial: s.dials.name(e.dial), Client: e.client, Gone: s.gone(e), e: e, now: now})
		}
	}
	sh.mu.RUnlock()
	return dst
}

// Touch marks the pin behind o as used now, postponing its expiry. It
// takes no lock. Tombstones are not touched: they expire on schedule.
func (s *Store) Touch(o Owner) {
	if o.e == nil || o.Gone {
		return
	}
	// skip the store when it would not change, so that the requests of a
	// busy session do not keep writing to the same cache line; and never
	// move touched back (a concurrent request may have read the clock
	// later)
	if o.e.touched.Load() < o.now {
		o.e.touched.Store(o.now)
	}
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

// Pin records that dial minted sid for a client whose address hashes to
// client (see ClientHash), evicting the least recently used pins if the
// store is full. Expired pins and tombstones of the sid are replaced: a
// node may mint a sid again once the session that had it ended.
func (s *Store) Pin(sid, dial string, client uint64) PinResult {
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
			return Refreshed
		}
		liveOwners++
	}
	if liveOwners >= MaxOwners {
		sh.mu.Unlock()
		s.stats.refused.Add(1)
		return Refused
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
	result := Pinned
	if liveOwners > 0 {
		result = Collided
		s.stats.collisions.Add(1)
	}
	for capacity := int(s.capacity.Load()); s.count > capacity; {
		s.evictOldest(now)
	}
	return result
}

// removeDead removes the expired pins and tombstones of sid, so that a new
// handshake never counts them as owners. Caller holds s.writer.
func (s *Store) removeDead(sid string, now uint32) {
	sh := s.shardFor(sid)
	for {
		var dead *entry
		sh.mu.RLock()
		for e := sh.m[sid]; e != nil; e = e.sibling {
			if s.expired(e, now) || s.gone(e) {
				dead = e
				break
			}
		}
		sh.mu.RUnlock()
		if dead == nil {
			return
		}
		s.remove(dead)
		s.stats.expired.Add(1)
	}
}

// Drop turns the pin behind o into a tombstone: its session ended on the
// owner (engine.io answered "Session ID unknown", or the owner is down).
// Until the pin expires, Lookup reports it Gone, so the session's late
// requests fail fast. It reports whether o was live before.
func (s *Store) Drop(o Owner) bool {
	if o.e == nil || !o.e.gone.CompareAndSwap(false, true) {
		return false
	}
	s.stats.dropped.Add(1)
	return true
}

// DropDial is Drop for the pin of sid to dial, if there is one.
func (s *Store) DropDial(sid, dial string) bool {
	var buf [MaxOwners]Owner
	for _, o := range s.Lookup(sid, buf[:0]) {
		if o.Dial == dial {
			return s.Drop(o)
		}
	}
	return false
}

// Sweep removes expired pins (tombstones included), at most limit of them
// (limit <= 0 means no limit), and returns how many it removed. Because
// the LRU list is ordered by last use and every pin shares one TTL, it
// stops at the first pin that is still fresh.
func (s *Store) Sweep(limit int) int {
	now := s.clock()
	ttl := s.ttl.Load()
	removed := 0
	s.writer.Lock()
	defer s.writer.Unlock()
	for e := s.tail; e != nil && (limit <= 0 || removed < limit); e = s.tail {
		touched := e.touched.Load()
		switch {
		case isExpired(now, touched, ttl):
			s.remove(e)
			s.stats.expired.Add(1)
		case touched != e.queued:
			// used since it was queued: give it its place back
			s.requeue(e)
			continue
		default:
			return removed
		}
		removed++
	}
	return removed
}

// Len returns the number of pins held, live or awaiting a sweep.
func (s *Store) Len() int {
	s.writer.Lock()
	defer s.writer.Unlock()
	return s.count
}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Pins:       s.Len(),
		Pinned:     s.stats.pinned.Load(),
		Collisions: s.stats.collisions.Load(),
		Evicted:    s.stats.evicted.Load(),
		Expired:    s.stats.expired.Load(),
		Dropped:    s.stats.dropped.Load(),
		Refused:    s.stats.refused.Load(),
	}
}

// evictOldest removes the least recently used pin. Entries used since they
// were queued are moved back to the head first (CLOCK with timestamps), so
// the one removed is the pin idle the longest. Caller holds s.writer.
func (s *Store) evictOldest(now uint32) {
	// every requeue makes an entry's queued mark current, so after at most
	// count requeues the tail is the oldest; the bound only guards against
	// touches racing the loop
	requeues := s.count
	for e := s.tail; e != nil; e = s.tail {
		if touched := e.touched.Load(); touched != e.queued && requeues > 0 {
			requeues--
			s.requeue(e)
			continue
		}
		s.remove(e)
		if s.expired(e, now) {
			s.stats.expired.Add(1)
		} else {
			s.stats.evicted.Add(1)
		}
		return
	}
}

// remove unlinks e from its shard and from the LRU list. Caller holds
// s.writer.
func (s *Store) remove(e *entry) {
	sh := s.shardFor(e.sid)
	sh.mu.Lock()
	first := sh.m[e.sid]
	switch {
	case first == e && e.sibling == nil:
		delete(sh.m, e.sid)
	case first == e:
		sh.m[e.sid] = e.sibling
	default:
		for p := first; p != nil; p = p.sibling {
			if p.sibling == e {
				p.sibling = e.sibling
				break
			}
		}
	}
	sh.mu.Unlock()
	s.unlink(e)
	s.count--
}

// requeue moves e to the head of the LRU list, remembering the touch it
// was queued for. Caller holds s.writer.
func (s *Store) requeue(e *entry) {
	e.queued = e.touched.Load()
	if s.head == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}

func (s *Store) pushFront(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *Store) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else if s.head == e {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else if s.tail == e {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// ClientHash returns the value Pin and Lookup use to tell clients apart.
func ClientHash(clientIP string) uint64 {
	return xxhash.Sum64String(clientIP)
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
// apart. It reads every shard, so it is for operators, not for requests.
func (s *Store) Census() (live map[string]int, tombstones int) {
	now := s.clock()
	live = make(map[string]int)
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
