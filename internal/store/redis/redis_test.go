package redis

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/redis/redistest"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var dials = []string{"10.0.0.1:3000", "10.0.0.2:3000", "10.0.0.3:3000"}

// instance is one Caddy instance's store, maintained until the test ends.
type instance struct {
	*Store
	logs *observer.ObservedLogs
}

func openInstance(t testing.TB, cfg Config) instance {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	s, err := Open(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.Acquire(dials)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		s.Maintain(stop)
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return instance{Store: s, logs: logs}
}

// connected opens an instance and waits until it reached Redis.
func connected(t testing.TB, cfg Config) instance {
	t.Helper()
	in := openInstance(t, cfg)
	waitFor(t, "Redis reachable", in.Reachable)
	return in
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lookup(s store.Store, sid string) []store.Owner {
	var buf [store.MaxOwners]store.Owner
	return s.Lookup(sid, buf[:0])
}

func TestPinShared(t *testing.T) {
	srv := redistest.Start(t, "")
	cfg := Config{Addresses: []string{srv.Addr}}
	a, b := connected(t, cfg), connected(t, cfg)

	t.Run("ok/pin on A is seen by B", func(t *testing.T) {
		if got := a.Pin("s1", dials[1], 7); got != store.Pinned {
			t.Fatalf("Pin = %v, want Pinned", got)
		}
		owners := lookup(b, "s1")
		if len(owners) != 1 || owners[0].Dial != dials[1] || owners[0].Client != 7 || owners[0].Gone {
			t.Fatalf("B's lookup = %+v", owners)
		}
	})
	t.Run("ok/a known sid costs no round trip", func(t *testing.T) {
		before := b.Counters().RemoteLookups
		for range 100 {
			if len(lookup(b, "s1")) != 1 {
				t.Fatal("pin lost")
			}
		}
		if got := b.Counters().RemoteLookups - before; got != 0 {
			t.Fatalf("%d lookups went to Redis", got)
		}
	})
	t.Run("ok/unknown sid is one round trip and no pin", func(t *testing.T) {
		before := b.Counters().RemoteLookups
		if owners := lookup(b, "nope"); len(owners) != 0 {
			t.Fatalf("lookup = %+v", owners)
		}
		if got := b.Counters().RemoteLookups - before; got != 1 {
			t.Fatalf("%d round trips", got)
		}
	})
	t.Run("ok/collision across instances", func(t *testing.T) {
		a.Pin("s2", dials[0], 1)
		if got := b.Pin("s2", dials[2], 2); got != store.Collided {
			t.Fatalf("Pin = %v, want Collided", got)
		}
		owners := lookup(b, "s2")
		if len(owners) != 2 || owners[0].Dial != dials[2] || owners[1].Dial != dials[0] {
			t.Fatalf("lookup = %+v, want newest (dials[2]) first", owners)
		}
		if got := b.Pin("s2", dials[2], 2); got != store.Refreshed {
			t.Fatalf("second Pin = %v, want Refreshed", got)
		}
	})
	t.Run("fail/more than MaxOwners", func(t *testing.T) {
		for i := range store.MaxOwners {
			a.Pin("s3", "10.1.0.1:"+string(rune('0'+i)), 1)
		}
		if got := b.Pin("s3", dials[0], 1); got != store.Refused {
			t.Fatalf("Pin = %v, want Refused", got)
		}
	})
}

func TestTombstoneShared(t *testing.T) {
	srv := redistest.Start(t, "")
	cfg := Config{Addresses: []string{srv.Addr}}
	a, b := connected(t, cfg), connected(t, cfg)

	a.Pin("s1", dials[0], 1)
	if !a.DropDial("s1", dials[0]) {
		t.Fatal("DropDial found no live pin")
	}
	waitFor(t, "the tombstone in Redis", func() bool { return a.Counters().DropsShared == 1 })
	owners := lookup(b, "s1")
	if len(owners) != 1 || !owners[0].Gone {
		t.Fatalf("B's lookup = %+v, want a tombstone", owners)
	}
	// a new handshake replaces the tombstone, on any instance
	if got := b.Pin("s1", dials[1], 1); got != store.Pinned {
		t.Fatalf("Pin over a tombstone = %v, want Pinned", got)
	}
	v, _ := srv.Do("GET", DefaultKeyPrefix+"s1")
	if v != "sio1\nL0000000000000001 "+dials[1] {
		t.Fatalf("value = %q", v)
	}
}

func TestTTL(t *testing.T) {
	srv := redistest.Start(t, "")
	a := connected(t, Config{Addresses: []string{srv.Addr}})
	a.Configure(3*time.Second, 1000)
	a.Pin("used", dials[0], 1)
	a.Pin("idle", dials[0], 1)
	pttl := func(sid string) int {
		v, err := srv.Do("PTTL", DefaultKeyPrefix+sid)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range strings.TrimPrefix(v, "-") {
			n = n*10 + int(c-'0')
		}
		if strings.HasPrefix(v, "-") {
			return -n
		}
		return n
	}
	if got := pttl("used"); got < 2500 || got > 3000 {
		t.Fatalf("PTTL after pin = %d ms, want about 3000", got)
	}
	// use one pin for 4 s (more than its TTL): the refresh keeps its key
	// alive; the idle one expires by itself
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		owners := lookup(a, "used")
		if len(owners) != 1 {
			t.Fatal("local pin expired")
		}
		a.Touch(owners[0])
		time.Sleep(100 * time.Millisecond)
	}
	if got := pttl("used"); got < 1000 {
		t.Fatalf("PTTL of a used pin = %d ms: not refreshed", got)
	}
	// an idle pin expires by itself, at most one refresh period late
	waitFor(t, "the idle pin to expire", func() bool { return pttl("idle") == -2 })
	refreshed := a.Counters().Refreshed
	if refreshed == 0 || refreshed > 8 {
		t.Fatalf("%d refreshes for 40 requests over 4 s with a TTL of 3 s: want a few (one per TTL/3)", refreshed)
	}
	t.Logf("refresh writes: %d for 40 touches", refreshed)
}

func TestBadValues(t *testing.T) {
	srv := redistest.Start(t, "")
	a := connected(t, Config{Addresses: []string{srv.Addr}})
	tests := []struct {
		name string
		set  func(key string) error
	}{
		{"fail/another program's string", func(k string) error { _, err := srv.Do("SET", k, "hello"); return err }},
		{"fail/truncated", func(k string) error { _, err := srv.Do("SET", k, "sio1\nL00000000000"); return err }},
		{"fail/other version", func(k string) error {
			_, err := srv.Do("SET", k, "sio2\nL0000000000000001 "+dials[0])
			return err
		}},
		{"fail/bad dial", func(k string) error {
			_, err := srv.Do("SET", k, "sio1\nL0000000000000001 evil host:1")
			return err
		}},
		{"fail/upstream not in this pool", func(k string) error {
			_, err := srv.Do("SET", k, "sio1\nL0000000000000001 192.0.2.1:80")
			return err
		}},
		{"fail/wrong type", func(k string) error { _, err := srv.Do("LPUSH", k, "x"); return err }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sid := "bad" + string(rune('a'+i))
			if err := tt.set(DefaultKeyPrefix + sid); err != nil {
				t.Fatal(err)
			}
			before := a.Counters().Ignored
			if owners := lookup(a, sid); len(owners) != 0 {
				t.Fatalf("followed a bad value: %+v", owners)
			}
			if a.Counters().Ignored != before+1 {
				t.Fatal("not counted as ignored")
			}
			if !a.Reachable() {
				t.Fatal("bad data taken for an outage")
			}
			// a handshake that mints the sid replaces the value (or,
			// for a well-formed pin to another upstream, joins it)
			if got := a.Pin(sid, dials[0], 1); got != store.Pinned && got != store.Collided {
				t.Fatalf("Pin = %v, want Pinned", got)
			}
			if owners := lookup(a, sid); len(owners) != 1 || owners[0].Dial != dials[0] {
				t.Fatalf("after the handshake: %+v", owners)
			}
		})
	}
	if a.logs.FilterMessageSnippet("not").Len() == 0 {
		t.Fatal("ignored values were not logged")
	}
}

