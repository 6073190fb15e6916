// Package redis is a shared pin store: the pins of several Caddy
// instances, kept in Redis (or Valkey) so that any instance routes every
// session to the node that minted it.
//
// Each instance keeps the pins it knows in a local memory store in front
// of Redis, so a request whose sid is known locally costs what it costs
// with the memory store, and no round trip. Redis is asked only when it
// must be:
//
//   - Pin (a handshake) writes to Redis and waits for the answer, at most
//     the store's timeout, before the handshake's body is released: the
//     client's next request may reach another instance a millisecond
//     later.
//   - Lookup of a sid the instance does not know reads Redis, at most the
//     timeout, and keeps what it found locally.
//   - Touch only touches the local pin; the pins used since the last
//     refresh get their Redis TTL extended in the background, in batches,
//     every third of the TTL: one write per pin per TTL/3, not per
//     request.
//   - Drop writes the tombstone to Redis in the background.
//   - Every change of owners is also announced to the other instances
//     (subscribe.go), which cache it: most sids are known locally before
//     their first request, and stay known while Redis is down.
//
// When Redis refuses connections, or three requests in a row time out, or
// a PING (sent once a second, and at once after a timeout) fails, the
// store counts it down and stops asking (no request waits at all) until a
// PING gets an answer; one log line marks each change. While it is down each
// instance knows only its own pins, and store.Shared tells the policy to
// place new sessions by client-IP hash, which every instance computes
// alike.
package redis

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
	"github.com/caddy-socketio/caddy-socketio/internal/store/memory"
)

// DefaultTimeout bounds each wait on Redis on a request's path.
const DefaultTimeout = 50 * time.Millisecond

// DefaultKeyPrefix starts every key the store writes.
const DefaultKeyPrefix = "socketio:sid:"

// Config says how to reach Redis. Values are final: placeholders are
// replaced by the caller.
type Config struct {
	// Addresses are host:port pairs or redis:// / rediss:// URLs; with
	// several, the client treats them as the seeds of a Redis Cluster.
	Addresses []string
	Username  string
	Password  string
	DB        int
	// TLS turns TLS on (rediss:// URLs turn it on too).
	TLS bool
	// TLSServerName overrides the name the server's certificate must
	// have; TLSInsecure skips its verification (tests only).
	TLSServerName string
	TLSInsecure   bool
	KeyPrefix     string
	Timeout       time.Duration
}

// PoolKey names the store among the process's stores (store.Acquire):
// configurations that reach the same Redis the same way share one store,
// one connection and one local layer, across reloads. The password only
// enters the key hashed.
func (c Config) PoolKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q %d %t %q %t %q %d",
		c.Addresses, c.Username, c.Password, c.DB, c.TLS, c.TLSServerName, c.TLSInsecure, c.KeyPrefix, c.Timeout)
	return "socketio.store.redis:" + hex.EncodeToString(h.Sum(nil)[:12])
}

