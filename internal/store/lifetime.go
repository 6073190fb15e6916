package store

import (
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// stores holds the stores of the process. They live in a UsagePool rather
// than in a module because every config load builds new module values: a
// `caddy reload` must not forget which upstream owns each live session,
// and the handler and the policy of a request must reach the same pins.
// Every loaded policy holds one reference; a store (and its maintenance)
// goes away with the last one.
var stores = caddy.NewUsagePool()

// Handle is one holder's reference to a process-wide store.
type Handle struct {
	Store

	key  string
	held *held
}

// held is the value kept in the stores pool.
type held struct {
	store Store

	mu     sync.Mutex
	limits map[any]Limits // one per holder, guarded by mu

	stop chan struct{}
	done chan struct{}
}

// Limits are one holder's wishes for a shared store.
type Limits struct {
	TTL      time.Duration
	Capacity int
}

// Acquire returns a handle on the store kept under key, opening it with
// open (and starting its maintenance, see Maintainer) if nobody holds it.
// Each Acquire must be matched by a Close of the handle.
func Acquire(key string, open func() (Store, error)) (*Handle, error) {
	val, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		st, err := open()
		if err != nil {
			return nil, err
		}
		h := &held{store: st, limits: make(map[any]Limits), stop: make(chan struct{}), done: make(chan struct{})}
		if m, ok := st.(Maintainer); ok {
			go func() {
				defer close(h.done)
				m.Maintain(h.stop)
			}()
		} else {
			close(h.done)
		}
		return h, nil
	})
	if err != nil {
		return nil, err
	}
	h := val.(*held)
	return &Handle{Store: h.store, key: key, held: h}, nil
}

// Close gives the handle's reference back; the last one stops the
// store's maintenance. Close the handle once, and use it no more.
func (h *Handle) Close() {
	_, _ = stores.Delete(h.key)
}

// SetLimits records holder's limits. The store applies the most
// permissive of its holders' limits: a pin may be routed by any of them,
// and none may lose sessions to another's smaller bound.
func (h *Handle) SetLimits(holder any, l Limits) {
	h.held.mu.Lock()
	defer h.held.mu.Unlock()
	h.held.limits[holder] = l
	h.held.applyLocked()
}

// ClearLimits forgets holder's limits.
func (h *Handle) ClearLimits(holder any) {
	h.held.mu.Lock()
	defer h.held.mu.Unlock()
	delete(h.held.limits, holder)
	h.held.applyLocked()
}

func (h *held) applyLocked() {
	if len(h.limits) == 0 {
		return
	}
	var l Limits
	for _, o := range h.limits {
		l.TTL = max(l.TTL, o.TTL)
		l.Capacity = max(l.Capacity, o.Capacity)
	}
	h.store.Configure(l.TTL, l.Capacity)
}

// Destruct stops the store's maintenance; the pool calls it when the
// last holder releases the store.
func (h *held) Destruct() error {
	close(h.stop)
	<-h.done
	return nil
}

// Range calls fn for each store the process holds, until fn returns
// false.
func Range(fn func(key string, s Store) bool) {
	stores.Range(func(key, val any) bool {
		h, ok := val.(*held)
		if !ok {
			return true
		}
		k, _ := key.(string)
		return fn(k, h.store)
	})
}

// Census sums Store.Census over the stores the process holds (Range): the
// live pins per dial address, and the tombstones.
func Census() (live map[string]int, tombstones int) {
	live = map[string]int{}
	Range(func(_ string, s Store) bool {
		l, t := s.Census()
		for dial, n := range l {
			live[dial] += n
		}
		tombstones += t
		return true
	})
	return live, tombstones
}

// Interface guards
var _ caddy.Destructor = (*held)(nil)
