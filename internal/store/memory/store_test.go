package memory

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/caddy-socketio/caddy-socketio/internal/fakeclock"
	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

func newTestStore(t *testing.T, ttl time.Duration, capacity int) (*Store, *fakeclock.Clock) {
	t.Helper()
	c := fakeclock.New(time.Unix(1_700_000_000, 0))
	s := NewWithClock(c.Now)
	s.Configure(ttl, capacity)
	return s, c
}

func dialsOf(owners []store.Owner) []string {
	var out []string
	for _, o := range owners {
		out = append(out, o.Dial)
	}
	return out
}

// lookup returns the dials of the pins of sid that still route requests.
func lookup(s *Store, sid string) []string {
	var buf [store.MaxOwners]store.Owner
	var live []store.Owner
	for _, o := range s.Lookup(sid, buf[:0]) {
		if !o.Gone {
			live = append(live, o)
		}
	}
	return dialsOf(live)
}

// tombstones returns the dials of the tombstones of sid.
func tombstones(s *Store, sid string) []string {
	var buf [store.MaxOwners]store.Owner
	var gone []store.Owner
	for _, o := range s.Lookup(sid, buf[:0]) {
		if o.Gone {
			gone = append(gone, o)
		}
	}
	return dialsOf(gone)
}

func TestPinLookup(t *testing.T) {
	s, _ := newTestStore(t, time.Minute, 100)
	if got := s.Pin("sid1", "a:1", 1); got != store.Pinned {
		t.Fatalf("Pin = %v, want Pinned", got)
	}
	if got := lookup(s, "sid1"); len(got) != 1 || got[0] != "a:1" {
		t.Fatalf("Lookup = %v, want [a:1]", got)
	}
	if got := lookup(s, "sid2"); len(got) != 0 {
		t.Fatalf("Lookup of an unknown sid = %v, want none", got)
	}
	if got := s.Pin("sid1", "a:1", 2); got != store.Refreshed {
		t.Fatalf("second Pin to the same dial = %v, want Refreshed", got)
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
}

func TestPinCopiesSID(t *testing.T) {
	s, _ := newTestStore(t, time.Minute, 100)
	buf := []byte("abcdef")
	s.Pin(string(buf[:3]), "a:1", 0)
	copy(buf, "xyz")
	if got := lookup(s, "abc"); len(got) != 1 {
		t.Fatalf("pin changed with the caller's buffer: %v", got)
	}
}

func TestExpiry(t *testing.T) {
	s, c := newTestStore(t, 10*time.Second, 100)
	s.Pin("idle", "a:1", 0)
	s.Pin("busy", "a:1", 0)
	var buf [store.MaxOwners]store.Owner
	for i := 0; i < 3; i++ {
		c.Advance(6 * time.Second)
		for _, o := range s.Lookup("busy", buf[:0]) {
			s.Touch(o)
		}
	}
	t.Run("ok/touched pin lives", func(t *testing.T) {
		if got := lookup(s, "busy"); len(got) != 1 {
			t.Fatalf("busy pin gone after 18s with touches every 6s")
		}
	})
	t.Run("ok/idle pin expires", func(t *testing.T) {
		if got := lookup(s, "idle"); len(got) != 0 {
			t.Fatalf("idle pin still routes after 18s with a 10s TTL: %v", got)
		}
	})
	t.Run("ok/sweep removes only expired", func(t *testing.T) {
		if n := s.Sweep(0); n != 1 {
			t.Fatalf("Sweep removed %d pins, want 1", n)
		}
		if st := s.Stats(); st.Pins != 1 || st.Expired != 1 {
			t.Fatalf("stats after sweep: %+v", st)
		}
	})
	t.Run("ok/exactly at ttl still live", func(t *testing.T) {
		s, c := newTestStore(t, 10*time.Second, 100)
		s.Pin("x", "a:1", 0)
		c.Advance(10 * time.Second)
		if got := lookup(s, "x"); len(got) != 1 {
			t.Fatal("pin expired at exactly its TTL")
		}
		c.Advance(time.Second)
		if got := lookup(s, "x"); len(got) != 0 {
			t.Fatal("pin alive one second past its TTL")
		}
	})
}

// TestTick: a ticked store reads the time of its last Tick, so a pin
// lives until a Tick shows it idle past the TTL, never shorter.
func TestTick(t *testing.T) {
	s, c := newTestStore(t, 10*time.Second, 100)
	s.Tick()
	s.Pin("x", "a:1", 0)
	c.Advance(30 * time.Second)
	if got := lookup(s, "x"); len(got) != 1 {
		t.Fatal("pin expired without a Tick: the store read the clock")
	}
	if n := s.Sweep(0); n != 0 {
		t.Fatalf("Sweep removed %d pins without a Tick", n)
	}
	s.Tick()
	if got := lookup(s, "x"); len(got) != 0 {
		t.Fatalf("pin still routes after a Tick 30s past its pinning (TTL 10s): %v", got)
	}

	// pins and touches use the ticked reading too: a pin made now lives
	// a full TTL counted from the last Tick
	s.Pin("y", "a:1", 0)
	c.Advance(10 * time.Second)
	s.Tick()
	if got := lookup(s, "y"); len(got) != 1 {
		t.Fatal("pin expired at exactly its TTL after ticks")
	}
	c.Advance(time.Second)
	s.Tick()
	if got := lookup(s, "y"); len(got) != 0 {
		t.Fatal("pin alive one ticked second past its TTL")
	}
}

func TestSweepLimitAndRequeue(t *testing.T) {
	s, c := newTestStore(t, 10*time.Second, 1000)
	for i := 0; i < 100; i++ {
		s.Pin(fmt.Sprint("s", i), "a:1", 0)
	}
	// keep every tenth pin in use
	var buf [store.MaxOwners]store.Owner
	c.Advance(8 * time.Second)
	for i := 0; i < 100; i += 10 {
		for _, o := range s.Lookup(fmt.Sprint("s", i), buf[:0]) {
			s.Touch(o)
		}
	}
	c.Advance(8 * time.Second)
	if n := s.Sweep(25); n != 25 {
		t.Fatalf("Sweep(25) removed %d", n)
	}
	if n := s.Sweep(0); n != 65 {
		t.Fatalf("second Sweep removed %d, want the other 65 expired pins", n)
	}
	for i := 0; i < 100; i++ {
		live := len(lookup(s, fmt.Sprint("s", i))) == 1
		if want := i%10 == 0; live != want {
			t.Errorf("pin s%d live = %v, want %v", i, live, want)
		}
	}
}

func TestCapacityEvictsLongestIdle(t *testing.T) {
	s, c := newTestStore(t, time.Hour, 3)
	var buf [store.MaxOwners]store.Owner
	s.Pin("a", "x:1", 0)
	c.Advance(time.Second)
	s.Pin("b", "x:1", 0)
	c.Advance(time.Second)
	s.Pin("c", "x:1", 0)
	c.Advance(time.Second)
	// "a" is the oldest pin but was just used: "b" is now idle the longest
	for _, o := range s.Lookup("a", buf[:0]) {
		s.Touch(o)
	}
	c.Advance(time.Second)
	s.Pin("d", "x:1", 0)
	if got := lookup(s, "b"); len(got) != 0 {
		t.Errorf("b (idle the longest) was kept")
	}
	for _, sid := range []string{"a", "c", "d"} {
		if got := lookup(s, sid); len(got) != 1 {
			t.Errorf("%s was evicted", sid)
		}
	}
	st := s.Stats()
	if st.Pins != 3 || st.Evicted != 1 {
		t.Errorf("stats: %+v, want 3 pins, 1 evicted", st)
	}
	t.Run("ok/bound never exceeded", func(t *testing.T) {
		for i := 0; i < 1000; i++ {
			s.Pin(fmt.Sprint("flood", i), "x:1", 0)
			if n := s.Len(); n > 3 {
				t.Fatalf("Len = %d after %d pins, capacity 3", n, i)
			}
		}
	})
	t.Run("ok/shrinking capacity applies at next pin", func(t *testing.T) {
		s.Configure(time.Hour, 1)
		s.Pin("last", "x:1", 0)
		if n := s.Len(); n != 1 {
			t.Fatalf("Len = %d, want 1", n)
		}
	})
}

func TestCollisions(t *testing.T) {
	s, c := newTestStore(t, time.Minute, 100)
	if got := s.Pin("1", "a:1", 11); got != store.Pinned {
		t.Fatalf("first pin: %v", got)
	}
	if got := s.Pin("1", "b:1", 22); got != store.Collided {
		t.Fatalf("same sid from another upstream: %v, want Collided", got)
	}
	var buf [store.MaxOwners]store.Owner
	owners := s.Lookup("1", buf[:0])
	if len(owners) != 2 || owners[0].Dial != "b:1" || owners[0].Client != 22 || owners[1].Dial != "a:1" {
		t.Fatalf("owners = %+v, want newest (b:1, client 22) first then a:1", owners)
	}
	s.Pin("1", "c:1", 0)
	s.Pin("1", "d:1", 0)
	t.Run("fail/more than MaxOwners", func(t *testing.T) {
		if got := s.Pin("1", "e:1", 0); got != store.Refused {
			t.Fatalf("fifth owner: %v, want Refused", got)
		}
		if st := s.Stats(); st.Collisions != 3 || st.Refused != 1 {
			t.Fatalf("stats: %+v", st)
		}
	})
	t.Run("ok/expired owners do not count", func(t *testing.T) {
		c.Advance(2 * time.Minute)
		if got := s.Pin("1", "e:1", 0); got != store.Pinned {
			t.Fatalf("pin after every owner expired: %v, want Pinned", got)
		}
		if got := lookup(s, "1"); len(got) != 1 || got[0] != "e:1" {
			t.Fatalf("owners = %v", got)
		}
		if n := s.Len(); n != 1 {
			t.Fatalf("Len = %d: expired siblings kept", n)
		}
	})
}

func TestDrop(t *testing.T) {
	s, c := newTestStore(t, time.Minute, 100)
	s.Pin("x", "a:1", 0)
	s.Pin("x", "b:1", 0)
	if s.DropDial("x", "c:1") {
		t.Error("DropDial of an upstream that does not own the sid reported success")
	}
	if s.DropDial("y", "a:1") {
		t.Error("DropDial of an unknown sid reported success")
	}
	if !s.DropDial("x", "a:1") {
		t.Fatal("DropDial of a pinned sid failed")
	}
	if s.DropDial("x", "a:1") {
		t.Error("second DropDial of the same pin reported success")
	}
	t.Run("ok/dropped pin is a tombstone", func(t *testing.T) {
		if got := lookup(s, "x"); len(got) != 1 || got[0] != "b:1" {
			t.Fatalf("live owners after dropping a:1: %v, want [b:1]", got)
		}
		if got := tombstones(s, "x"); len(got) != 1 || got[0] != "a:1" {
			t.Fatalf("tombstones: %v, want [a:1]", got)
		}
	})
	t.Run("ok/touch does not revive a tombstone", func(t *testing.T) {
		var buf [store.MaxOwners]store.Owner
		c.Advance(40 * time.Second)
		for _, o := range s.Lookup("x", buf[:0]) {
			s.Touch(o)
		}
		c.Advance(40 * time.Second)
		if got := tombstones(s, "x"); len(got) != 0 {
			t.Fatalf("tombstone outlived its TTL: %v", got)
		}
		if got := lookup(s, "x"); len(got) != 1 {
			t.Fatalf("touched live pin expired: %v", got)
		}
	})
	t.Run("ok/new handshake replaces a tombstone", func(t *testing.T) {
		s.Pin("z", "a:1", 0)
		s.DropDial("z", "a:1")
		if got := s.Pin("z", "a:1", 0); got != store.Pinned {
			t.Fatalf("Pin over a tombstone = %v, want Pinned", got)
		}
		if got := lookup(s, "z"); len(got) != 1 {
			t.Fatalf("owners = %v", got)
		}
	})
}

func TestAcquireRelease(t *testing.T) {
	s, _ := newTestStore(t, time.Minute, 100)
	old := []string{"a:1", "b:1", "c:1"}
	s.Acquire(old)
	s.Pin("sa", "a:1", 0)
	s.Pin("sc", "c:1", 0)

	// a reload that drops c:1: the new config acquires first, then the
	// old one is released
	next := []string{"a:1", "b:1", "d:1"}
	s.Acquire(next)
	s.Release(old)

	t.Run("ok/kept upstream keeps its pins", func(t *testing.T) {
		if got := lookup(s, "sa"); len(got) != 1 {
			t.Fatal("pin to a:1 lost in a reload that kept a:1")
		}
	})
	t.Run("ok/removed upstream's pins become tombstones", func(t *testing.T) {
		if got := lookup(s, "sc"); len(got) != 0 {
			t.Fatalf("pin to removed c:1 still routes: %v", got)
		}
		if got := tombstones(s, "sc"); len(got) != 1 {
			t.Fatalf("pin to removed c:1 is not a tombstone: %v", got)
		}
	})
	t.Run("ok/census lists every upstream in use", func(t *testing.T) {
		live, gone := s.Census()
		want := map[string]int{"a:1": 1, "b:1": 0, "d:1": 0}
		if !maps.Equal(live, want) || gone != 1 {
			t.Fatalf("Census() = %v, %d; want %v, 1 (c:1 removed, its pin a tombstone)", live, gone, want)
		}
	})
	t.Run("ok/re-added upstream starts clean", func(t *testing.T) {
		s.Pin("sc2", "c:1", 0) // a late handshake after removal
		s.Acquire([]string{"c:1"})
		if got := lookup(s, "sc2"); len(got) != 1 {
			t.Fatalf("pin made after re-adding c:1 lost")
		}
	})
	t.Run("ok/unbalanced release is ignored", func(t *testing.T) {
		s.Release([]string{"zz:1", "zz:1"})
		if got := lookup(s, "sa"); len(got) != 1 {
			t.Fatal("releasing an unknown dial removed pins")
		}
	})
}

// TestConcurrentUse runs every operation at once; run with -race.
func TestConcurrentUse(t *testing.T) {
	s, c := newTestStore(t, 5*time.Second, 500)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var buf [store.MaxOwners]store.Owner
			for i := 0; i < 2000; i++ {
				sid := fmt.Sprint("s", (w*7919+i)%800)
				switch i % 5 {
				case 0:
					s.Pin(sid, fmt.Sprint("u:", w%3), uint64(w))
				case 1:
					s.DropDial(sid, fmt.Sprint("u:", w%3))
				case 2:
					s.Sweep(10)
				default:
					for _, o := range s.Lookup(sid, buf[:0]) {
						s.Touch(o)
					}
				}
				if i%500 == 0 {
					c.Advance(time.Second)
				}
			}
		}(w)
	}
	wg.Wait()
	if n := s.Len(); n > 500 {
		t.Fatalf("Len = %d over capacity 500", n)
	}
	// the LRU list and the index agree
	listed := 0
	for e := s.head; e != nil; e = e.next {
		listed++
	}
	indexed := 0
	for i := range s.shards {
		for _, e := range s.shards[i].m {
			for ; e != nil; e = e.sibling {
				indexed++
			}
		}
	}
	if listed != s.Len() || indexed != s.Len() {
		t.Fatalf("list has %d entries, index %d, count %d", listed, indexed, s.Len())
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	s, _ := newTestStore(t, time.Minute, 100)
	s.Pin("abcdefghijklmnopqrst", "a:1", 0)
	var buf [store.MaxOwners]store.Owner
	allocs := testing.AllocsPerRun(1000, func() {
		for _, o := range s.Lookup("abcdefghijklmnopqrst", buf[:0]) {
			s.Touch(o)
		}
	})
	if allocs != 0 {
		t.Fatalf("Lookup+Touch allocates %v times", allocs)
	}
}

// TestLayout keeps a pin to one 64-byte allocation (the memory per pin in
// BENCHMARKS.md depends on it) and a shard to one cache line.
func TestLayout(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n != 64 {
		t.Errorf("entry is %d bytes, want 64", n)
	}
	if n := unsafe.Sizeof(shard{}); n%cacheLine != 0 {
		t.Errorf("shard is %d bytes, not a multiple of a cache line", n)
	}
}
