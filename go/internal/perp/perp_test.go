package perp

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

type pair struct{ in, out Count }

func sum(c *Cells[pair]) (in, out int64) {
	return Balance(c, func(p *pair) *Count { return &p.in }, func(p *pair) *Count { return &p.out })
}

// Adds from goroutines on every P, and on Ps past the cells (GOMAXPROCS raised after
// start: the overflow cell), sum to the exact total.
func TestCountsSumExactly(t *testing.T) {
	for _, procs := range []int{runtime.GOMAXPROCS(0), size + 3} {
		prev := runtime.GOMAXPROCS(procs)
		c := Make[pair]()
		const goroutines, adds = 16, 20000
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for i := range adds {
					p := Pin()
					c.At(p).in.Add(1)
					Unpin(p)
					if i%7 == 0 {
						runtime.Gosched() // move between Ps
					}
					p = Pin()
					c.At(p).out.Add(2)
					Unpin(p)
				}
			})
		}
		wg.Wait()
		runtime.GOMAXPROCS(prev)
		if in, out := sum(&c); in != goroutines*adds || out != 2*goroutines*adds {
			t.Fatalf("GOMAXPROCS %d: in %d, out %d; want %d and %d", procs, in, out, goroutines*adds, 2*goroutines*adds)
		}
	}
}

// The store-buffer litmus test (Dekker's), with the two sides the engine gives each: a
// writer adds to a count (Add), fences lightly and reads a flag; the other sets the flag,
// fences (Fence) and reads the count. Both reading nothing of the other is what x86 lets
// happen without fences, and what the fences forbid.
func TestFenceForbidsBothMissing(t *testing.T) { bothMissing(t) }

func bothMissing(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs two Ps running at once")
	}
	const rounds = 20000
	counts := make([]Count, rounds)
	flags := make([]atomic.Int64, rounds)
	var start [rounds]atomic.Int32 // both sides arrived at round i
	sawFlag := make([]bool, rounds)
	sawCount := make([]bool, rounds)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range rounds {
			start[i].Add(1)
			for start[i].Load() < 2 {
			}
			p := Pin()
			counts[i].Add(1)
			LightFence()
			sawFlag[i] = flags[i].Load() != 0
			Unpin(p)
		}
	})
	wg.Go(func() {
		for i := range rounds {
			start[i].Add(1)
			for start[i].Load() < 2 {
			}
			flags[i].Store(1)
			Fence()
			sawCount[i] = counts[i].Load() != 0
		}
	})
	wg.Wait()
	for i := range rounds {
		if !sawFlag[i] && !sawCount[i] {
			t.Fatalf("round %d: the writer missed the flag and the fenced side missed the count", i)
		}
	}
}
