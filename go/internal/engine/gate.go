package engine

import (
	"runtime"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname
)

// gate is intake's door. Every submitter is inside from its look at the state until its
// event is handed on; Shutdown closes the door after it closes intake, then waits for
// those inside to leave, whatever its deadline: a submitter may be handing its event to a
// Go handler's queue, which Shutdown closes later.
//
// A read lock did this, but its reader count was a word both cores wrote twice per event:
// with 64 goroutines calling on 2 cores, leaving it out (a test of the cost, unsafe as
// it is) gave 14% more events per second. Each P now counts its own submitters, on a
// line of its own. The P is only a hint: a submitter leaves the count it entered,
// wherever it runs by then. Entering counts in, then reads closed; closing sets closed,
// then reads every count. All four are sequentially consistent, so either the submitter
// sees the door closed, or Shutdown sees it inside and waits for it.
type gate struct {
	closed atomic.Bool
	counts []gateCount
}

// gateCount is one P's count of submitters inside, alone on its cache lines.
type gateCount struct {
	n atomic.Int64
	_ cacheLinePad
}

// init sizes the gate for the Ps there are; with more Ps later, some share a count.
func (g *gate) init() {
	g.counts = make([]gateCount, max(runtime.GOMAXPROCS(0), 1))
}

// enter counts a submitter in and returns its count, for leave; nil when the door is
// closed, counting nothing. A submitter that finds the door closed before it counts
// itself in writes nothing: submitters that retry at once cannot keep a count above zero
// for ever and starve close.
func (g *gate) enter() *atomic.Int64 {
	if g.closed.Load() {
		return nil
	}
	c := &g.counts[procHint()%len(g.counts)].n
	c.Add(1)
	if g.closed.Load() {
		c.Add(-1)
		return nil
	}
	return c
}

// leave counts a submitter out of the count enter gave it.
func (g *gate) leave(c *atomic.Int64) { c.Add(-1) }

// close shuts the door and returns once every submitter inside has left. A submitter
// stays inside for one submit's work, or until a wait it makes sees intake closed.
func (g *gate) close() {
	g.closed.Store(true)
	for i := range g.counts {
		for g.counts[i].n.Load() != 0 {
			time.Sleep(10 * time.Microsecond)
		}
	}
}

// procHint is the id of the P running the caller, which may have moved on by the time
// it returns.
func procHint() int {
	p := procPin()
	procUnpin()
	return p
}

// procPin and procUnpin are the runtime's: it keeps their names and signatures for
// packages that link to them (go.dev/issue/67401).
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()