func TestOutage(t *testing.T) {
	srv := redistest.Start(t, "")
	cfg := Config{Addresses: []string{srv.Addr}, Timeout: 50 * time.Millisecond}
	a, b := connected(t, cfg), connected(t, cfg)
	a.Pin("before", dials[0], 1)
	lookup(b, "before") // B learns it

	srv.Stop()
	// the first request to meet the outage waits at most the timeout;
	// then no request waits at all
	start := time.Now()
	lookup(b, "unknown-1")
	first := time.Since(start)
	if first > 500*time.Millisecond { // loose: a busy machine makes timers late
		t.Fatalf("first lookup during the outage took %v (timeout 50ms)", first)
	}
	if b.Reachable() {
		t.Fatal("outage not noticed")
	}
	start = time.Now()
	asked := b.Counters().RemoteLookups
	for i := range 1000 {
		lookup(b, "unknown-x"+string(rune('a'+i%26)))
		b.Pin("during", dials[1], 2)
	}
	per := time.Since(start) / 2000
	if n := b.Counters().RemoteLookups - asked; n != 0 {
		t.Fatalf("%d lookups asked Redis while it was known down", n)
	}
	t.Logf("outage: first request %v, then %v per request", first, per)
	if owners := lookup(b, "before"); len(owners) != 1 || owners[0].Dial != dials[0] {
		t.Fatalf("a known session lost its pin during the outage: %+v", owners)
	}
	if n := b.logs.FilterMessageSnippet("Redis unreachable").Len(); n != 1 {
		t.Fatalf("%d log lines for one outage, want 1", n)
	}

	// A made no request during the outage: its PINGs notice it
	waitFor(t, "A to notice", func() bool { return !a.Reachable() })
	srv.Restart()
	waitFor(t, "recovery", func() bool { return a.Reachable() && b.Reachable() })
	if n := b.logs.FilterMessageSnippet("Redis reachable").Len(); n != 2 {
		t.Fatalf("%d 'reachable' lines, want 2 (start, recovery)", n)
	}
	if got := a.Pin("after", dials[2], 3); got != store.Pinned {
		t.Fatalf("Pin after recovery = %v", got)
	}
	if owners := lookup(b, "after"); len(owners) != 1 || owners[0].Dial != dials[2] {
		v, err := srv.Do("GET", DefaultKeyPrefix+"after")
		t.Fatalf("pin after recovery not shared: %+v (Redis: %q %v; A %+v; B %+v; logs %v)", owners, v, err, a.Counters(), b.Counters(), b.logs.All())
	}
}

