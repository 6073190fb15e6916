package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Every instance subscribes to the announcements of the others: each new
// pin, pin put back, or tombstone, with the sid's whole value, published
// by the script that made the change. So every instance knows every live
// session's pin before any request of it arrives, and keeps routing it
// while Redis is down, even if no request of the session had reached it
// before the outage. Announcements are a warm cache, not the truth: one
// missed (a subscription being re-made) costs a GET at the next request.

// announcements ends the name of the channel, after the key prefix.
const announcements = "announcements"

// instanceID returns a random id for this store's announcements.
func instanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// subscribe keeps a subscription to the channel while Redis is reachable,
// until stop is closed.
func (s *Store) subscribe(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	for {
		if c := s.redis(); c != nil {
			// returns when the connection fails, or at stop
			_ = c.Receive(ctx, c.B().Subscribe().Channel(s.channel).Build(), func(m rueidis.PubSubMessage) {
				s.announced(m.Message)
			})
		}
		select {
		case <-stop:
			return
		case <-time.After(probeInterval):
		}
	}
}

// announced caches the value of an announcement of another instance.
func (s *Store) announced(msg string) {
	origin, rest, ok := strings.Cut(msg, " ")
	if !ok || origin == s.id {
		return
	}
	sid, value, ok := strings.Cut(rest, "\n")
	if !ok || sid == "" {
		return
	}
	owners, ok := decode(value)
	if !ok {
		s.ignore("an announcement on the channel was not written by this plugin (or not wholly)", nil)
		return
	}
	s.stats.announced.Add(1)
	s.cache(sid, owners)
}
