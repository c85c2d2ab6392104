package engine

import (
	"sync"
	"sync/atomic"
	"testing"
)

// The free list hands out the slot freed last first, and under concurrent pushes and pops
// never loses or duplicates a slot.
func TestFreeStackIsLastInFirstOutAndLosesNothing(t *testing.T) {
	const n = 64
	f := freeStack{next: make([]atomic.Uint32, n)}
	for i := range uint32(n) {
		f.push(i)
	}
	if top, ok := f.pop(); !ok || top != n-1 {
		t.Fatalf("pop = %d, %v; want the last pushed, %d", top, ok, n-1)
	}
	f.push(n - 1)

	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10000 {
				if idx, ok := f.pop(); ok {
					f.push(idx)
				}
			}
		}()
	}
	wg.Wait()
	seen := make(map[uint32]bool)
	for {
		idx, ok := f.pop()
		if !ok {
			break
		}
		if seen[idx] {
			t.Fatalf("slot %d on the stack twice", idx)
		}
		seen[idx] = true
	}
	if len(seen) != n {
		t.Fatalf("%d slots left on the stack, want %d", len(seen), n)
	}
}
