package memory

import (
	"sync"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// The sid index is lock-striped so that the requests of many sessions
// never wait on one another.

const shardCount = 64

// shard is one stripe of the sid index, padded to a cache line so that
// readers of neighbouring shards do not slow each other down.
type shard struct {
	shardData
	_ [cacheLine - unsafe.Sizeof(shardData{})%cacheLine]byte
}

type shardData struct {
	mu sync.RWMutex
	m  map[string]*entry
}

const cacheLine = 64

func (s *Store) shardFor(sid string) *shard {
	return &s.shards[xxhash.Sum64String(sid)%shardCount]
}
