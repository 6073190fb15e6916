package memory

// The LRU list orders every pin by last use, so that expiry and eviction
// are exact and O(1) per pin. Requests touch pins without locks; the list
// catches up lazily (CLOCK with timestamps): an entry whose touched mark
// moved since it was queued is requeued when it reaches the tail.

// Sweep removes expired pins (tombstones included), at most limit of them
// (limit <= 0 means no limit), and returns how many it removed. Because
// the LRU list is ordered by last use and every pin shares one TTL, it
// stops at the first pin that is still fresh.
func (s *Store) Sweep(limit int) int {
	now := s.clock()
	ttl := s.ttl.Load()
	removed := 0
	s.writer.Lock()
	defer s.writer.Unlock()
	for e := s.tail; e != nil && (limit <= 0 || removed < limit); e = s.tail {
		touched := e.touched.Load()
		switch {
		case isExpired(now, touched, ttl):
			s.remove(e)
			s.stats.expired.Add(1)
		case touched != e.queued:
			// used since it was queued: give it its place back
			s.requeue(e)
			continue
		default:
			return removed
		}
		removed++
	}
	return removed
}

// evictOldest removes the least recently used pin. Entries used since they
// were queued are moved back to the head first (CLOCK with timestamps), so
// the one removed is the pin idle the longest. Caller holds s.writer.
func (s *Store) evictOldest(now uint32) {
	// every requeue makes an entry's queued mark current, so after at most
	// count requeues the tail is the oldest; the bound only guards against
	// touches racing the loop
	requeues := s.count
	for e := s.tail; e != nil; e = s.tail {
		if touched := e.touched.Load(); touched != e.queued && requeues > 0 {
			requeues--
			s.requeue(e)
			continue
		}
		s.remove(e)
		if s.expired(e, now) {
			s.stats.expired.Add(1)
		} else {
			s.stats.evicted.Add(1)
		}
		return
	}
}

// remove unlinks e from its shard and from the LRU list. Caller holds
// s.writer.
func (s *Store) remove(e *entry) {
	sh := s.shardFor(e.sid)
	sh.mu.Lock()
	first := sh.m[e.sid]
	switch {
	case first == e && e.sibling == nil:
		delete(sh.m, e.sid)
	case first == e:
		sh.m[e.sid] = e.sibling
	default:
		for p := first; p != nil; p = p.sibling {
			if p.sibling == e {
				p.sibling = e.sibling
				break
			}
		}
	}
	sh.mu.Unlock()
	s.unlink(e)
	s.count--
}

// requeue moves e to the head of the LRU list, remembering the touch it
// was queued for. Caller holds s.writer.
func (s *Store) requeue(e *entry) {
	e.queued = e.touched.Load()
	if s.head == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}

func (s *Store) pushFront(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *Store) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else if s.head == e {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else if s.tail == e {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// removeDead removes the expired pins and tombstones of sid, so that a new
// handshake never counts them as owners. Caller holds s.writer.
func (s *Store) removeDead(sid string, now uint32) {
	sh := s.shardFor(sid)
	for {
		var dead *entry
		sh.mu.RLock()
		for e := sh.m[sid]; e != nil; e = e.sibling {
			if s.expired(e, now) || s.gone(e) {
				dead = e
				break
			}
		}
		sh.mu.RUnlock()
		if dead == nil {
			return
		}
		s.remove(dead)
		s.stats.expired.Add(1)
	}
}
