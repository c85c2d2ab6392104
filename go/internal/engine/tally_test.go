package engine

import (
	"sync"
	"testing"
)

func TestTallyCountsInAndOut(t *testing.T) {
	var tl tally
	for i := range 6 {
		if n := tl.in(); n != uint64(i+1) {
			t.Fatalf("in number %d returned %d counted in", i+1, n)
		}
	}
	if left := tl.out(); left != 5 {
		t.Fatalf("out left %d pending, want 5", left)
	}
	tl.undo() // one of the six refused after all: never submitted
	tl.settledAtOnce()
	sub, done, pending := tl.read()
	if sub != 6 || done != 2 || pending != 4 || tl.pending() != 4 {
		t.Fatalf("read = submitted %d, completed %d, pending %d (pending() %d); want 6, 2, 4", sub, done, pending, tl.pending())
	}
	if n := tl.in(); n != 7 {
		t.Fatalf("in after an undo and an event settled at once returned %d counted in, want 7", n)
	}
}

// A tally about to fold stays exact through the fold, with adds racing it.
func TestTallyFoldsWithoutLosingACount(t *testing.T) {
	var tl tally
	const start = foldAt - 100
	tl.word.Store(uint64(start) << 32) // start completed, none pending
	const goroutines, each = 4, 1000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				tl.in()
				tl.out()
			}
		})
	}
	wg.Wait()
	sub, done, pending := tl.read()
	want := uint64(start + goroutines*each)
	if done != want || sub != want || pending != 0 {
		t.Fatalf("read = submitted %d, completed %d, pending %d; want %d, %d, 0", sub, done, pending, want, want)
	}
	if tl.done != foldAt || tl.word.Load()>>32 >= foldAt {
		t.Fatalf("folded %d, word's high half %d: want one fold of %d", tl.done, tl.word.Load()>>32, uint64(foldAt))
	}
}

// Both halves of a pair fold on their own, exactly.
func TestPairFoldsEachHalf(t *testing.T) {
	var p pair
	p.word.Store(uint64(foldAt-10)<<32 | uint64(foldAt-1000))
	const goroutines, each = 4, 500
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				p.add(1, 3)
			}
		})
	}
	wg.Wait()
	a, b := p.read()
	if wantA, wantB := uint64(foldAt-10+goroutines*each), uint64(foldAt-1000+3*goroutines*each); a != wantA || b != wantB {
		t.Fatalf("read = %d, %d; want %d, %d", a, b, wantA, wantB)
	}
	if p.hi != foldAt || p.lo != foldAt {
		t.Fatalf("folded %d and %d, want %d each", p.hi, p.lo, uint64(foldAt))
	}
}

// A runtime's crossings count in the process's FFI calls while it runs and after it is
// freed; retiring it twice counts them once. (No test of this package runs beside it.)
func TestFFICallsKeepAFreedRuntimesCrossings(t *testing.T) {
	p := new(pair)
	before := ffiCalls()
	countKicks(p)
	p.add(5, 2)
	if got := ffiCalls() - before; got != 5 {
		t.Fatalf("a live runtime's 5 crossings: FFI calls grew by %d", got)
	}
	retireKicks(p)
	retireKicks(p)
	failedCrossing()
	after := ffiCalls()
	if got := after - before; got != 6 {
		t.Fatalf("5 retired crossings and a failed kick: FFI calls grew by %d", got)
	}
	kicks.mu.Lock()
	_, live := kicks.live[p]
	kicks.mu.Unlock()
	if live {
		t.Fatal("a retired runtime's crossings are still read as live")
	}
}
