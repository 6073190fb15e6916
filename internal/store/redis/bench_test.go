package redis

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
	"github.com/caddy-socketio/caddy-socketio/internal/store/redis/redistest"
)

// The costs a Redis store adds, against a real redis-server on loopback:
//
//   - BenchmarkLookupKnown: a request whose sid the instance knows, with
//     the Redis store and with the memory store (they should cost the
//     same: the Redis store answers from its local layer);
//   - BenchmarkPin: a handshake's pin, one round trip (p50/p99 reported);
//   - BenchmarkLookupRemote: a sid another instance pinned and this one
//     did not hear of, one round trip (p50/p99 reported).

const benchPins = 10_000

func BenchmarkLookupKnown(b *testing.B) {
	sids := make([]string, benchPins)
	for i := range sids {
		sids[i] = fmt.Sprintf("bench-sid-%08d-xxxx", i)
	}
	run := func(b *testing.B, s store.Store) {
		for i, sid := range sids {
			s.Pin(sid, dials[i%len(dials)], uint64(i))
		}
		var buf [store.MaxOwners]store.Owner
		j, found := 0, 0
		b.ReportAllocs()
		for b.Loop() {
			for _, o := range s.Lookup(sids[j], buf[:0]) {
				s.Touch(o)
				found++
			}
			if j++; j == len(sids) {
				j = 0
			}
		}
		if found != b.N {
			b.Fatalf("%d of %d lookups found their pin", found, b.N)
		}
	}
	b.Run("store=memory", func(b *testing.B) {
		s := memory.New()
		s.Acquire(dials)
		// maintained, as store.Acquire does and as the Redis store's
		// local layer is: a ticked clock
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			s.Maintain(stop)
		}()
		defer func() {
			close(stop)
			<-done
		}()
		run(b, s)
	})
	b.Run("store=redis", func(b *testing.B) {
		srv := redistest.Start(b, "")
		run(b, connected(b, Config{Addresses: []string{srv.Addr}}))
	})
}

// latencies reports the p50 and p99 of d.
func latencies(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkPin(b *testing.B) {
	srv := redistest.Start(b, "")
	s := connected(b, Config{Addresses: []string{srv.Addr}, Timeout: time.Second})
	var d []time.Duration
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		sid := fmt.Sprintf("pin-%d-%d", b.N, i)
		start := time.Now()
		if r := s.Pin(sid, dials[i%len(dials)], uint64(i)); r != store.Pinned {
			b.Fatalf("Pin = %v", r)
		}
		d = append(d, time.Since(start))
		i++
	}
	if got := s.Counters().RemotePins; got != uint64(b.N) {
		b.Fatalf("%d of %d pins reached Redis", got, b.N)
	}
	latencies(b, d)
}

func BenchmarkLookupRemote(b *testing.B) {
	srv := redistest.Start(b, "")
	cfg := Config{Addresses: []string{srv.Addr}, Timeout: time.Second}
	// a writes where other does not listen: other must read Redis
	a, err := Open(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	a.channel = "bench-unheard"
	a.Acquire(dials)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		a.Maintain(stop)
	}()
	defer func() {
		close(stop)
		<-done
	}()
	waitFor(b, "Redis reachable", a.Reachable)
	other := connected(b, cfg)
	sids := make([]string, 0, b.N)
	for i := range b.N {
		sid := fmt.Sprintf("remote-%d-%d", b.N, i)
		a.Pin(sid, dials[i%len(dials)], uint64(i))
		sids = append(sids, sid)
	}
	var d []time.Duration
	var buf [store.MaxOwners]store.Owner
	b.ReportAllocs()
	b.ResetTimer()
	for _, sid := range sids {
		start := time.Now()
		if len(other.Lookup(sid, buf[:0])) != 1 {
			b.Fatal("pin not found in Redis")
		}
		d = append(d, time.Since(start))
	}
	b.StopTimer()
	if got := other.Counters().RemoteHits; got != uint64(b.N) {
		b.Fatalf("%d remote hits for %d lookups", got, b.N)
	}
	latencies(b, d)
}
