package chaos

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Tally is what became of a run's events, as the harness saw them and as the runtimes and
// the sink counted them: the input of Check. It is a plain value.
type Tally struct {
	// Offered is the number of events the harness tried to submit (Submit or Call).
	Offered uint64
	// Acked: acknowledged (Receipt.Wait or Call returned nil).
	Acked uint64
	// DeadLettered: the answer was a dead letter (a *tandem.HandlerError with DeadLetter
	// set, or tandem.ErrShed), plus abandoned Calls whose event the sink received.
	DeadLettered uint64
	// Rejected: refused at submit (not running, overloaded, a policy's refusal, the
	// caller's context while waiting for room): never accepted.
	Rejected uint64
	// Cancelled: settled by Shutdown as retryable ("cancelled" or "abandoned").
	Cancelled uint64
	// Abandoned: Calls whose caller stopped waiting (tandem.ErrAbandoned: its context ended
	// after the event was accepted), and whose event the sink did not receive: acknowledged
	// or cancelled at shutdown, which only the runtime knows.
	Abandoned uint64
	// Unsettled: receipts and Calls with no answer after the last Shutdown and a grace.
	Unsettled uint64
	// SettledTwice: receipts whose answer changed after they settled.
	SettledTwice uint64
	// Misdelivered: Calls answered with another event's reply (Traffic.ReplyIsData).
	Misdelivered uint64
	// Unclear: answers that are none of the documented ones; UnclearExample is one of them.
	Unclear        uint64
	UnclearExample string
	// MissingDeadLetters: events answered as dead-lettered that the sink never received.
	MissingDeadLetters uint64

	// Runtime sums the Stats of every runtime of the run, each read after its Shutdown.
	Runtime RuntimeCounts
	// Sink is what the dead-letter sink was given; SinkFailuresLogged is how many failed
	// writes the runtime logged (with the record, which is then only in the log).
	Sink               SinkCounts
	SinkFailuresLogged uint64
	// FollowUps: the scenario's handlers submit events of their own (Scenario.FollowUps).
	FollowUps bool

	// Kinds breaks the harness's counts down by Traffic kind, in the scenario's order, to
	// show which faults a run exercised. Check does not read it.
	Kinds []KindTally

	// GoroutinesBefore and GoroutinesAfter are the process's goroutines before the first
	// runtime and after the last Shutdown (the harness's own finished, after a grace).
	GoroutinesBefore, GoroutinesAfter int
}

// KindTally is what became of the events of one Traffic kind, and the p99 latency of their
// answers from their due times. A plain value.
type KindTally struct {
	Name                                                         string
	Offered, Acked, DeadLettered, Rejected, Cancelled, Abandoned uint64
	P99                                                          time.Duration
}

// RuntimeCounts are the tandem.Stats fields the invariants read, summed over runtimes. A
// plain value.
type RuntimeCounts struct {
	Submitted, DeadLettered, Cancelled, Retried uint64
	// Outstanding buffers and events after Shutdown: all 0 when nothing leaked.
	RequestsHeld, RepliesLent, RepliesHeld uint64
	InFlight                               int64
	// Violations (Go) and RustViolations: ownership protocol violations.
	Violations, RustViolations uint64
}

// Invariant is one check of a run: its name, whether it holds, and the numbers behind it.
// A plain value.
type Invariant struct {
	Name   string
	Holds  bool
	Detail string
}

// The invariants' names, as Check reports them.
const (
	InvAccounted   = "every event accounted for"
	InvRuntime     = "the runtime counted the same events"
	InvSettled     = "every receipt settled exactly once"
	InvClear       = "every answer is a documented one"
	InvBuffers     = "no buffer or event outstanding after Shutdown"
	InvGoroutines  = "no goroutine leaked"
	InvOwnership   = "no ownership violation"
	InvDeadLetters = "every dead letter reached the sink"
	InvCancelled   = "the runtime counted the same cancellations"
)

