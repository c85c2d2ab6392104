package engine

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/perp"
)

// slotLayout is a layout of n request slots over Go memory, each a delivery header with no
// room for an envelope: the slots' own tests need no shared region.
func slotLayout(n uint32) *abi.Layout {
	region := make([]uint64, int(n)*int(abi.DeliverySize)/8)
	return &abi.Layout{ReqSlots: n, ReqStride: uint64(abi.DeliverySize), Base: unsafe.Pointer(unsafe.SliceData(region))}
}

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

// Submitters blocked on a full set of slots (the Block policy) each get one as others are
// freed: none waits beside a free slot, however frees and waits interleave; Reject and
// Shed refuse at once; a waiter leaves when its context ends or the runtime closes.
func TestSlotWaitersGetEveryFreedSlot(t *testing.T) {
	const n = 3
	var s slots
	s.init(&Engine{ledger: newLedger()}, slotLayout(n))

	var held atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				idx, err := s.acquire(context.Background(), Block, nil)
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				if held.Add(1) > n {
					t.Errorf("more than %d slots held at once", n)
				}
				runtime.Gosched()
				held.Add(-1)
				s.free(idx)
			}
		}()
	}
	wg.Wait()

	var taken []uint32
	for range n {
		idx, err := s.acquire(context.Background(), Reject, nil)
		if err != nil {
			t.Fatalf("a slot was lost: acquire %d of %d: %v", len(taken)+1, n, err)
		}
		taken = append(taken, idx)
	}
	if _, err := s.acquire(context.Background(), Reject, nil); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Reject with every slot taken: %v, want ErrOverloaded", err)
	}
	if _, err := s.acquire(context.Background(), Shed, nil); !errors.Is(err, ErrShed) {
		t.Fatalf("Shed with every slot taken: %v, want ErrShed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := s.acquire(ctx, Block, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Block until the context ends: %v, want DeadlineExceeded", err)
	}
	closing := make(chan struct{})
	close(closing)
	if _, err := s.acquire(context.Background(), Block, closing); !errors.Is(err, ErrClosed) {
		t.Fatalf("Block while closing: %v, want ErrClosed", err)
	}
	if w := s.waiters.Load(); w != 0 {
		t.Fatalf("%d waiters counted after every acquire returned", w)
	}
}

// A free slot is found wherever it waits: near another P, or on the stack. With each P's
// near slot taken by a slot and the rest on the stack, one goroutine takes every slot,
// each once, then is refused.
func TestEveryFreeSlotIsFoundNearAnyP(t *testing.T) {
	var s slots
	l := newLedger()
	n := uint32(l.Len() + 3)
	s.init(&Engine{ledger: l}, slotLayout(n))
	for i := range l.Len() {
		idx, ok := s.stack.pop()
		if !ok {
			t.Fatal("the stack ran out before every P had a near slot")
		}
		l.At(perp.P(i)).near.Store(idx + 1)
	}
	seen := make(map[uint32]bool)
	for range n {
		idx, ok := s.tryAcquire()
		if !ok {
			t.Fatalf("took %d of %d free slots, then found none", len(seen), n)
		}
		if seen[idx] {
			t.Fatalf("slot %d taken twice", idx)
		}
		seen[idx] = true
	}
	if idx, ok := s.tryAcquire(); ok {
		t.Fatalf("took slot %d with every slot taken", idx)
	}
	for idx := range seen {
		s.free(idx)
	}
	free := 0
	for i := range s.table {
		if s.table[i].owner.Load() == slotFree {
			free++
		}
	}
	if free != int(n) {
		t.Fatalf("%d slots free after freeing all %d", free, n)
	}
}

// A slot taken off the free lists holds no index of its envelope's fields, whatever its last
// event left there: an envelope copied into it as bytes is decoded by Rust, not read through
// the index of another.
func TestATakenSlotHoldsNoIndex(t *testing.T) {
	var s slots
	s.init(&Engine{ledger: newLedger()}, slotLayout(1))
	for round := range 3 {
		idx, ok := s.tryAcquire()
		if !ok {
			t.Fatalf("round %d: no slot free", round)
		}
		if f := s.fields(idx); f.Present != 0 {
			t.Fatalf("round %d: slot %d taken with an index (present %b)", round, idx, f.Present)
		}
		s.fields(idx).Present = 0b11111 // what the encoder leaves
		s.free(idx)
	}
}

// A P's ledger fits one cache line, so that an event that finds the caches cold (an idle
// round trip) misses once on it, and the cells stay line-aligned.
func TestALedgerFitsOneCacheLine(t *testing.T) {
	if n := unsafe.Sizeof(ledger{}); n > 64 {
		t.Fatalf("a ledger takes %d bytes, more than a cache line", n)
	}
}
