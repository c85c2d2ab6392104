package policy

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

// fakeClock is a clock tests move by hand; safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// mustSeen calls Seen and fails the test on an error.
func mustSeen(t *testing.T, d Store, key string, ttl time.Duration) bool {
	t.Helper()
	seen, err := d.Seen(context.Background(), key, ttl)
	if err != nil {
		t.Fatalf("Seen(%q): %v", key, err)
	}
	return seen
}

func TestDedupFirstSeenThenDuplicate(t *testing.T) {
	d := NewMemoryStore(0, nil)
	if mustSeen(t, d, "a", time.Minute) {
		t.Fatal("first Seen(a) = true, want false")
	}
	for range 3 {
		if !mustSeen(t, d, "a", time.Minute) {
			t.Fatal("second Seen(a) = false, want true: a duplicate would run its handler")
		}
	}
	if mustSeen(t, d, "b", time.Minute) {
		t.Error("first Seen(b) = true after Seen(a): keys are not independent")
	}
	if got := d.Len(); got != 2 {
		t.Errorf("Len = %d, want 2", got)
	}
}

func TestDedupExpiresAfterTTL(t *testing.T) {
	clock := newFakeClock()
	d := NewMemoryStore(0, clock.Now)
	mustSeen(t, d, "k", 10*time.Second)
	clock.Advance(10*time.Second - time.Nanosecond)
	if !mustSeen(t, d, "k", 10*time.Second) {
		t.Fatal("Seen 1ns before the TTL ends = false, want true")
	}
	clock.Advance(time.Nanosecond)
	if mustSeen(t, d, "k", 10*time.Second) {
		t.Fatal("Seen when the TTL ends = true, want false")
	}
	// That call recorded the key again, for a new TTL.
	clock.Advance(5 * time.Second)
	if !mustSeen(t, d, "k", 10*time.Second) {
		t.Fatal("Seen 5s after re-recording = false, want true")
	}
	clock.Advance(5 * time.Second)
	if mustSeen(t, d, "k", 10*time.Second) {
		t.Error("a duplicate extended the TTL: Seen 10s after recording = true, want false")
	}
	// A zero TTL remembers nothing.
	if mustSeen(t, d, "z", 0) || mustSeen(t, d, "z", 0) {
		t.Error("Seen with ttl 0 remembered the key")
	}
	// A huge TTL saturates instead of wrapping into the past.
	mustSeen(t, d, "forever", time.Duration(1<<63-1))
	clock.Advance(100 * 365 * 24 * time.Hour)
	if !mustSeen(t, d, "forever", time.Minute) {
		t.Error("a key with the largest TTL expired")
	}
}

func TestDedupExpiredKeyNotYetSwept(t *testing.T) {
	// Capacity 64 is a single shard, and a call sweeps only a few expired keys, so the
	// last of 50 expired keys is still held when it comes back.
	clock := newFakeClock()
	d := NewMemoryStore(64, clock.Now)
	for i := range 50 {
		mustSeen(t, d, strconv.Itoa(i), 10*time.Second)
	}
	clock.Advance(10 * time.Second)
	if mustSeen(t, d, "49", 10*time.Second) {
		t.Fatal("an expired key not yet swept counts as a duplicate")
	}
	clock.Advance(10*time.Second - time.Nanosecond)
	if !mustSeen(t, d, "49", 10*time.Second) {
		t.Fatal("a key recorded again over its expired entry was not given a new TTL")
	}
	clock.Advance(time.Nanosecond)
	if mustSeen(t, d, "49", 10*time.Second) {
		t.Fatal("the renewed key outlived its TTL")
	}

	// A renewed key moves behind the keys that expire before it, so they are still swept.
	d = NewMemoryStore(64, clock.Now)
	for _, k := range []string{"e0", "e1", "r", "e2"} {
		mustSeen(t, d, k, time.Second)
	}
	clock.Advance(time.Second)
	mustSeen(t, d, "r", time.Hour) // sweeps e0 and e1, renews r
	mustSeen(t, d, "new", time.Hour)
	if got := d.Len(); got != 2 {
		t.Errorf("Len = %d, want 2 (r and new): the expired e2 was not swept past the renewed r", got)
	}
}

func TestDedupExpiredKeysAreRemoved(t *testing.T) {
	clock := newFakeClock()
	d := NewMemoryStore(0, clock.Now)
	for i := range 10_000 {
		mustSeen(t, d, "old"+strconv.Itoa(i), time.Second)
	}
	clock.Advance(2 * time.Second)
	for i := range 10_000 {
		mustSeen(t, d, "new"+strconv.Itoa(i), time.Minute)
	}
	if got := d.Len(); got != 10_000 {
		t.Errorf("after 10k keys expired and 10k new ones arrived, Len = %d, want 10000: expired keys stay in memory", got)
	}
}

