package redis

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// probeInterval is how often Maintain PINGs Redis (or tries to connect
// to it).
var probeInterval = time.Second

// refreshBatch is how many pins one pipelined refresh sends.
const refreshBatch = 512

// sharedCounters count what the store asked Redis, for tests and
// operators.
type sharedCounters struct {
	remoteLookups, remoteHits, remotePins, refreshed, dropsShared, writesLost, ignored, outages, timeouts, announced atomic.Uint64
	// refreshNow asks Maintain to refresh at once (after an outage)
	refreshNow atomic.Bool
}

// Counters is a snapshot of the Redis store's own counters.
type Counters struct {
	// RemoteLookups counts lookups of sids unknown locally that went to
	// Redis; RemoteHits those that found a pin.
	RemoteLookups, RemoteHits uint64
	// RemotePins counts pins written to Redis.
	RemotePins uint64
	// Refreshed counts pins whose Redis TTL was extended.
	Refreshed uint64
	// DropsShared counts tombstones written to Redis; WritesLost the
	// tombstones and late pins not written because the queue was full.
	DropsShared, WritesLost uint64
	// Ignored counts values read from Redis and not followed.
	Ignored uint64
	// Outages counts the times Redis was found unreachable; Timeouts
	// the requests that gave up waiting for it.
	Outages, Timeouts uint64
	// Announced counts the other instances' changes received.
	Announced uint64
}

// Counters returns the store's Redis counters.
func (s *Store) Counters() Counters {
	c := &s.stats
	return Counters{
		RemoteLookups: c.remoteLookups.Load(), RemoteHits: c.remoteHits.Load(), RemotePins: c.remotePins.Load(),
		Refreshed: c.refreshed.Load(), DropsShared: c.dropsShared.Load(), WritesLost: c.writesLost.Load(),
		Ignored: c.ignored.Load(), Outages: c.outages.Load(), Timeouts: c.timeouts.Load(),
		Announced: c.announced.Load(),
	}
}

// timeoutsDown is how many requests in a row must time out before Redis
// is counted down. A single slow answer (a stalled machine, a fork for a
// snapshot) must not switch every instance to client-IP hashing: a PING
// is sent at once instead, and a failed PING counts Redis down. An error
// that is not a timeout (connection refused, reset) counts it down at
// once.
const timeoutsDown = 3

// fail records that Redis did not answer a request (err): see
// timeoutsDown.
func (s *Store) fail(err error) {
	timedOut := errors.Is(err, context.DeadlineExceeded)
	if timedOut {
		s.stats.timeouts.Add(1)
	}
	if timedOut && s.timeouts.Add(1) < timeoutsDown {
		s.probeSoon()
		return
	}
	s.down(err)
}

// down counts Redis down: requests stop asking it until a probe gets an
// answer.
func (s *Store) down(err error) {
	s.timeouts.Store(0)
	if s.up.CompareAndSwap(true, false) {
		s.stats.outages.Add(1)
		s.logger.Warn("Redis unreachable; pins are local to this instance and new sessions are placed by client-IP hash until it answers",
			s.addressField(), zap.Error(err))
	}
	s.probeSoon()
}

// answered records that Redis answered a request.
func (s *Store) answered() {
	if s.timeouts.Load() != 0 {
		s.timeouts.Store(0)
	}
}

// probeSoon asks Maintain to PING Redis now rather than at its next tick.
func (s *Store) probeSoon() {
	select {
	case s.probeNow <- struct{}{}:
	default:
	}
}

// recover records that Redis answered again.
func (s *Store) recover() {
	if s.up.CompareAndSwap(false, true) {
		// Redis may have lost pins (a restart) or missed some (made
		// during the outage): refresh the pins in use now
		s.stats.refreshNow.Store(true)
		s.logger.Info("Redis reachable; pins are shared", s.addressField())
	}
}

