package memory

import (
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// A request that read the clock just before a second boundary must not
// see a pin as expired because a concurrent request of the same session
// touched it just after the boundary (uint32 seconds: now - touched wraps).
func TestLookupRacingTouch(t *testing.T) {
	sec := int64(1_800_000_000)
	var hook func()
	s := hookedStore(&sec, &hook)
	s.Pin("sessionsid0000000000", "a:1", 0)
	hook = func() {
		sec++ // the second ticks over; the other request touches the pin
		var buf [store.MaxOwners]store.Owner
		for _, o := range s.Lookup("sessionsid0000000000", buf[:0]) {
			s.Touch(o)
		}
	}
	var buf [store.MaxOwners]store.Owner
	if got := s.Lookup("sessionsid0000000000", buf[:0]); len(got) != 1 {
		t.Fatalf("live pin, touched a second after this lookup read the clock: Lookup found %d owners, want 1", len(got))
	}
}

// The same race in Pin (its clock read precedes the writer lock) and
// Sweep: a pin touched after they read the clock is removed as expired.
func TestSweepRacingTouch(t *testing.T) {
	sec := int64(1_800_000_000)
	var hook func()
	s := hookedStore(&sec, &hook)
	s.Pin("sessionsid0000000000", "a:1", 0)
	sec++ // Sweep reads the clock at T+1 ...
	hook = func() {
		sec++ // ... and the session's next request touches the pin at T+2
		var buf [store.MaxOwners]store.Owner
		for _, o := range s.Lookup("sessionsid0000000000", buf[:0]) {
			s.Touch(o)
		}
	}
	if n := s.Sweep(0); n != 0 {
		t.Fatalf("Sweep removed %d live pins", n)
	}
}

// hookedStore returns a store whose clock reads *sec and then, once, runs
// *hook: the other request runs between this clock read and its use.
func hookedStore(sec *int64, hook *func()) *Store {
	return NewWithClock(func() time.Time {
		cur := *sec
		if h := *hook; h != nil {
			*hook = nil
			h()
		}
		return time.Unix(cur, 0)
	})
}
