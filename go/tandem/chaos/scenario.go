package chaos

import (
	"context"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

// Scenario is what a run exercises: the routes, registered on every Runtime the run starts
// (a restart starts a new one), and the traffic sent to them. Builtin is tandem's own; a
// user writes one for their routes. A Scenario is a plain value; Setup and the Event
// functions must be safe to call from the run's goroutines (Setup from one at a time,
// Event from the scheduler only).
type Scenario struct {
	// Name names the scenario in the report.
	Name string
	// Setup registers the scenario's routes on rt, before Start.
	Setup func(rt *tandem.Runtime) error
	// Traffic is the mix of events sent, each drawn by its Weight.
	Traffic []Traffic
	// FollowUps says that handlers emit or call events of their own (tandem.Emit,
	// tandem.Call), which the runtime counts beside those the harness submitted: the
	// runtime's counts are then checked as lower bounds instead of equalities.
	FollowUps bool
}

// Traffic is one kind of event in a scenario's mix.
type Traffic struct {
	// Name names it in the report.
	Name string
	// Weight is its share of the mix, relative to the other kinds' weights.
	Weight float64
	// Event builds one event. The harness sets ID (unique in the run), and Source and
	// SpecVersion when they are empty. rng is the run's, seeded by Options.Seed.
	Event func(rng *rand.Rand) tandem.Event
	// Call sends it with Runtime.Call (request/reply, the reply released at once) instead of
	// Runtime.Submit and a Receipt.
	Call bool
	// Cancel is the share (0..1) of these events whose caller's context ends after a
	// random delay up to CancelWithin: at Submit, or at Call before the event is accepted,
	// a route that blocks for room gives up (rejected at submit); at Call after it, the
	// caller stops waiting (tandem.ErrAbandoned: abandoned by the caller).
	Cancel       float64
	CancelWithin time.Duration
	// ReplyIsData says the handler replies with the event's data (an echo): the harness
	// then sets Data to the event's ID and checks that each Call is answered with its own
	// event's reply.
	ReplyIsData bool
	// Fault, when set, asks an Inject'ed Go handler to misbehave on every event of this kind.
	Fault Fault
}

// Fault is a misbehaviour Inject makes a Go handler show.
type Fault string

// The faults Inject knows.
const (
	// FaultNone: the handler runs as written.
	FaultNone Fault = ""
	// FaultPanic: the handler panics.
	FaultPanic Fault = "panic"
	// FaultGoexit: the handler calls runtime.Goexit.
	FaultGoexit Fault = "goexit"
	// FaultSlow: the handler ignores its context and returns twice its route's timeout
	// late (the delay is the fault extension's "slow" value, FaultDelay).
	FaultSlow Fault = "slow"
)

// FaultExtension is the event extension Inject reads: the Fault to show.
const FaultExtension = "chaosfault"

// FaultDelay is how long a FaultSlow handler sleeps past its context: long enough to be
// past any timeout the Builtin scenario sets, short enough to end before the run does.
const FaultDelay = 60 * time.Millisecond

// Inject is middleware for a Go route: an event whose FaultExtension extension names a
// Fault makes the handler panic, call runtime.Goexit or run late instead of handling it;
// other events reach the handler. The harness sets the extension from Traffic.Fault, so a
// user's own Go routes take faults by adding Inject (tandem.WithMiddleware(chaos.Inject)).
// Safe for concurrent use.
func Inject(next tandem.Handler) tandem.Handler {
	return tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		switch Fault(ev.Extensions[FaultExtension]) {
		case FaultPanic:
			panic("chaos: injected panic")
		case FaultGoexit:
			runtime.Goexit()
		case FaultSlow:
			// Ignores ctx on purpose: a handler that overstays its timeout.
			time.Sleep(FaultDelay)
		}
		return next.Handle(ctx, ev)
	})
}
