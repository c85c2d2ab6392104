package engine

import (
	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/perp"
)

// Stats is a snapshot of both sides' counters; the façade documents each field.
type Stats struct {
	Submitted, Completed, Cancelled, Retried, HandedBack, Emitted, ToRust, DeadLettered uint64
	InFlight                                                                            int64
	FreeRequestSlots, RepliesHeld, GoWorkers                                            int
	Violations, RustWakeups, GoParks, FFICalls                                          uint64
	Crossings, CompletionsByCaller, Rescues                                             uint64
	// Shadow sums every route's shadow counters (shadow.go), samples aside.
	Shadow ShadowCounts
	Rust   abi.Stats
}

// Stats reads the counters. After Shutdown the Rust counters are final.
func (e *Engine) Stats() Stats {
	o := &e.obs
	submitted, completed, pending := e.events.read()
	crossings, byCaller := o.crossings.read()
	s := Stats{
		Submitted:           submitted,
		Completed:           completed,
		Cancelled:           o.cancels.Load(),
		Retried:             o.retries.Load(),
		HandedBack:          o.handBacks.Load(),
		Emitted:             o.emitted.Load(),
		DeadLettered:        o.deadLetters.Load(),
		InFlight:            pending,
		Violations:          o.violations.Load(),
		RustWakeups:         o.rustWakeups.Load(),
		GoParks:             o.goParks.Load(),
		FFICalls:            ffiCalls(),
		Crossings:           crossings,
		CompletionsByCaller: byCaller,
		Rescues:             o.rescues.Load(),
	}
	for i := range e.replies {
		if e.replies[i].Load() == 1 {
			s.RepliesHeld++
		}
	}
	for _, t := range e.Targets() {
		if !t.rust {
			s.GoWorkers += t.workers()
		}
	}
	for _, rt := range e.router.all {
		st := &rt.shadows
		s.Shadow.Offered += st.offered.Load()
		s.Shadow.Matched += st.matched.Load()
		s.Shadow.Mismatched += st.mismatched.Load()
		s.Shadow.Dropped += st.dropped.Load()
	}
	for i := range e.slots.table {
		sl := &e.slots.table[i]
		if sl.owner.Load() == slotFree {
			s.FreeRequestSlots++
		}
	}
	s.ToRust = uint64(perp.Sum(e.ledger, func(c *ledger) *perp.Count { return &c.toRust }))
	e.lifeMu.RLock()
	st := e.final
	if !e.freed.Load() {
		st, _ = abi.ReadStats(e.h)
	}
	e.lifeMu.RUnlock()
	s.Rust = st
	return s
}

// PollersParked reports whether each poller has raised its ring's parked flag: Go's
// completion poller and the Rust submission poller. Tests wait on it instead of sleeping past
// the spin windows. Safe for concurrent use while running; the answer may change at once.
func (e *Engine) PollersParked() (goParked, rustParked bool) {
	return e.cq.Parked(), e.sq.Parked()
}
