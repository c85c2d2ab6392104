// Package perp keeps counts per P, the Go scheduler's processor, so that counting costs no
// locked instruction.
//
// An atomic add is a locked instruction: some 5 ns on a small VM, more when the store buffer
// it drains is full, and a cache line every core writes in turn. A delivery makes a dozen
// counts; counted per P (and with a request slot kept near each P), 64 callers on 2 cores
// ran 23% more events per second (docs/benchmarks.md). A P's cell has one writer at a time:
// the goroutine that pins the P (Pin), which nothing preempts until it unpins. On Linux on
// amd64 the writer adds with a plain load and store, which x86 orders as a release; readers
// sum every cell with atomic loads. Elsewhere, and under the race detector, which cannot see
// the pinning, the add is atomic.
//
// A count whose reader waits for zero (a gate, a drain) is a store on one side and a load
// on the other, each side reading the word the other writes: the writer adds, then reads a
// flag; the waiter sets the flag, then sums. Without a fence between a store and a later
// load, x86 may let the load pass the store and each side miss the other. Fence puts one
// there on every thread of the process at once (Linux's membarrier), for the rare side (the
// waiter), so that the frequent side (LightFence) needs none; where membarrier is missing,
// LightFence is a real fence.
package perp

import (
	"runtime"
	"sync"
	"sync/atomic"
	_ "unsafe" // go:linkname
)

// size is the number of cells a P pins without a lock: the processors at start, or
// GOMAXPROCS then if larger. A P numbered past it (GOMAXPROCS raised later) shares the
// overflow cell, under overflowMu.
var size = max(runtime.NumCPU(), runtime.GOMAXPROCS(0), 1)

// overflowMu serialises the writers of every overflow cell.
var overflowMu sync.Mutex

// P is a pinned P's cell index, for At; Unpin takes it back.
type P int

// Pin pins the calling goroutine to its P (nothing else runs there until Unpin) and returns
// the index of its cells. A P past the cells gets the overflow cell, under a lock. Between
// Pin and Unpin the goroutine must not block: only adds and loads.
func Pin() P {
	if p := procPin(); p < size {
		return P(p)
	}
	return pinOverflow()
}

// pinOverflow is Pin past the cells: the overflow cell, under its lock.
func pinOverflow() P {
	procUnpin()
	overflowMu.Lock()
	return P(size)
}

// Hint is the index of the cells of the P running the caller, which may have moved on by
// the time it returns: for cells written with atomic operations, where a P's own is only
// the one least likely to be on another core's cache line.
func Hint() P {
	p := procPin()
	procUnpin()
	return P(min(p, size))
}

// Unpin ends what Pin began.
func Unpin(p P) {
	if int(p) < size {
		procUnpin()
		return
	}
	overflowMu.Unlock()
}

// Cells is one T per P, each apart from the others' cache lines, and one for the overflow.
// T's counts are written between Pin and Unpin with the P's index only.
type Cells[T any] struct {
	cells []cell[T]
}

type cell[T any] struct {
	v T
	_ [128]byte // the next cell's v starts two lines past this one's end: x86 fetches lines in pairs
}

// Make returns cells for every P.
func Make[T any]() Cells[T] { return Cells[T]{cells: make([]cell[T], size+1)} }

// At is p's cell.
func (c *Cells[T]) At(p P) *T { return &c.cells[p].v }

// Len is the number of cells, the overflow's included: P(0) to P(Len()-1) index them.
func (c *Cells[T]) Len() int { return len(c.cells) }

// Sum is the total of one count over every cell.
func Sum[T any](c *Cells[T], count func(*T) *Count) (n int64) {
	for i := range c.cells {
		n += count(&c.cells[i].v).Load()
	}
	return n
}

// Balance sums a pair of counts over every cell, things begun and things ended, for a reader
// that waits for them to balance: every cell's ends are read before any beginning, and a
// thing ends after it begins, so begun − ended is never below what it was at some moment of
// the reading, and zero only if it was.
func Balance[T any](c *Cells[T], begun, ended func(*T) *Count) (b, e int64) {
	e = Sum(c, ended)
	return Sum(c, begun), e
}

// Count is a count written by its cell's pinned P (Add) and read by anyone (Load).
type Count struct{ n int64 }

// Load reads the count.
func (c *Count) Load() int64 { return atomic.LoadInt64(&c.n) }

// procPin and procUnpin are the runtime's: it keeps their names and signatures for
// packages that link to them (go.dev/issue/67401).
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()