func TestDedupForget(t *testing.T) {
	d := NewMemoryStore(0, nil)
	ctx := context.Background()
	mustSeen(t, d, "k", time.Minute)
	if err := d.Forget(ctx, "k"); err != nil {
		t.Fatalf("Forget: %v", err)
	}
	if mustSeen(t, d, "k", time.Minute) {
		t.Fatal("Seen after Forget = true, want false: a redelivery would be taken for a duplicate")
	}
	if !mustSeen(t, d, "k", time.Minute) {
		t.Fatal("Seen after Forget did not record the key again")
	}
	if err := d.Forget(ctx, "absent"); err != nil {
		t.Errorf("Forget of an absent key: %v, want nil", err)
	}
	if err := d.Forget(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if got := d.Len(); got != 0 {
		t.Errorf("Len after forgetting everything = %d, want 0", got)
	}
}

func TestDedupCapacityBound(t *testing.T) {
	clock := newFakeClock()
	d := NewMemoryStore(1000, clock.Now)
	for i := range 100_000 {
		mustSeen(t, d, strconv.Itoa(i), time.Hour)
		if i%997 == 0 {
			if got := d.Len(); got > 1000 {
				t.Fatalf("after %d keys, Len = %d, above the capacity 1000", i+1, got)
			}
		}
	}
	if got := d.Len(); got > 1000 || got < 900 {
		t.Errorf("after 100k keys with capacity 1000, Len = %d, want at most 1000 (and not far below)", got)
	}
	// The oldest keys made room; the newest are remembered.
	if mustSeen(t, d, "0", time.Hour) {
		t.Error("the first key is still remembered after 100k more")
	}
	for i := 99_990; i < 100_000; i++ {
		if !mustSeen(t, d, strconv.Itoa(i), time.Hour) {
			t.Errorf("key %d, among the last inserted, was evicted", i)
		}
	}

	// With mixed TTLs, the key expiring first goes first.
	small := NewMemoryStore(2, clock.Now)
	mustSeen(t, small, "long", time.Hour)
	mustSeen(t, small, "short", time.Minute)
	mustSeen(t, small, "third", time.Hour)
	if !mustSeen(t, small, "long", time.Hour) {
		t.Error("capacity 2: the key with the later expiry was evicted")
	}
	if got := small.Len(); got != 2 {
		t.Errorf("capacity 2: Len = %d", got)
	}
}

func TestKey(t *testing.T) {
	ev := &tandem.Event{ID: "42", Source: "/orders", Type: "order.created"}
	if got, want := Key(ev), "/orders\x0042"; got != want {
		t.Errorf("without an idempotency key: %q, want %q", got, want)
	}
	ev.IdempotencyKey = "order-42-v1"
	if got := Key(ev); got != "order-42-v1" {
		t.Errorf("with an idempotency key: %q, want it verbatim", got)
	}
	// The separator keeps distinct (source, id) pairs apart.
	a := Key(&tandem.Event{Source: "ab", ID: "c"})
	b := Key(&tandem.Event{Source: "a", ID: "bc"})
	if a == b {
		t.Errorf("(ab, c) and (a, bc) share the key %q", a)
	}
	// A redelivery (same source and id, later attempt) is the same event.
	if Key(&tandem.Event{Source: "s", ID: "1", Attempt: 3}) != Key(&tandem.Event{Source: "s", ID: "1"}) {
		t.Error("the attempt number changed the key")
	}
}

func TestDedupConcurrentSeenOnce(t *testing.T) {
	for _, capacity := range []int{0, 1000} {
		d := NewMemoryStore(capacity, nil)
		for round := range 20 {
			key := fmt.Sprintf("key-%d", round)
			var firsts atomic.Int32
			var start, wg sync.WaitGroup
			start.Add(1)
			for range 64 {
				wg.Go(func() {
					start.Wait()
					seen, err := d.Seen(context.Background(), key, time.Minute)
					if err != nil {
						t.Error(err)
					}
					if !seen {
						firsts.Add(1)
					}
				})
			}
			start.Done()
			wg.Wait()
			if got := firsts.Load(); got != 1 {
				t.Fatalf("capacity %d: 64 concurrent Seen(%q) returned false %d times, want exactly once", capacity, key, got)
			}
		}
	}
}

func TestDedupConcurrentMixed(t *testing.T) {
	clock := newFakeClock()
	d := NewMemoryStore(500, clock.Now)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			ctx := context.Background()
			for i := range 2000 {
				key := strconv.Itoa((g*7 + i) % 1500)
				if _, err := d.Seen(ctx, key, time.Duration(1+i%5)*time.Millisecond); err != nil {
					t.Error(err)
				}
				if i%3 == 0 {
					_ = d.Forget(ctx, key)
				}
				if i%100 == 0 {
					clock.Advance(time.Millisecond)
				}
				if n := d.Len(); n > 500 {
					t.Errorf("Len = %d above the capacity 500", n)
					return
				}
			}
		})
	}
	wg.Wait()
}

func ExampleMemoryStore() {
	dedup := NewMemoryStore(100_000, nil)
	ctx := context.Background()
	ev := &tandem.Event{ID: "42", Source: "/orders", Type: "order.created"}
	for range 2 {
		dup, _ := dedup.Seen(ctx, Key(ev), time.Hour)
		fmt.Println("duplicate:", dup)
	}
	// Output:
	// duplicate: false
	// duplicate: true
}