// Maintain runs the store's background work until stop is closed: the
// local layer's clock and sweeps, the connection to Redis and its probes,
// the TTL refreshes and the tombstones.
func (s *Store) Maintain(stop <-chan struct{}) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		s.subscribe(stop)
	}()
	go func() {
		defer wg.Done()
		s.local.Maintain(stop)
	}()
	go func() {
		defer wg.Done()
		s.write(stop)
	}()
	defer wg.Wait()
	defer func() {
		if c := s.client.Load(); c != nil {
			(*c).Close()
		}
	}()

	probe := time.NewTicker(probeInterval)
	defer probe.Stop()
	var since uint32 // local clock reading of the last refresh
	lastRefresh := time.Now()
	warned := false
	for {
		switch c := s.client.Load(); {
		case c == nil:
			if err := s.connect(); err != nil {
				if !warned {
					warned = true
					s.logger.Warn("Redis unreachable; pins are local to this instance and new sessions are placed by client-IP hash until it answers",
						s.addressField(), zap.Error(err))
				}
			}
		default:
			// a PING a second, up or down: an outage shows here even
			// when no request meets it, and so does the recovery
			ctx, cancel := context.WithTimeout(context.Background(), max(s.timeout, 250*time.Millisecond))
			err := (*c).Do(ctx, (*c).B().Ping().Build()).Error()
			cancel()
			if err == nil {
				s.answered()
				s.recover()
				s.syncDrains()
			} else {
				s.down(err)
			}
		}
		period := time.Duration(s.ttlMillis.Load()) * time.Millisecond / 3
		if asked := s.stats.refreshNow.Swap(false); s.up.Load() && (asked || time.Since(lastRefresh) >= period) {
			now := s.local.Clock()
			if s.refresh(since, stop) {
				since, lastRefresh = now, time.Now()
			}
		}
		select {
		case <-stop:
			return
		case <-probe.C:
		case <-s.probeNow:
			// at most one early probe per 100ms
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// connect makes the client. rueidis dials when the client is made, so
// this is where an unreachable Redis at start shows.
func (s *Store) connect() error {
	c, err := rueidis.NewClient(s.opt)
	if err != nil {
		return err
	}
	s.client.Store(&c)
	s.up.Store(true)
	// pins made before Redis answered reach it at once
	s.stats.refreshNow.Store(true)
	s.logger.Info("Redis reachable; pins are shared", s.addressField())
	return nil
}

// refresh extends, in Redis, the TTL of every pin used locally at or
// after clock reading since, and puts back those Redis lost. It reports
// whether it finished.
func (s *Store) refresh(since uint32, stop <-chan struct{}) bool {
	var pins []owned
	s.local.Used(since, func(sid, dial string, client uint64) {
		pins = append(pins, owned{sid: sid, dial: dial, client: client})
	})
	for len(pins) > 0 {
		c := s.redis()
		if c == nil {
			return false
		}
		select {
		case <-stop:
			return false
		default:
		}
		batch := pins[:min(len(pins), refreshBatch)]
		pins = pins[len(batch):]
		execs := make([]rueidis.LuaExec, 0, len(batch))
		for _, p := range batch {
			if validDial(p.dial) {
				execs = append(execs, rueidis.LuaExec{Keys: []string{s.key(p.sid)}, Args: s.args("touch", p.sid, p.dial, p.client)})
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(10*s.timeout, time.Second))
		results := script.ExecMulti(ctx, c, execs...)
		cancel()
		for _, r := range results {
			if err := r.Error(); err != nil && !isRedisErr(err) {
				s.fail(err)
				return false
			}
		}
		s.stats.refreshed.Add(uint64(len(execs)))
	}
	return true
}

// write runs the queued writes until stop is closed. A pin whose write
// timed out is tried again even while Redis is counted down: a success
// shows it is back.
func (s *Store) write(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case p := <-s.writes:
			c := s.client.Load()
			if c == nil || (p.mode == "drop" && !s.up.Load()) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), max(s.timeout, 250*time.Millisecond))
			err := script.Exec(ctx, *c, []string{s.key(p.sid)}, s.args(p.mode, p.sid, p.dial, p.client)).Error()
			cancel()
			switch {
			case err == nil && p.mode == "drop":
				s.stats.dropsShared.Add(1)
			case err == nil:
				s.stats.remotePins.Add(1)
				s.recover()
			case !isRedisErr(err):
				s.fail(err)
			}
		}
	}
}

// addressField names Redis in log lines: the host:port pairs, never the
// configured addresses, whose URLs may carry a password.
func (s *Store) addressField() zap.Field {
	return zap.Strings("address", s.opt.InitAddress)
}
