package memory

import (
	"encoding/base64"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// The benchmarks of this file measure the store at 1k, 100k and 1M pins.
// Filling a store is setup: it runs outside the timer, once per process
// and size (the filled stores are cached across sub-benchmarks and -count
// runs). Run the parallel ones with -cpu 1,2: a lookup that serialised on
// one lock would not get faster with a second core; the rwmutex_map
// baseline shows what one lock does. bench/go-bench.sh runs them.

var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"100k", 100_000}, {"1M", 1_000_000}}

// benchTTL keeps every pin alive for as long as the benchmarks run.
const benchTTL = 24 * time.Hour

var benchDials = []string{"10.0.0.1:3000", "10.0.0.2:3000", "10.0.0.3:3000"}

// benchStride walks the pins in a fixed pseudo-random order: a prime,
// hence coprime with every size, so that a walk visits every pin once per
// pass and consecutive lookups land on unrelated memory, as the requests
// of unrelated sessions do.
const benchStride = 7919

var (
	sidPool []string
	sidRand = rand.New(rand.NewPCG(1, 2))
)

// benchSIDs returns n distinct session ids shaped like engine.io's (and
// python-engineio's): 15 random bytes in base64url, 20 characters.
func benchSIDs(n int) []string {
	var raw [15]byte
	for len(sidPool) < n {
		for i := range raw {
			raw[i] = byte(sidRand.Uint32())
		}
		sidPool = append(sidPool, base64.RawURLEncoding.EncodeToString(raw[:]))
	}
	return sidPool[:n:n]
}

func heapAfterGC() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// filledStore is a store holding n pins (capacity n) for the lookup and
// refresh benchmarks, which do not change which sids it holds.
type filledStore struct {
	store *Store
	sids  []string
	// bytesPerPin is the live heap the pins added, per pin, read from
	// runtime.MemStats after a GC before and after filling the store
	bytesPerPin float64
}

var filledStores = map[int]*filledStore{}

func filled(b *testing.B, n int) *filledStore {
	b.Helper()
	if f, ok := filledStores[n]; ok {
		return f
	}
	sids := benchSIDs(n) // before the first reading: they are not the store's
	before := heapAfterGC()
	s := New()
	s.Tick() // as the module runs it: operations read the last tick
	s.Configure(benchTTL, n)
	for i, sid := range sids {
		if r := s.Pin(sid, benchDials[i%len(benchDials)], uint64(i)); r != store.Pinned {
			b.Fatalf("filling: Pin(%q) = %v, want Pinned", sid, r)
		}
	}
	after := heapAfterGC()
	f := &filledStore{store: s, sids: sids, bytesPerPin: float64(after-before) / float64(n)}
	filledStores[n] = f
	return f
}

// lockedMap is the baseline: one RWMutex over one map, the simplest
// concurrent sid -> dial table. Like the store, it copies the sids it
// keeps (a real table must: they come from request and response
// buffers), so that a lookup compares against memory of its own.
type lockedMap struct {
	mu sync.RWMutex
	m  map[string]string
	// bytesPerSID is measured as the store's bytesPerPin is
	bytesPerSID float64
}

func (l *lockedMap) lookup(sid string) (string, bool) {
	l.mu.RLock()
	dial, ok := l.m[sid]
	l.mu.RUnlock()
	return dial, ok
}

var lockedMaps = map[int]*lockedMap{}

func lockedMapOf(sids []string) *lockedMap {
	if l, ok := lockedMaps[len(sids)]; ok {
		return l
	}
	before := heapAfterGC()
	l := &lockedMap{m: make(map[string]string)}
	for i, sid := range sids {
		l.m[strings.Clone(sid)] = benchDials[i%len(benchDials)]
	}
	l.bytesPerSID = float64(heapAfterGC()-before) / float64(len(sids))
	lockedMaps[len(sids)] = l
	return l
}

