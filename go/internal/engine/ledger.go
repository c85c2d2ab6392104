package engine

import (
	"sync/atomic"

	"github.com/tandemrt/tandem/go/internal/perp"
)

// ledger is one P's share of the engine's counts every event makes, and its near request
// slot: one cache line per P (package perp). Every event writes it at intake, crossing and
// settlement. Counted per P, they cost no locked instruction and no line another core
// writes; kept on one line, they cost an event that finds the caches cold (an idle round
// trip) one miss, where a line per count cost one each.
type ledger struct {
	gateIn, gateOut     perp.Count    // submitters entering and leaving intake (gate.go)
	in, out             perp.Count    // events accepted, and final (tally.go)
	crossings, byCaller perp.Count    // crossings, and the completions they settled (crossing.go)
	toRust              perp.Count    // events published to Rust (Stats.ToRust)
	near                atomic.Uint32 // a free request slot's index + 1; 0: none (slots.go)
	route               atomic.Uint32 // the router's index + 1 of the exact route this P matched last (intake.go)
}

// initCounts readies the engine's ledger and what counts in it.
func (e *Engine) initCounts() {
	e.ledger = newLedger()
	e.gate.init(e.ledger)
	e.events.init(e.ledger)
	e.crossings.init(e.ledger)
}

// newLedger returns every P's ledger.
func newLedger() *perp.Cells[ledger] {
	l := perp.Make[ledger]()
	return &l
}
