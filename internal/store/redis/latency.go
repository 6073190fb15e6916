package redis

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds of the round-trip latency histogram
// of requests made for clients (remote lookups and pin writes).
var LatencyBuckets = []time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond,
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond,
}

// latency is a histogram of round trips, counted without locks.
type latency struct {
	buckets [11]atomic.Uint64 // len(LatencyBuckets)+1: the last is +Inf
	count   atomic.Uint64
	sumNs   atomic.Uint64
}

func (l *latency) observe(d time.Duration) {
	i := 0
	for i < len(LatencyBuckets) && d > LatencyBuckets[i] {
		i++
	}
	l.buckets[i].Add(1)
	l.count.Add(1)
	l.sumNs.Add(uint64(d))
}

// Latency is a snapshot of the round-trip histogram: Buckets[i] counts the
// round trips at most LatencyBuckets[i] (not cumulative; the last, beyond
// every bound).
type Latency struct {
	Buckets [11]uint64
	Count   uint64
	Sum     time.Duration
}

// Latency returns the store's round-trip histogram.
func (s *Store) Latency() Latency {
	var l Latency
	for i := range l.Buckets {
		l.Buckets[i] = s.latency.buckets[i].Load()
	}
	l.Count = s.latency.count.Load()
	l.Sum = time.Duration(s.latency.sumNs.Load())
	return l
}