func TestUnreachableAtStart(t *testing.T) {
	srv := redistest.Start(t, "")
	srv.Stop()
	a := openInstance(t, Config{Addresses: []string{srv.Addr}})
	waitFor(t, "the warning", func() bool { return a.logs.FilterMessageSnippet("Redis unreachable").Len() == 1 })
	start := time.Now()
	if got := a.Pin("s1", dials[0], 1); got != store.Pinned {
		t.Fatalf("Pin = %v", got)
	}
	if len(lookup(a, "s1")) != 1 || len(lookup(a, "s2")) != 0 {
		t.Fatal("local pins do not work without Redis")
	}
	if n := a.Counters().RemoteLookups + a.Counters().RemotePins; n != 0 || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("requests asked an unreachable Redis %d times, or waited (%v)", n, time.Since(start))
	}
	srv.Restart()
	waitFor(t, "the connection", a.Reachable)
	// the pin made while Redis was away reaches it at once
	waitFor(t, "the pin republished", func() bool {
		v, _ := srv.Do("GET", DefaultKeyPrefix+"s1")
		return v != ""
	})
}

func TestPassword(t *testing.T) {
	const secret = "s3cret-pa55word"
	srv := redistest.Start(t, secret)
	t.Run("ok/right password", func(t *testing.T) {
		a := connected(t, Config{Addresses: []string{srv.Addr}, Password: secret})
		a.Pin("s1", dials[0], 1)
		if v, _ := srv.Do("GET", DefaultKeyPrefix+"s1"); v == "" {
			t.Fatal("pin not written")
		}
	})
	t.Run("fail/wrong password is logged without it", func(t *testing.T) {
		a := openInstance(t, Config{Addresses: []string{"redis://:" + secret + "x@" + srv.Addr}})
		waitFor(t, "the warning", func() bool { return a.logs.Len() > 0 })
		if a.Reachable() {
			t.Fatal("reachable with a wrong password")
		}
		for _, e := range a.logs.All() {
			line := fmt.Sprint(e.Message, e.ContextMap())
			if strings.Contains(line, secret) {
				t.Fatalf("password in the log: %s", line)
			}
		}
	})
}

