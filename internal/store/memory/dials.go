package memory

import (
	"sync"
	"sync/atomic"
)

// dialTable interns upstream dial addresses as small integers, so that a
// pin stores 4 bytes instead of a string, and tracks which configurations
// still use each address. Reads are lock-free snapshots; writes (a new
// address, a reference change) copy the snapshot.
type dialTable struct {
	mu   sync.Mutex
	refs map[uint32]int // references from loaded configurations, guarded by mu
	snap atomic.Pointer[dialSnapshot]
}

type dialSnapshot struct {
	ids   map[string]uint32 // current id of each address that is not retired
	dials []dialInfo        // by id
}

type dialInfo struct {
	name    string
	retired bool
}

func (t *dialTable) init() {
	t.refs = make(map[uint32]int)
	t.snap.Store(&dialSnapshot{ids: map[string]uint32{}})
}

// lookup returns the current id of dial without creating one.
func (t *dialTable) lookup(dial string) (uint32, bool) {
	id, ok := t.snap.Load().ids[dial]
	return id, ok
}

// intern returns the current id of dial, creating one if needed.
func (t *dialTable) intern(dial string) uint32 {
	if id, ok := t.lookup(dial); ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.internLocked(dial)
}

func (t *dialTable) internLocked(dial string) uint32 {
	old := t.snap.Load()
	if id, ok := old.ids[dial]; ok {
		return id
	}
	next := &dialSnapshot{
		ids:   make(map[string]uint32, len(old.ids)+1),
		dials: make([]dialInfo, len(old.dials), len(old.dials)+1),
	}
	for k, v := range old.ids {
		next.ids[k] = v
	}
	copy(next.dials, old.dials)
	id := uint32(len(next.dials))
	next.dials = append(next.dials, dialInfo{name: dial})
	next.ids[dial] = id
	t.snap.Store(next)
	return id
}

func (t *dialTable) name(id uint32) string {
	return t.snap.Load().dials[id].name
}

func (t *dialTable) retired(id uint32) bool {
	return t.snap.Load().dials[id].retired
}

// current returns the dials that loaded configurations use.
func (t *dialTable) current() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	snap := t.snap.Load()
	names := make([]string, 0, len(t.refs))
	for id := range t.refs {
		names = append(names, snap.dials[id].name)
	}
	return names
}

// acquire adds a configuration reference to each dial.
func (t *dialTable) acquire(dials []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range dials {
		t.refs[t.internLocked(d)]++
	}
}

// release drops a configuration reference from each dial and retires the
// ones no configuration uses any more. It reports whether any retired.
func (t *dialTable) release(dials []string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	var gone []uint32
	for _, d := range dials {
		id, ok := t.snap.Load().ids[d]
		if !ok || t.refs[id] == 0 {
			continue
		}
		t.refs[id]--
		if t.refs[id] == 0 {
			delete(t.refs, id)
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return false
	}
	old := t.snap.Load()
	next := &dialSnapshot{ids: make(map[string]uint32, len(old.ids)), dials: make([]dialInfo, len(old.dials))}
	copy(next.dials, old.dials)
	for _, id := range gone {
		next.dials[id].retired = true
	}
	for k, v := range old.ids {
		if !next.dials[v].retired {
			next.ids[k] = v
		}
	}
	t.snap.Store(next)
	return true
}
