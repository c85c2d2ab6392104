package policy

import (
	"container/heap"
	"context"
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// Store remembers the keys a Dedup has seen, each for a TTL window. MemoryStore is the
// in-process one; a store shared by several processes (a database, a cache) deduplicates
// across them. Implementations must be safe for concurrent use: of concurrent Seen calls
// with one key, exactly one may return false while the key is remembered.
type Store interface {
	// Seen records key if absent and returns false; returns true if key was recorded
	// within its TTL. A duplicate does not extend the TTL.
	Seen(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Forget removes key (used when the first delivery ends in a retryable failure, so a
	// redelivery is not mistaken for a duplicate). Forgetting an absent key is not an error.
	Forget(ctx context.Context, key string) error
}

const (
	// maxDedupShards bounds MemoryStore's lock striping.
	maxDedupShards = 16
	// minDedupShardCapacity keeps a bounded store from splitting into shards so small that
	// hash imbalance evicts keys long before the store is full.
	minDedupShardCapacity = 64
	// dedupSweep is how many expired keys a call removes, besides the one it may replace,
	// so expired keys leave at least as fast as new ones arrive.
	dedupSweep = 2
)

// MemoryStore is the default, in-process Store: keys live in a map sharded by key
// hash, each shard with a min-heap of expiry times. Every call removes a few expired keys
// of its shard, so memory follows the keys live within their TTL; with a capacity, a full
// shard first drops its earliest-expiring key (with a single TTL, the oldest).
//
// It never returns an error and ignores its contexts. It is safe for concurrent use by
// many goroutines: Seen and Forget lock one shard for O(log n) work.
type MemoryStore struct {
	now    func() time.Time
	epoch  time.Time // expiry times count from it, on the clock's monotonic reading if any
	seed   maphash.Seed
	shards []dedupShard
}

var _ Store = (*MemoryStore)(nil)

type dedupShard struct {
	mu       sync.Mutex
	capacity int // 0: unbounded
	seq      uint64
	keys     map[string]*dedupEntry
	expiries dedupHeap
	_        [64]byte // keep neighbouring shards' locks off one cache line
}

type dedupEntry struct {
	key     string
	expires int64  // nanoseconds since the store's epoch
	seq     uint64 // insertion order breaks ties, so equal expiries evict the oldest first
	index   int    // position in the heap
}

// NewMemoryStore returns an empty store holding at most capacity keys (0 or less:
// unbounded except by expiry). now is its clock; nil means time.Now. The capacity is
// split evenly across shards, so a shard may evict while the store as a whole has room.
func NewMemoryStore(capacity int, now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	capacity = max(capacity, 0)
	n := maxDedupShards
	if capacity > 0 {
		n = min(max(capacity/minDedupShardCapacity, 1), maxDedupShards)
	}
	d := &MemoryStore{now: now, epoch: now(), seed: maphash.MakeSeed(), shards: make([]dedupShard, n)}
	for i := range d.shards {
		s := &d.shards[i]
		s.keys = make(map[string]*dedupEntry)
		if capacity > 0 {
			s.capacity = capacity / n
			if i < capacity%n {
				s.capacity++
			}
		}
	}
	return d
}

// Seen records key for ttl if it is absent or expired and returns false; it returns true
// if key was recorded less than its ttl ago. A ttl of zero or less records nothing.
func (d *MemoryStore) Seen(_ context.Context, key string, ttl time.Duration) (bool, error) {
	now := d.clock()
	s := d.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now, dedupSweep)
	e := s.keys[key]
	if e != nil && now < e.expires {
		return true, nil
	}
	if ttl <= 0 {
		if e != nil {
			s.remove(e)
		}
		return false, nil
	}
	expires := int64(math.MaxInt64)
	if now < math.MaxInt64-int64(ttl) {
		expires = now + int64(ttl)
	}
	s.seq++
	if e != nil {
		e.expires, e.seq = expires, s.seq
		heap.Fix(&s.expiries, e.index)
		return false, nil
	}
	if s.capacity > 0 && len(s.keys) >= s.capacity {
		s.remove(s.expiries[0])
	}
	e = &dedupEntry{key: key, expires: expires, seq: s.seq}
	s.keys[key] = e
	heap.Push(&s.expiries, e)
	return false, nil
}

// Forget removes key, so its next Seen returns false.
func (d *MemoryStore) Forget(_ context.Context, key string) error {
	s := d.shard(key)
	s.mu.Lock()
	if e := s.keys[key]; e != nil {
		s.remove(e)
	}
	s.mu.Unlock()
	return nil
}

// Len is the number of keys held, counting expired keys not yet removed. It never
// exceeds a positive capacity.
func (d *MemoryStore) Len() int {
	n := 0
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		n += len(s.keys)
		s.mu.Unlock()
	}
	return n
}

// clock is the time in nanoseconds since the store's epoch; Sub uses the monotonic
// reading of both times when present, so wall-clock steps do not expire keys.
func (d *MemoryStore) clock() int64 { return int64(d.now().Sub(d.epoch)) }

func (d *MemoryStore) shard(key string) *dedupShard {
	if len(d.shards) == 1 {
		return &d.shards[0]
	}
	return &d.shards[maphash.String(d.seed, key)%uint64(len(d.shards))]
}

// sweep removes up to limit keys that expired by now. s.mu must be held.
func (s *dedupShard) sweep(now int64, limit int) {
	for ; limit > 0 && len(s.expiries) > 0 && s.expiries[0].expires <= now; limit-- {
		s.remove(s.expiries[0])
	}
}

// remove drops e from the shard. s.mu must be held.
func (s *dedupShard) remove(e *dedupEntry) {
	heap.Remove(&s.expiries, e.index)
	delete(s.keys, e.key)
}

// dedupHeap orders entries by expiry, then insertion; it implements heap.Interface.
type dedupHeap []*dedupEntry

func (h dedupHeap) Len() int { return len(h) }

func (h dedupHeap) Less(i, j int) bool {
	if h[i].expires != h[j].expires {
		return h[i].expires < h[j].expires
	}
	return h[i].seq < h[j].seq
}

func (h dedupHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *dedupHeap) Push(x any) {
	e := x.(*dedupEntry)
	e.index = len(*h)
	*h = append(*h, e)
}

func (h *dedupHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil // let the entry be collected
	*h = old[:len(old)-1]
	return e
}
