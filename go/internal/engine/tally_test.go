package engine

import (
	"runtime"
	"sync"
	"testing"
)

func TestTallyCountsInAndOut(t *testing.T) {
	var tl tally
	tl.init(newLedger())
	for range 6 {
		tl.in()
	}
	tl.out()
	tl.undo() // one of the six refused after all: never submitted
	tl.settledAtOnce()
	sub, done, pending := tl.read()
	if sub != 6 || done != 2 || pending != 4 || tl.pending() != 4 {
		t.Fatalf("read = submitted %d, completed %d, pending %d (pending() %d); want 6, 2, 4", sub, done, pending, tl.pending())
	}
}

// in returns how many its P has counted in (what the retry budget's deposits are due by),
// whatever the other Ps counted: on the one P there is, 1, 2, 3, 4.
func TestTallyInCountsThePsOwn(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var tl tally
	tl.init(newLedger())
	tl.counts.At(1).in.Add(100) // another P's events; P 0 is the only one running now
	for want := range int64(4) {
		if n := tl.in(); n != want+1 {
			t.Fatalf("in number %d on P 0 returned %d, want %d", want+1, n, want+1)
		}
	}
	if sub, _, _ := tl.read(); sub != 104 {
		t.Fatalf("submitted %d, want 104: every P's count", sub)
	}
}

// Goroutines on every P count events in and out while another reads: a reading never has
// fewer pending than were at some moment, nor below zero, and the end balances.
func TestTallyReadsNeverUnderCount(t *testing.T) {
	var tl tally
	tl.init(newLedger())
	const goroutines, each = 4, 20000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				tl.in()
				tl.out()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		if p := tl.pending(); p < 0 {
			t.Fatalf("pending read %d: an event counted out before it was counted in", p)
		}
		select {
		case <-done:
			if sub, out, p := tl.read(); sub != goroutines*each || out != sub || p != 0 {
				t.Fatalf("read = %d, %d, %d at the end; want %d, %d, 0", sub, out, p, goroutines*each, goroutines*each)
			}
			return
		default:
		}
	}
}

func TestPairAddsBoth(t *testing.T) {
	var p pair
	p.init(newLedger())
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
	if a, b := p.read(); a != goroutines*each || b != 3*goroutines*each {
		t.Fatalf("read = %d, %d; want %d, %d", a, b, goroutines*each, 3*goroutines*each)
	}
}

// A runtime's crossings count in the process's FFI calls while it runs and after it is
// freed; retiring it twice counts them once. (No test of this package runs beside it.)
func TestFFICallsKeepAFreedRuntimesCrossings(t *testing.T) {
	p := new(pair)
	p.init(newLedger())
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
