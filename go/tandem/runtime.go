package tandem

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/engine"
)

// Runtime is a tandem runtime: a Rust tokio runtime in this process, the shared rings to it,
// and the Go side that routes events to handlers in either runtime and settles their
// acknowledgements.
//
// All methods are safe for concurrent use by many goroutines.
type Runtime struct {
	e          *engine.Engine
	cfg        Config // with its defaults filled in
	log        *zap.Logger
	middleware []Middleware

	mu sync.Mutex
	// handlers are the Go handlers as registered, for Start's Init and WarmUp; goHandlers
	// the same by name, for the routes that wrap them.
	handlers   []*goHandler
	goHandlers map[string]*goHandler
}

// New creates a runtime with cfg: it checks the library's ABI version, maps the shared region
// and learns which event types the Rust library handles. No thread starts until Start.
func New(cfg Config) (*Runtime, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e, err := engine.New(cfg.engine())
	if err != nil {
		return nil, publicError(err)
	}
	r := &Runtime{e: e, cfg: cfg, log: cfg.Logger}
	for _, rt := range e.Routes() {
		// A Rust type's own route: moved to a Go handler, the handler runs inside the global
		// middleware as it is at the move (Use is called before Start).
		rt.Bind = func(t *engine.Target, shadow bool) engine.GoHandler {
			r.mu.Lock()
			mw := append([]Middleware(nil), r.middleware...)
			r.mu.Unlock()
			chained := Chain(r.goHandler(t.Name), mw...)
			name := t.Name
			return func(ctx context.Context, ev *Event) engine.Result { return chained.Handle(ctx, ev).engine(name) }
		}
	}
	return r, nil
}

// State returns the lifecycle state.
func (r *Runtime) State() State { return State(r.e.State()) }

// RustTypes returns the event types routed to Rust handlers by exact routes: those whose
// every target is a Rust handler now (a route moved to Go leaves the list).
func (r *Runtime) RustTypes() []string {
	var out []string
	for _, rt := range r.e.Routes() {
		if !rt.Exact() {
			continue
		}
		ws, _ := rt.Targets()
		rust := len(ws) > 0
		for _, w := range ws {
			rust = rust && w.Target.IsRust()
		}
		if rust {
			out = append(out, rt.Pattern)
		}
	}
	return out
}

// Stats is a snapshot of both sides' counters.
type Stats struct {
	// Submitted counts events accepted: by Submit, Call and Emit, and events Rust handlers
	// emitted that Go routed.
	Submitted uint64
	// Completed counts events whose outcome is final (acknowledged, failed or dead-lettered).
	Completed uint64
	// Cancelled counts events Shutdown settled without an outcome of their own, each once:
	// cut short in a handler of either runtime, queued, or waiting for a retry (settled as
	// retryable with code "cancelled", or "abandoned" for a Rust handler that did not stop),
	// or dead-lettered as cancelled when nobody waited for them.
	Cancelled uint64
	// Emitted counts events Rust handlers emitted to Go.
	Emitted uint64
	// Retried counts redeliveries scheduled.
	Retried uint64
	// HandedBack counts retries handed back to the source that redelivers its events
	// itself (SubmitFrom): each ends the delivery here, and the source delivers it again.
	HandedBack uint64
	// ToRust counts deliveries published to Rust (first deliveries and redeliveries).
	ToRust uint64
	// DeadLettered counts events dead-lettered.
	DeadLettered uint64
	// InFlight is the number of events accepted and not yet final.
	InFlight int64
	// FreeRequestSlots is the number of request slots not in use.
	FreeRequestSlots int
	// RepliesHeld is the number of reply slots Go holds (unreleased Replies).
	RepliesHeld int
	// Violations counts ownership protocol violations seen by Go; 0 in a correct program.
	Violations uint64
	// RustWakeups counts eventfd writes that woke the parked Rust poller.
	RustWakeups uint64
	// GoParks counts times the Go completion poller parked.
	GoParks uint64
	// FFICalls counts calls into the Rust library this process has made (every runtime's):
	// a handful per runtime, plus one per Crossing.
	FFICalls uint64
	// Crossings counts submissions that found the Rust poller parked (or another crossing in
	// progress) and ran Rust's side on the submitter's thread, one call into the library,
	// instead of waking it: Rust.Runs of them ran the Call's own event past the rings, the
	// rest drained the submission ring. With the poller awake events cross through the rings
	// with no call.
	Crossings uint64
	// CompletionsByCaller counts completions a submitter settled itself, because they
	// arrived during its crossing while the Go poller was parked, or came back with its run:
	// no wake for either poller.
	CompletionsByCaller uint64
	// Rescues counts times the parked Go poller, looking at the completion ring after a
	// while without a wake, found completions there: a lost wake-up, bounded to a
	// second (or, rarely, a producer caught between its push and its wake). Rust.Rescues is
	// the other side's.
	Rescues uint64
	// GoWorkers is the number of worker goroutines across the Go handlers' pools.
	GoWorkers int
	// Shadow counts the shadows' copies of every route (RouteInfo.Shadowed for one), which
	// none of the counters above include: each copy offered ends matched, mismatched or
	// dropped. A Rust shadow's run counts in ToRust.
	Shadow ShadowStats
	// Rust holds the Rust side's counters (final ones after Shutdown).
	Rust RustStats
}

