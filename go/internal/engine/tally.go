package engine

import "github.com/tandemrt/tandem/go/internal/perp"

// The counts every event makes are in each P's ledger (ledger.go).

// tally counts events in (accepted) and out (final). Pending is the difference; Shutdown's
// drain waits for it to reach zero (settled, engine.go). Safe for concurrent use.
type tally struct {
	counts *perp.Cells[ledger] // in, out
}

func (t *tally) init(l *perp.Cells[ledger]) { t.counts = l }

// in counts an event in: pending. It returns how many this P has counted in, for a task due
// every so many events.
func (t *tally) in() int64 {
	p := perp.Pin()
	c := &t.counts.At(p).in
	c.Add(1)
	n := c.Load()
	perp.Unpin(p)
	return n
}

// undo takes back an in for an event refused after all (it was never submitted).
func (t *tally) undo() {
	p := perp.Pin()
	t.counts.At(p).in.Add(-1)
	perp.Unpin(p)
}

// out counts an event out: no longer pending, completed.
func (t *tally) out() {
	p := perp.Pin()
	t.counts.At(p).out.Add(1)
	perp.Unpin(p)
}

// settledAtOnce counts an event that was completed at its intake (never pending).
func (t *tally) settledAtOnce() {
	p := perp.Pin()
	c := t.counts.At(p)
	c.in.Add(1)
	c.out.Add(1)
	perp.Unpin(p)
}

// read returns the events submitted and completed so far, and those pending (perp.Balance:
// zero only if it was).
func (t *tally) read() (submitted, completed uint64, pending int64) {
	in, out := perp.Balance(t.counts,
		func(c *ledger) *perp.Count { return &c.in }, func(c *ledger) *perp.Count { return &c.out })
	return uint64(in), uint64(out), in - out
}

// pending is the events accepted and not yet final (read).
func (t *tally) pending() int64 {
	_, _, n := t.read()
	return n
}

// pair is two counters bumped together, one pin for both: crossings, and the completions
// they settled. Safe for concurrent use.
type pair struct {
	counts *perp.Cells[ledger] // crossings, byCaller
}

func (p *pair) init(l *perp.Cells[ledger]) { p.counts = l }

// add adds a to the first counter and b to the second.
func (p *pair) add(a, b uint32) {
	pp := perp.Pin()
	c := p.counts.At(pp)
	c.crossings.Add(int64(a))
	c.byCaller.Add(int64(b))
	perp.Unpin(pp)
}

// read returns both counters.
func (p *pair) read() (a, b uint64) {
	a = uint64(perp.Sum(p.counts, func(c *ledger) *perp.Count { return &c.crossings }))
	b = uint64(perp.Sum(p.counts, func(c *ledger) *perp.Count { return &c.byCaller }))
	return a, b
}