func TestStall(t *testing.T) {
	srv := redistest.Start(t, "")
	cfg := Config{Addresses: []string{srv.Addr}, Timeout: 50 * time.Millisecond}
	a, b := connected(t, cfg), connected(t, cfg)

	t.Run("ok/one slow answer is no outage", func(t *testing.T) {
		if _, err := srv.Do("CLIENT", "PAUSE", "300"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		a.Pin("stalled", dials[0], 1)
		if d := time.Since(start); d > 150*time.Millisecond {
			t.Fatalf("Pin waited %v (timeout 50ms)", d)
		}
		if !a.Reachable() {
			t.Fatal("one timeout counted Redis down")
		}
		// the write was sent, or is sent again in the background:
		// once Redis answers, the other instance finds the pin
		waitFor(t, "the stalled pin in Redis", func() bool {
			owners := lookup(b, "stalled")
			return len(owners) == 1 && owners[0].Dial == dials[0]
		})
	})
	t.Run("ok/timeouts in a row are an outage", func(t *testing.T) {
		if _, err := srv.Do("CLIENT", "PAUSE", "1500"); err != nil {
			t.Fatal(err)
		}
		before := a.Counters().RemoteLookups
		for i := range timeoutsDown + 5 {
			lookup(a, "slow-"+string(rune('a'+i)))
		}
		// counted, not timed: a busy machine makes timers late
		if asked := a.Counters().RemoteLookups - before; asked > timeoutsDown {
			t.Fatalf("%d of %d lookups asked the stalled Redis, want at most %d", asked, timeoutsDown+5, timeoutsDown)
		}
		if a.Reachable() {
			t.Fatal("Redis not counted down")
		}
		waitFor(t, "recovery after the stall", a.Reachable)
	})
}

func TestAnnouncements(t *testing.T) {
	srv := redistest.Start(t, "")
	cfg := Config{Addresses: []string{srv.Addr}}
	a, b := connected(t, cfg), connected(t, cfg)
	// the subscriptions start once connected
	waitFor(t, "B's subscription", func() bool {
		a.Pin("probe", dials[0], 1)
		a.DropDial("probe", dials[0])
		return b.Counters().Announced > 0
	})

	a.Pin("s1", dials[1], 1)
	a.Pin("s2", dials[2], 2)
	waitFor(t, "the announcements", func() bool {
		live, _ := b.Census() // the local layer only: no round trip
		return live[dials[1]] == 1 && live[dials[2]] == 1
	})
	// B caches the tombstone of a pin it knew as live
	if owners := lookup(b, "s2"); len(owners) != 1 || owners[0].Gone {
		t.Fatalf("B's pin of s2: %+v", owners)
	}
	a.DropDial("s2", dials[2])
	waitFor(t, "the tombstone announced", func() bool {
		owners := lookup(b, "s2")
		return len(owners) == 1 && owners[0].Gone
	})

	// Redis goes away: B still routes s1, which no request had made it
	// look up
	srv.Stop()
	waitFor(t, "B to notice", func() bool { return !b.Reachable() })
	if owners := lookup(b, "s1"); len(owners) != 1 || owners[0].Dial != dials[1] {
		t.Fatalf("B lost an announced pin in the outage: %+v", owners)
	}
	if c := b.Counters(); c.RemoteLookups != 0 {
		t.Fatalf("B looked up %d sids in Redis: the announcements should have told it", c.RemoteLookups)
	}
}

// TestDrainShared: an upstream drained through one instance drains on
// every instance that shares the store, and undrained on all likewise;
// members the plugin did not write are ignored.
func TestDrainShared(t *testing.T) {
	srv := redistest.Start(t, "")
	cfg := Config{Addresses: []string{srv.Addr}}
	a, b := connected(t, cfg), connected(t, cfg)
	t.Cleanup(func() { store.ReplaceDraining(nil) })
	if err := a.ShareDrain(dials[1], true); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Do("SADD", DefaultKeyPrefix+drainSet, "not a dial address"); err != nil {
		t.Fatal(err)
	}
	// b's process forgot it: b reads it back from Redis
	store.ReplaceDraining(nil)
	b.syncDrains()
	if got := store.Draining(); len(got) != 1 || got[0] != dials[1] {
		t.Fatalf("draining after b's sync: %v, want [%s]", got, dials[1])
	}
	if err := b.ShareDrain(dials[1], false); err != nil {
		t.Fatal(err)
	}
	a.syncDrains()
	if got := store.Draining(); len(got) != 0 {
		t.Fatalf("draining after undrain: %v, want none", got)
	}
	srv.Stop()
	waitFor(t, "Redis down", func() bool { return !a.Reachable() })
	if err := a.ShareDrain(dials[0], true); err == nil {
		t.Fatal("ShareDrain with Redis down succeeded")
	}
}