// BenchmarkLookup measures what the policy does for every request of a
// session: Lookup, then Touch of the owner (store=pins), against a lookup
// in one RWMutex-protected map (store=rwmutex_map), walking every pin of
// a full store. Serial runs report the memory each holds per pin (B/pin).
func BenchmarkLookup(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("pins="+size.name, func(b *testing.B) {
			f := filled(b, size.n)
			s, sids, n, stride := f.store, f.sids, size.n, benchStride%size.n
			locked := lockedMapOf(sids)
			b.Run("mode=serial", func(b *testing.B) {
				b.Run("store=pins", func(b *testing.B) {
					var buf [store.MaxOwners]store.Owner
					j, found := 0, 0
					b.ReportAllocs()
					for b.Loop() {
						for _, o := range s.Lookup(sids[j], buf[:0]) {
							s.Touch(o)
							found++
						}
						if j += stride; j >= n {
							j -= n
						}
					}
					if found != b.N {
						b.Fatalf("%d of %d lookups found their pin", found, b.N)
					}
					b.ReportMetric(f.bytesPerPin, "B/pin")
				})
				b.Run("store=rwmutex_map", func(b *testing.B) {
					j, found := 0, 0
					b.ReportAllocs()
					for b.Loop() {
						if _, ok := locked.lookup(sids[j]); ok {
							found++
						}
						if j += stride; j >= n {
							j -= n
						}
					}
					if found != b.N {
						b.Fatalf("%d of %d lookups found their sid", found, b.N)
					}
					b.ReportMetric(locked.bytesPerSID, "B/pin")
				})
			})
			b.Run("mode=parallel", func(b *testing.B) {
				b.Run("store=pins", func(b *testing.B) {
					var starts, missed atomic.Int64
					b.ReportAllocs()
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						var buf [store.MaxOwners]store.Owner
						j := int(starts.Add(1)*104_729) % n
						for pb.Next() {
							owners := s.Lookup(sids[j], buf[:0])
							if len(owners) == 0 {
								missed.Add(1)
							}
							for _, o := range owners {
								s.Touch(o)
							}
							if j += stride; j >= n {
								j -= n
							}
						}
					})
					// a miss is not the benchmark's fault: a lookup that read
					// the clock just before a second boundary, racing a touch
					// of the same pin just after it, sees the pin as expired
					// (BENCHMARKS.md); count them rather than fail the run
					b.ReportMetric(float64(missed.Load())/float64(b.N), "missed/op")
				})
				b.Run("store=rwmutex_map", func(b *testing.B) {
					var starts, missed atomic.Int64
					b.ReportAllocs()
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						j := int(starts.Add(1)*104_729) % n
						for pb.Next() {
							if _, ok := locked.lookup(sids[j]); !ok {
								missed.Add(1)
							}
							if j += stride; j >= n {
								j -= n
							}
						}
					})
					if m := missed.Load(); m > 0 {
						b.Fatalf("%d lookups missed their sid", m)
					}
				})
			})
		})
	}
}

// BenchmarkRefresh measures a Pin of a sid its owner already holds (the
// Refreshed result: the same upstream minted the same sid again, as
// servers with sequential ids do after a restart): the writer lock, the
// sid's shard, and moving the pin to the head of the LRU list.
func BenchmarkRefresh(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("pins="+size.name, func(b *testing.B) {
			f := filled(b, size.n)
			s, sids, n, stride := f.store, f.sids, size.n, benchStride%size.n
			b.Run("mode=serial", func(b *testing.B) {
				j := 0
				b.ReportAllocs()
				for b.Loop() {
					if r := s.Pin(sids[j], benchDials[j%len(benchDials)], uint64(j)); r != store.Refreshed {
						b.Fatalf("Pin = %v, want Refreshed", r)
					}
					if j += stride; j >= n {
						j -= n
					}
				}
			})
			b.Run("mode=parallel", func(b *testing.B) {
				var starts, wrong atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					j := int(starts.Add(1)*104_729) % n
					for pb.Next() {
						if s.Pin(sids[j], benchDials[j%len(benchDials)], uint64(j)) != store.Refreshed {
							wrong.Add(1)
						}
						if j += stride; j >= n {
							j -= n
						}
					}
				})
				// the same race: a Pin whose clock reading is older than a
				// concurrent refresh removes the pin as expired and pins it
				// anew; count these rather than fail the run
				b.ReportMetric(float64(wrong.Load())/float64(b.N), "repinned/op")
			})
		})
	}
}

// pinStores are full stores (capacity n) that BenchmarkPin pins new sids
// into: each Pin also evicts the least recently used pin, so the store
// stays at n pins, and an op is a pin's whole life in the store (every
// pin is removed once, by expiry or eviction).
var pinStores = map[int]*Store{}

func fullStore(b *testing.B, n int) *Store {
	b.Helper()
	if s, ok := pinStores[n]; ok {
		return s
	}
	s := New()
	s.Tick() // as the module runs it: operations read the last tick
	s.Configure(benchTTL, n)
	for i, sid := range benchSIDs(n) {
		if r := s.Pin(sid, benchDials[i%len(benchDials)], uint64(i)); r != store.Pinned {
			b.Fatalf("filling: Pin(%q) = %v, want Pinned", sid, r)
		}
	}
	pinStores[n] = s
	return s
}