// RustStats are the Rust side's counters (tandem_stats in ffi/tandem.h).
type RustStats struct {
	// Received counts events Rust took from Go: from the submission ring, or run on their
	// caller's thread (Runs).
	Received uint64
	// Completed counts events Rust completed: request slots handed back with their outcome.
	Completed uint64
	// RequestsHeld is the number of request slots Rust holds now.
	RequestsHeld uint64
	// RepliesLent is the number of reply slots lent to Go now.
	RepliesLent uint64
	// Releases counts reply slots Go gave back.
	Releases uint64
	// Violations counts ownership protocol violations seen by Rust; 0 in a correct program.
	Violations uint64
	// Parks counts times the Rust poller parked.
	Parks uint64
	// GoWakeups counts eventfd writes that woke the parked Go poller.
	GoWakeups uint64
	// Panics counts handler panics caught.
	Panics uint64
	// Emitted counts events Rust handlers emitted to Go.
	Emitted uint64
	// LocalDispatched counts emitted events routed to a Rust handler inside Rust.
	LocalDispatched uint64
	// LocalAcked counts those acknowledged in Rust.
	LocalAcked uint64
	// LocalForwarded counts those that failed and came to Go for retry or dead-lettering.
	LocalForwarded uint64
	// SQDepth is the submission ring's occupancy.
	SQDepth uint64
	// CQDepth is the completion ring's occupancy.
	CQDepth uint64
	// Handovers counts crossings that woke the Rust poller to take over, because events came
	// faster than its spin window or in a burst: from then on they go through the ring with
	// no call into the library.
	Handovers uint64
	// TaskWakes counts handlers a crossing moved into a task because they waited before
	// finishing: each wakes a tokio worker if none is awake. With RustWakeups and
	// Rust.GoWakeups, it is every thread wake an event can cost.
	TaskWakes uint64
	// Rescues counts times the parked Rust poller, looking at its ring after a while without
	// a wake, found an event there: a lost wake-up, bounded to a second (or, rarely,
	// a producer caught between its push and its wake).
	Rescues uint64
	// Calls counts calls of Rust handlers (cx.call) that crossed to Go.
	Calls uint64
	// CallsPending is the number of those waiting for their outcome now; 0 after Shutdown.
	CallsPending uint64
	// CallRepliesHeld is the number of call replies Rust handlers hold now, each a reply
	// slot until the handler drops it; 0 after Shutdown.
	CallRepliesHeld uint64
	// Runs counts events run on their caller's thread past the submission ring: a Call whose
	// event found the Rust poller parked (or another crossing in progress) runs it with one
	// call into the library, and settles it from that call's return when the handler finished
	// there, as a direct call would. Its completion then crosses no ring either.
	Runs uint64
}

// Stats returns a snapshot of the counters. After Shutdown the Rust counters are final:
// RequestsHeld and RepliesLent are then 0 when every buffer came back.
func (r *Runtime) Stats() Stats {
	s := r.e.Stats()
	return Stats{
		Submitted:           s.Submitted,
		Completed:           s.Completed,
		Cancelled:           s.Cancelled,
		Emitted:             s.Emitted,
		Retried:             s.Retried,
		HandedBack:          s.HandedBack,
		ToRust:              s.ToRust,
		DeadLettered:        s.DeadLettered,
		InFlight:            s.InFlight,
		FreeRequestSlots:    s.FreeRequestSlots,
		RepliesHeld:         s.RepliesHeld,
		Violations:          s.Violations,
		RustWakeups:         s.RustWakeups,
		GoParks:             s.GoParks,
		FFICalls:            s.FFICalls,
		Crossings:           s.Crossings,
		CompletionsByCaller: s.CompletionsByCaller,
		Rescues:             s.Rescues,
		GoWorkers:           s.GoWorkers,
		Shadow: ShadowStats{Offered: s.Shadow.Offered, Matched: s.Shadow.Matched,
			Mismatched: s.Shadow.Mismatched, Dropped: s.Shadow.Dropped},
		Rust: RustStats(s.Rust),
	}
}