// Check evaluates every invariant over t, in a fixed order. Safe for concurrent use.
func Check(t Tally) []Invariant {
	var out []Invariant
	add := func(name string, holds bool, format string, a ...any) {
		out = append(out, Invariant{Name: name, Holds: holds, Detail: fmt.Sprintf(format, a...)})
	}
	// Relations that are equalities when the harness offered every event the runtime saw,
	// lower bounds when handlers add follow-ups.
	agree := func(runtime, harness uint64) bool {
		if t.FollowUps {
			return runtime >= harness
		}
		return runtime == harness
	}
	rel := "="
	if t.FollowUps {
		rel = "≥"
	}

	sum := t.Acked + t.DeadLettered + t.Rejected + t.Cancelled + t.Abandoned
	add(InvAccounted, t.Offered == sum,
		"submitted %d = acknowledged %d + dead-lettered %d + rejected at submit %d + cancelled at shutdown %d + abandoned by the caller %d (= %d)",
		t.Offered, t.Acked, t.DeadLettered, t.Rejected, t.Cancelled, t.Abandoned, sum)

	accepted := t.Offered - min(t.Rejected, t.Offered)
	add(InvRuntime, agree(t.Runtime.Submitted, accepted),
		"Stats.Submitted %d %s submitted %d − rejected %d", t.Runtime.Submitted, rel, t.Offered, t.Rejected)

	add(InvSettled, t.Unsettled == 0 && t.SettledTwice == 0 && t.Misdelivered == 0,
		"%d without an answer after Shutdown, %d answered twice, %d answered with another event's reply",
		t.Unsettled, t.SettledTwice, t.Misdelivered)

	answers := fmt.Sprintf("%d undocumented answers", t.Unclear)
	if t.UnclearExample != "" {
		answers += ", e.g. " + t.UnclearExample
	}
	add(InvClear, t.Unclear == 0, "%s", answers)

	r := t.Runtime
	add(InvBuffers, r.RequestsHeld == 0 && r.RepliesLent == 0 && r.RepliesHeld == 0 && r.InFlight == 0,
		"Rust.RequestsHeld %d, Rust.RepliesLent %d, RepliesHeld %d, InFlight %d", r.RequestsHeld, r.RepliesLent, r.RepliesHeld, r.InFlight)

	add(InvGoroutines, t.GoroutinesAfter <= t.GoroutinesBefore,
		"%d goroutines before the first runtime, %d after the last Shutdown", t.GoroutinesBefore, t.GoroutinesAfter)

	add(InvOwnership, r.Violations == 0 && r.RustViolations == 0,
		"Stats.Violations %d, Rust.Violations %d", r.Violations, r.RustViolations)

	s := t.Sink
	add(InvDeadLetters, agree(s.Writes, t.DeadLettered) && s.Writes == r.DeadLettered &&
		s.Stored+s.Failed == s.Writes && t.SinkFailuresLogged == s.Failed && t.MissingDeadLetters == 0,
		"sink received %d %s harness %d, Stats.DeadLettered %d; stored %d + failed %d (each logged: %d); %d answered as dead letters but not received",
		s.Writes, rel, t.DeadLettered, r.DeadLettered, s.Stored, s.Failed, t.SinkFailuresLogged, t.MissingDeadLetters)

	// Stats.Cancelled also counts dead letters with the reason "cancelled"; the harness
	// cannot tell which abandoned Calls were cancelled.
	cancelled := r.Cancelled - min(s.Cancelled, r.Cancelled)
	cancelHolds := cancelled >= t.Cancelled && (t.FollowUps || cancelled <= t.Cancelled+t.Abandoned)
	add(InvCancelled, cancelHolds,
		"Stats.Cancelled %d − cancelled dead letters %d within harness %d .. %d (+ abandoned)",
		r.Cancelled, s.Cancelled, t.Cancelled, t.Cancelled+t.Abandoned)
	return out
}

// Broken returns the invariants of invs that do not hold, as an error naming each (nil when
// all hold).
func Broken(invs []Invariant) error {
	var errs []error
	for _, inv := range invs {
		if !inv.Holds {
			errs = append(errs, fmt.Errorf("invariant broken: %s: %s", inv.Name, inv.Detail))
		}
	}
	return errors.Join(errs...)
}

// Table formats invs as a plain-text table, one invariant a line.
func Table(invs []Invariant) string {
	var b strings.Builder
	width := 0
	for _, inv := range invs {
		width = max(width, len(inv.Name))
	}
	for _, inv := range invs {
		mark := "ok    "
		if !inv.Holds {
			mark = "BROKEN"
		}
		fmt.Fprintf(&b, "%s  %-*s  %s\n", mark, width, inv.Name, inv.Detail)
	}
	return b.String()
}
