package perp

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

type pair struct{ in, out Count }

func sum(c *Cells[pair]) (in, out int64) {
	c.Each(func(p *pair) { out += p.out.Load() })
	c.Each(func(p *pair) { in += p.in.Load() })
	return in, out
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

// The gate the engine builds on the counts: a writer counts itself in, fences lightly and
// reads the flag; the closer sets the flag, fences, and waits for the counts to balance.
// No writer is inside once the closer has seen them balance.
func TestFenceClosesTheDoor(t *testing.T) { closeTheDoor(t) }

func closeTheDoor(t *testing.T) {
	for round := range 200 {
		c := Make[pair]()
		var closed, over atomic.Bool
		var late, entries atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					if closed.Load() {
						return
					}
					p := Pin()
					cl := c.At(p)
					cl.in.Add(1)
					LightFence()
					shut := closed.Load()
					if shut {
						cl.in.Add(-1)
					}
					Unpin(p)
					if shut {
						return
					}
					if over.Load() {
						late.Add(1) // inside after the closer saw nobody
					}
					entries.Add(1)
					p = Pin()
					c.At(p).out.Add(1)
					Unpin(p)
					runtime.Gosched() // let the closer in between any two
				}
			})
		}
		for entries.Load() < 100 { // close on writers in full flow
			runtime.Gosched()
		}
		closed.Store(true)
		Fence()
		for {
			if in, out := sum(&c); in == out {
				break
			}
			runtime.Gosched()
		}
		over.Store(true)
		wg.Wait()
		if n := late.Load(); n != 0 {
			t.Fatalf("round %d: %d writers were inside after the counts balanced", round, n)
		}
	}
}

func BenchmarkPinnedAdd(b *testing.B) {
	c := Make[pair]()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p := Pin()
			c.At(p).in.Add(1)
			Unpin(p)
		}
	})
}

func BenchmarkAtomicAdd(b *testing.B) {
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Add(1)
		}
	})
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
