package store

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Upstreams that drain take no new sessions: the socketio policy hides
// them from its fallback, while the sessions pinned to them go on. An
// operator drains a node before stopping it (see the admin API), so that
// no client starts a session there that the stop would end.
//
// The set is the process's, like the pins: it outlives config reloads, and
// it applies to every socketio policy that routes to the dial address.
// With a shared store (DrainSharer), it is the set all instances share.
var drains struct {
	mu    sync.RWMutex
	dials map[string]struct{} // guarded by mu
	n     atomic.Int32        // len(dials), read without the lock
}

// SetDraining marks the upstream with the dial address as draining, or
// not, and reports whether that changed anything.
func SetDraining(dial string, on bool) bool {
	drains.mu.Lock()
	defer drains.mu.Unlock()
	_, was := drains.dials[dial]
	switch {
	case on && !was:
		if drains.dials == nil {
			drains.dials = make(map[string]struct{})
		}
		drains.dials[dial] = struct{}{}
	case !on && was:
		delete(drains.dials, dial)
	default:
		return false
	}
	drains.n.Store(int32(len(drains.dials)))
	return true
}

// ReplaceDraining makes dials the set of upstreams that drain: a shared
// store (DrainSharer) calls it with the set all instances share.
func ReplaceDraining(dials []string) {
	drains.mu.Lock()
	defer drains.mu.Unlock()
	drains.dials = make(map[string]struct{}, len(dials))
	for _, d := range dials {
		drains.dials[d] = struct{}{}
	}
	drains.n.Store(int32(len(drains.dials)))
}

// DrainSharer is a Store shared by several Caddy instances that shares
// which upstreams drain: drained on one instance, an upstream drains on
// all (each reads the shared set back, see ReplaceDraining).
type DrainSharer interface {
	// ShareDrain records that the upstream with the dial address drains,
	// or not, for every instance; it fails when the shared store cannot
	// be reached.
	ShareDrain(dial string, on bool) error
}

// AnyDraining reports whether some upstream drains; it costs one atomic
// load, for the path of every new session.
func AnyDraining() bool { return drains.n.Load() > 0 }

// IsDraining reports whether the upstream with the dial address drains.
func IsDraining(dial string) bool {
	if !AnyDraining() {
		return false
	}
	drains.mu.RLock()
	defer drains.mu.RUnlock()
	_, ok := drains.dials[dial]
	return ok
}

// Draining returns the dial addresses of the upstreams that drain, sorted.
func Draining() []string {
	drains.mu.RLock()
	defer drains.mu.RUnlock()
	dials := make([]string, 0, len(drains.dials))
	for d := range drains.dials {
		dials = append(dials, d)
	}
	slices.Sort(dials)
	return dials
}
