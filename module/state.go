package module

import (
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-socketio/caddy-socketio/selection/pins"
)

// sessions holds the one pin store of the process. It lives in a
// UsagePool rather than in a module because every config load builds new
// module values: a `caddy reload` must not forget which upstream owns each
// live session, and the handler and the policy of a request must reach
// the same pins. Every loaded socketio policy holds one reference; the
// store (and its sweeper) go away with the last one.
var sessions = caddy.NewUsagePool()

const sessionsKey = "socketio.pins"

// tickInterval is how often the store's clock advances (see
// pins.Store.Tick): the resolution of every TTL.
const tickInterval = time.Second

// sweepTicks is how many ticks pass between two sweeps of expired pins.
// Expired pins never route a request (Lookup checks the TTL), so this only
// bounds how long they hold memory.
const sweepTicks = 5

// sharedSessions is the value kept in the sessions pool.
type sharedSessions struct {
	store *pins.Store

	mu     sync.Mutex
	limits map[*SocketIOSelection]limits // one per loaded policy, guarded by mu

	stop chan struct{}
	done chan struct{}
}

// limits are a policy's wishes for the shared store.
type limits struct {
	ttl      time.Duration
	capacity int
}

// acquireSessions returns the process's pin store, creating it (and
// starting its sweeper) if no policy holds it. Each call must be matched
// by releaseSessions.
func acquireSessions() *sharedSessions {
	val, _, _ := sessions.LoadOrNew(sessionsKey, func() (caddy.Destructor, error) {
		st := &sharedSessions{
			store:  pins.New(),
			limits: make(map[*SocketIOSelection]limits),
			stop:   make(chan struct{}),
			done:   make(chan struct{}),
		}
		st.store.Tick()
		go st.sweep()
		return st, nil
	})
	return val.(*sharedSessions)
}

func releaseSessions() {
	_, _ = sessions.Delete(sessionsKey)
}

// register records a policy's limits. The store applies the most
// permissive of the loaded policies' limits: a pin may be routed by any
// of them, and none may lose sessions to another's smaller bound.
func (st *sharedSessions) register(p *SocketIOSelection, l limits) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.limits[p] = l
	st.applyLocked()
}

func (st *sharedSessions) unregister(p *SocketIOSelection) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.limits, p)
	st.applyLocked()
}

func (st *sharedSessions) applyLocked() {
	if len(st.limits) == 0 {
		return
	}
	var ttl time.Duration
	var capacity int
	for _, l := range st.limits {
		ttl = max(ttl, l.ttl)
		capacity = max(capacity, l.capacity)
	}
	st.store.Configure(ttl, capacity)
}

// sweep advances the store's clock and removes expired pins until the
// store is destroyed, in batches so that handshakes never wait long for
// the store's writer lock.
func (st *sharedSessions) sweep() {
	defer close(st.done)
	const batch = 4096
	ticker := time.NewTicker(tickInterval)
	defer ticker.Stop()
	for ticks := 1; ; ticks++ {
		select {
		case <-st.stop:
			return
		case <-ticker.C:
			st.store.Tick()
			if ticks%sweepTicks != 0 {
				continue
			}
			for st.store.Sweep(batch) == batch {
				select {
				case <-st.stop:
					return
				default:
				}
			}
		}
	}
}

// Destruct stops the sweeper; the pool calls it when the last policy
// using the store is cleaned up.
func (st *sharedSessions) Destruct() error {
	close(st.stop)
	<-st.done
	return nil
}

// Interface guards
var _ caddy.Destructor = (*sharedSessions)(nil)
