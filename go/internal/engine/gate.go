package engine

import (
	"sync/atomic"
	"time"

	"github.com/tandemrt/tandem/go/internal/perp"
)

// gate is intake's door. Every submitter is inside from its look at the state until its
// event is handed on; Shutdown closes the door after it closes intake, then waits for
// those inside to leave, whatever its deadline: a submitter may be handing its event to a
// Go handler's queue, which Shutdown closes later.
//
// A read lock did this, but its reader count was a word both cores wrote twice per event:
// with 64 goroutines calling on 2 cores, leaving it out (a test of the cost, unsafe as
// it is) gave 14% more events per second. Each P counts the submitters that entered and
// left on it, in cells only it writes, without a locked instruction (package perp); a
// submitter may leave on another P than it entered on, so only the sums balance. Entering
// counts in, then reads closed; closing sets closed, then reads every count. A fence
// between each side's write and its read (perp.Fence on the closing side, once) means
// either the submitter sees the door closed, or Shutdown sees it inside and waits for it.
type gate struct {
	closed atomic.Bool
	counts *perp.Cells[ledger] // gateIn, gateOut
}

func (g *gate) init(l *perp.Cells[ledger]) { g.counts = l }

// enter counts a submitter in and reports whether it may go on; false when the door is
// closed, counting nothing. A submitter that finds the door closed before it counts itself
// in writes nothing: submitters that retry at once cannot keep a count above zero for ever
// and starve close.
func (g *gate) enter() bool {
	if g.closed.Load() {
		return false
	}
	p := perp.Pin()
	c := g.counts.At(p)
	c.gateIn.Add(1)
	perp.LightFence()
	shut := g.closed.Load()
	if shut {
		c.gateIn.Add(-1)
	}
	perp.Unpin(p)
	return !shut
}

// leave counts out a submitter enter let in, on whichever P it runs now.
func (g *gate) leave() {
	p := perp.Pin()
	g.counts.At(p).gateOut.Add(1)
	perp.Unpin(p)
}

// inside is the submitters inside (perp.Balance: zero only if it was).
func (g *gate) inside() int64 {
	in, out := perp.Balance(g.counts,
		func(c *ledger) *perp.Count { return &c.gateIn }, func(c *ledger) *perp.Count { return &c.gateOut })
	return in - out
}

// close shuts the door and returns once every submitter inside has left. A submitter
// stays inside for one submit's work, or until a wait it makes sees intake closed.
func (g *gate) close() {
	g.closed.Store(true)
	perp.Fence()
	for g.inside() != 0 {
		time.Sleep(10 * time.Microsecond)
	}
}
