package redis

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-socketio/caddy-socketio/internal/store"
)

// drainSet names, after the key prefix, the Redis set of the dial
// addresses of upstreams that drain: every instance reads it back each
// probeInterval (syncDrains), so an upstream drained on one instance
// drains on all within a second. No pin can have this key: a minted sid
// never holds '#' (engineio.ValidSID).
const drainSet = "#draining"

// errUnreachable: the shared store cannot be reached now.
var errUnreachable = errors.New("the shared store (Redis) is unreachable")

// ShareDrain implements store.DrainSharer.
func (s *Store) ShareDrain(dial string, on bool) error {
	if !validDial(dial) {
		return errors.New("invalid upstream address")
	}
	c := s.redis()
	if c == nil {
		return errUnreachable
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(s.timeout, 250*time.Millisecond))
	defer cancel()
	cmd := c.B().Sadd().Key(s.prefix + drainSet).Member(dial).Build()
	if !on {
		cmd = c.B().Srem().Key(s.prefix + drainSet).Member(dial).Build()
	}
	if err := c.Do(ctx, cmd).Error(); err != nil {
		if !isRedisErr(err) {
			s.fail(err)
		}
		return err
	}
	return nil
}

// syncDrains makes the process's drain set the shared one. Members that
// cannot be dial addresses (another program wrote them) are ignored.
func (s *Store) syncDrains() {
	c := s.redis()
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(s.timeout, 250*time.Millisecond))
	defer cancel()
	members, err := c.Do(ctx, c.B().Smembers().Key(s.prefix+drainSet).Build()).AsStrSlice()
	if err != nil {
		if isRedisErr(err) {
			s.ignore("a value under the key prefix that the plugin did not write", err)
		} else {
			s.fail(err)
		}
		return
	}
	dials := members[:0]
	for _, m := range members {
		if validDial(m) {
			dials = append(dials, m)
		}
	}
	if changed := !sameDials(dials, store.Draining()); changed {
		store.ReplaceDraining(dials)
		s.logger.Info("upstreams draining, as shared through Redis", zap.Strings("draining", dials))
	}
}

func sameDials(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := make(map[string]bool, len(a))
	for _, d := range a {
		set[d] = true
	}
	for _, d := range b {
		if !set[d] {
			return false
		}
	}
	return true
}

// Interface guards
var _ store.DrainSharer = (*Store)(nil)