// newSIDs makes 20-character sids no store has seen: a prefix unique to
// the caller, then a decimal counter. next returns a string that shares
// the generator's buffer, as a handshake's sid shares the response
// buffer; Pin copies what it keeps (TestPinCopiesSID), so making a sid
// costs the benchmark no allocation.
type newSIDs struct{ buf [20]byte }

var sidPrefixes atomic.Uint64

func newSIDGenerator() *newSIDs {
	g := new(newSIDs)
	prefix := strconv.AppendUint(nil, sidPrefixes.Add(1)+1<<32, 36) // 7 characters
	n := copy(g.buf[:], "new-")
	n += copy(g.buf[n:], prefix)
	for i := n; i < len(g.buf); i++ {
		g.buf[i] = '0'
	}
	return g
}

func (g *newSIDs) next() string {
	for i := len(g.buf) - 1; i >= 0; i-- {
		if g.buf[i] < '9' {
			g.buf[i]++
			break
		}
		g.buf[i] = '0'
	}
	return unsafe.String(&g.buf[0], len(g.buf))
}

// BenchmarkPin measures a handshake's Pin of a new sid into a full store.
// Pins go through one writer lock by design, so the parallel runs show
// what contention costs, not scaling.
func BenchmarkPin(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("pins="+size.name, func(b *testing.B) {
			s := fullStore(b, size.n)
			b.Run("mode=serial", func(b *testing.B) {
				g := newSIDGenerator()
				b.ReportAllocs()
				for b.Loop() {
					if r := s.Pin(g.next(), benchDials[0], 1); r != store.Pinned {
						b.Fatalf("Pin = %v, want Pinned", r)
					}
				}
				if s.Len() != size.n {
					b.Fatalf("store holds %d pins, want %d", s.Len(), size.n)
				}
			})
			b.Run("mode=parallel", func(b *testing.B) {
				var wrong atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					g := newSIDGenerator()
					for pb.Next() {
						if s.Pin(g.next(), benchDials[1], 2) != store.Pinned {
							wrong.Add(1)
						}
					}
				})
				if w := wrong.Load(); w > 0 {
					b.Fatalf("%d pins were not new", w)
				}
			})
		})
	}
}

// sweptStore is a full store on a fake clock for BenchmarkTouchSweep,
// with the position of its walk, which goes on across runs.
type sweptStore struct {
	store *Store
	sids  []string
	sec   atomic.Int64
	next  int
}

var sweptStores = map[int]*sweptStore{}

func swept(b *testing.B, n int) *sweptStore {
	b.Helper()
	if st, ok := sweptStores[n]; ok {
		return st
	}
	st := &sweptStore{sids: benchSIDs(n)}
	st.sec.Store(1_800_000_000)
	st.store = NewWithClock(func() time.Time { return time.Unix(st.sec.Load(), 0) })
	// a year: the clock moves a second per pass over the pins
	st.store.Configure(365*24*time.Hour, n)
	for i, sid := range st.sids {
		if r := st.store.Pin(sid, benchDials[i%len(benchDials)], uint64(i)); r != store.Pinned {
			b.Fatalf("filling: Pin(%q) = %v, want Pinned", sid, r)
		}
	}
	sweptStores[n] = st
	return st
}

// BenchmarkTouchSweep measures what keeping a live session's pin fresh
// costs: a request in a new clock second (Lookup, and a Touch that stores
// the new time), plus its share of the sweeper's work (Sweep(4096) after
// every 1024 requests, as the sweeper runs it, which moves the touched
// pins back to the head of the LRU list under the writer lock). The walk
// follows the LRU order, so every sweep requeues the pins touched since
// the last one. Serial only: the sweeper is one goroutine.
func BenchmarkTouchSweep(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("pins="+size.name, func(b *testing.B) {
			st := swept(b, size.n)
			s, sids, n := st.store, st.sids, size.n
			var buf [store.MaxOwners]store.Owner
			found := 0
			b.ReportAllocs()
			for b.Loop() {
				j := st.next
				if j == 0 {
					st.sec.Add(1) // a new pass: every pin's next touch stores
				}
				for _, o := range s.Lookup(sids[j], buf[:0]) {
					s.Touch(o)
					found++
				}
				j++
				if j%1024 == 0 || j == n {
					s.Sweep(4096)
				}
				if j == n {
					j = 0
				}
				st.next = j
			}
			if found != b.N {
				b.Fatalf("%d of %d lookups found their pin", found, b.N)
			}
		})
	}
}