// clientOption builds the rueidis options of c.
func (c Config) clientOption() (rueidis.ClientOption, error) {
	var opt rueidis.ClientOption
	for _, a := range c.Addresses {
		if !strings.Contains(a, "://") {
			opt.InitAddress = append(opt.InitAddress, a)
			continue
		}
		u, err := rueidis.ParseURL(a)
		if err != nil {
			// the URL may hold a password: do not echo it
			return opt, fmt.Errorf("invalid Redis URL (scheme redis://, rediss:// or unix://)")
		}
		opt.InitAddress = append(opt.InitAddress, u.InitAddress...)
		if opt.Username == "" {
			opt.Username = u.Username
		}
		if opt.Password == "" {
			opt.Password = u.Password
		}
		if opt.SelectDB == 0 {
			opt.SelectDB = u.SelectDB
		}
		if u.TLSConfig != nil {
			opt.TLSConfig = u.TLSConfig
		}
	}
	if len(opt.InitAddress) == 0 {
		return opt, errors.New("no Redis address")
	}
	if c.Username != "" {
		opt.Username = c.Username
	}
	if c.Password != "" {
		opt.Password = c.Password
	}
	if c.DB != 0 {
		opt.SelectDB = c.DB
	}
	if c.TLS || c.TLSServerName != "" || c.TLSInsecure {
		if opt.TLSConfig == nil {
			opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if c.TLSServerName != "" {
			opt.TLSConfig.ServerName = c.TLSServerName
		}
		opt.TLSConfig.InsecureSkipVerify = c.TLSInsecure //nolint:gosec // an explicit, documented test-only option
	}
	opt.ForceSingleClient = len(opt.InitAddress) == 1
	// the pins are a handful of small keys: no client-side cache (the
	// local memory store is the cache), no retries (a request waits at
	// most the timeout), and a small read buffer
	opt.DisableCache = true
	opt.DisableRetry = true
	opt.Dialer.Timeout = max(c.timeout(), time.Second)
	opt.ConnWriteTimeout = max(4*c.timeout(), time.Second)
	// one connection, auto-pipelined: after Redis restarts, one failed
	// command (then a probe) tells the store, not one per connection
	opt.PipelineMultiplex = -1
	opt.ReadBufferEachConn = 64 << 10
	opt.WriteBufferEachConn = 64 << 10
	opt.ClientName = "caddy-socketio"
	return opt, nil
}

func (c Config) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Store is the Redis store.Store. Use Open.
type Store struct {
	local   *memory.Store
	cfg     Config
	opt     rueidis.ClientOption
	prefix  string
	timeout time.Duration
	logger  *zap.Logger

	// client is nil until the first connection; up is false while Redis
	// is known to be unreachable (see health.go)
	client atomic.Pointer[rueidis.Client]
	up     atomic.Bool
	// timeouts counts the requests in a row that timed out; probeNow
	// wakes Maintain for a PING
	timeouts atomic.Int32
	probeNow chan struct{}

	ttlMillis atomic.Int64

	// latency of the round trips made for clients (see latency.go)
	latency latency

	// channel announces every change of owners to the other instances;
	// id tells this instance's announcements apart (subscribe.go)
	channel, id string

	// acquired counts the loaded configurations that route to each dial
	mu       sync.Mutex
	acquired map[string]int

	// writes waiting for the background writer: tombstones, and pins
	// whose write timed out
	writes chan owned

	stats sharedCounters
	// lastIgnored rate-limits the log line about ignored values
	lastIgnored atomic.Int64
}

// owned names one pin in Redis, and what to write: "drop" or "touch".
type owned struct {
	sid, dial string
	client    uint64
	mode      string
}

// writeQueue bounds the writes waiting for the background writer; when
// Redis is slower than the sessions start and end, the excess is not
// shared (a lost tombstone: the pin expires anyway, and its owner answers
// "Session ID unknown" to every instance; a lost pin: the next refresh
// writes it).
const writeQueue = 4096

// Open returns a store for cfg. It does no I/O: the store connects in
// Maintain, which store.Acquire runs.
func Open(cfg Config, logger *zap.Logger) (*Store, error) {
	opt, err := cfg.clientOption()
	if err != nil {
		return nil, err
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	// only the client keeps the password
	cfg.Password = ""
	if logger == nil {
		logger = zap.NewNop()
	}
	s := &Store{
		local:    memory.New(),
		cfg:      cfg,
		opt:      opt,
		prefix:   cfg.KeyPrefix,
		timeout:  cfg.timeout(),
		logger:   logger,
		acquired: make(map[string]int),
		writes:   make(chan owned, writeQueue),
		probeNow: make(chan struct{}, 1),
	}
	s.channel = cfg.KeyPrefix + announcements
	s.id = instanceID()
	s.ttlMillis.Store(store.DefaultTTL.Milliseconds())
	return s, nil
}

// Reachable reports whether Redis answered lately.
func (s *Store) Reachable() bool { return s.up.Load() }

func (s *Store) key(sid string) string { return s.prefix + sid }

// redis returns the client while Redis is reachable.
func (s *Store) redis() rueidis.Client {
	if !s.up.Load() {
		return nil
	}
	if c := s.client.Load(); c != nil {
		return *c
	}
	return nil
}

// Lookup appends the unexpired pins of sid, newest first, to dst. A sid
// the instance knows costs no I/O; one it does not know is read from
// Redis (at most the store's timeout, not at all while Redis is down),
// and kept locally.
func (s *Store) Lookup(sid string, dst []store.Owner) []store.Owner {
	n := len(dst)
	dst = s.local.Lookup(sid, dst)
	if len(dst) > n {
		return dst
	}
	c := s.redis()
	if c == nil {
		return dst
	}
	s.stats.remoteLookups.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	start := time.Now()
	v, err := c.Do(ctx, c.B().Get().Key(s.key(sid)).Build()).ToString()
	s.latency.observe(time.Since(start))
	cancel()
	if err == nil || rueidis.IsRedisNil(err) || isRedisErr(err) {
		s.answered()
	}
	switch {
	case rueidis.IsRedisNil(err):
		return dst
	case err != nil:
		if isRedisErr(err) {
			// WRONGTYPE: another program's key under our prefix
			s.ignore("a value under the key prefix is not a string", err)
		} else {
			s.fail(err)
		}
		return dst
	}
	owners, ok := decode(v)
	if !ok {
		s.ignore("a value under the key prefix was not written by this plugin (or not wholly)", nil)
		return dst
	}
	if !s.cache(sid, owners) {
		return dst
	}
	s.stats.remoteHits.Add(1)
	return s.local.Lookup(sid, dst[:n])
}

// cache keeps owners of sid, read from Redis, in the local layer; it
// reports whether it kept any.
func (s *Store) cache(sid string, owners []owner) bool {
	kept := false
	for _, o := range owners {
		if !s.knows(o.dial) {
			s.ignore("a pin in Redis names an upstream this instance does not route to; not followed", nil)
			continue
		}
		// oldest first: the memory store lists the newest pin first
		if r := s.local.Pin(sid, o.dial, o.client); r == store.Refused {
			continue
		}
		if o.gone {
			s.local.DropDial(sid, o.dial)
		}
		kept = true
	}
	return kept
}

// knows reports whether dial is an upstream of this instance: one that a
// loaded configuration routes to, or (dynamic upstreams) one that minted
// a pin here.
func (s *Store) knows(dial string) bool {
	s.mu.Lock()
	n := s.acquired[dial]
	s.mu.Unlock()
	return n > 0 || s.local.Known(dial)
}

// Touch marks the pin behind o as used now. It touches the local pin
// only: Maintain extends the pins' TTL in Redis in the background.
func (s *Store) Touch(o store.Owner) { s.local.Touch(o) }

// Pin records that dial minted sid. It returns once Redis has the pin,
// or after the store's timeout: then (or while Redis is down) the pin is
// kept locally only, and the policy places new sessions by client-IP
// hash until Redis is back.
func (s *Store) Pin(sid, dial string, client uint64) store.PinResult {
	c := s.redis()
	if c == nil || !validDial(dial) {
		return s.local.Pin(sid, dial, client)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	start := time.Now()
	res, err := script.Exec(ctx, c, []string{s.key(sid)}, s.args("pin", sid, dial, client)).ToArray()
	s.latency.observe(time.Since(start))
	cancel()
	if err == nil && len(res) != 2 {
		err = errors.New("unexpected answer to the pin script")
	}
	if err != nil {
		if isRedisErr(err) {
			s.logger.Error("writing a pin to Redis failed; kept locally", zap.Error(err))
		} else {
			// the handshake was placed by the fallback, and the other
			// instances hash the client's address until they find the
			// pin: write it as soon as Redis takes it
			s.fail(err)
			s.queue(owned{sid: sid, dial: dial, client: client, mode: "touch"}, true)
		}
		return s.local.Pin(sid, dial, client)
	}
	s.answered()
	s.stats.remotePins.Add(1)
	code, err1 := res[0].AsInt64()
	value, err2 := res[1].ToString()
	if err1 != nil || err2 != nil || code < int64(store.Pinned) || code > int64(store.Refused) {
		return s.local.Pin(sid, dial, client)
	}
	if store.PinResult(code) == store.Refused {
		return store.Refused
	}
	// the other owners of the sid (a collision) first, so that the local
	// layer lists this pin first, as the newest
	if owners, ok := decode(value); ok {
		others := owners[:0]
		for _, o := range owners {
			if o.dial != dial {
				others = append(others, o)
			}
		}
		s.cache(sid, others)
	}
	s.local.Pin(sid, dial, client)
	return store.PinResult(code)
}

func (s *Store) args(mode, sid, dial string, client uint64) []string {
	return []string{mode, dial, clientArg(client), strconv.FormatInt(s.ttlMillis.Load(), 10), strconv.Itoa(store.MaxOwners),
		s.channel, s.id, sid}
}

// Drop turns the pin behind o into a tombstone, here at once and in Redis
// in the background.
func (s *Store) Drop(o store.Owner) bool {
	if !s.local.Drop(o) {
		return false
	}
	s.queue(owned{sid: memory.SID(o), dial: o.Dial, client: o.Client, mode: "drop"}, false)
	return true
}

// DropDial is Drop for the pin of sid to dial.
func (s *Store) DropDial(sid, dial string) bool {
	var buf [store.MaxOwners]store.Owner
	for _, o := range s.local.Lookup(sid, buf[:0]) {
		if o.Dial == dial {
			return s.Drop(o)
		}
	}
	return false
}

// queue hands a write to the background writer, unless Redis is down
// (and evenIfDown is false) or the queue is full.
func (s *Store) queue(p owned, evenIfDown bool) {
	if p.sid == "" || (!evenIfDown && !s.up.Load()) || !validDial(p.dial) {
		return
	}
	select {
	case s.writes <- p:
	default:
		s.stats.writesLost.Add(1)
	}
}

// Acquire records that a loaded configuration routes to each of dials.
func (s *Store) Acquire(dials []string) {
	s.mu.Lock()
	for _, d := range dials {
		s.acquired[d]++
	}
	s.mu.Unlock()
	s.local.Acquire(dials)
}

// Release undoes one Acquire. The pins of a dial no configuration uses
// any more become tombstones here only: another instance may still route
// to that dial (a pool change reaches the instances one after the other).
func (s *Store) Release(dials []string) {
	s.mu.Lock()
	for _, d := range dials {
		if s.acquired[d]--; s.acquired[d] <= 0 {
			delete(s.acquired, d)
		}
	}
	s.mu.Unlock()
	s.local.Release(dials)
}

// Configure sets the idle TTL (here and in Redis) and the most pins kept
// locally. Redis keys expire by themselves, so Redis needs no capacity.
func (s *Store) Configure(ttl time.Duration, capacity int) {
	s.local.Configure(ttl, capacity)
	ttl, _ = s.local.Limits()
	s.ttlMillis.Store(ttl.Milliseconds())
}

// Limits returns the TTL and local capacity in force.
func (s *Store) Limits() (time.Duration, int) { return s.local.Limits() }

// Stats returns the local layer's counters.
func (s *Store) Stats() store.Stats { return s.local.Stats() }

// Census counts the local layer's pins.
func (s *Store) Census() (map[string]int, int) { return s.local.Census() }

// ignore logs, at most once every ten seconds, that a value was ignored.
func (s *Store) ignore(msg string, err error) {
	s.stats.ignored.Add(1)
	now := time.Now().UnixNano()
	last := s.lastIgnored.Load()
	if now-last < int64(10*time.Second) || !s.lastIgnored.CompareAndSwap(last, now) {
		return
	}
	fields := []zap.Field{zap.Uint64("ignored_total", s.stats.ignored.Load())}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	s.logger.Warn(msg, fields...)
}

func isRedisErr(err error) bool {
	_, ok := rueidis.IsRedisErr(err)
	return ok
}

// Interface guards
var (
	_ store.Shared     = (*Store)(nil)
	_ store.Maintainer = (*Store)(nil)
)

// Check reports whether c can be used; it connects to nothing.
func (c Config) Check() error {
	_, err := c.clientOption()
	return err
}
