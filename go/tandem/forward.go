package tandem

import (
	"context"
	"errors"
)

// Forward returns a Go handler that runs each event it is given on runtime to: one delivery
// on to's route for the event's type (CallOnce), whose reply it returns as its own, and whose
// failure it returns unchanged (outcome, delay and error envelope, naming the handler and
// runtime that failed), so the retries, dead letters and policies stay with the runtime
// whose route uses it. When to cannot take the event (stopping, full, no route), the
// outcome is a retry.
//
// It moves routes to a second runtime without a restart. In the purego mode, a runtime made
// with another Config.Library runs the next version of the Rust handlers beside the first:
// register Forward(next) in the running one and Swap its routes to it; its own Rust
// handlers drain; move the submitters to next; then Shutdown the first (docs/guide.md,
// "Upgrading the Rust library without a restart"). Safe for concurrent use.
func Forward(to *Runtime) Handler {
	return HandlerFunc(func(ctx context.Context, ev *Event) Result {
		reply, err := to.CallOnce(ctx, ev)
		if err == nil {
			return AckReply(reply)
		}
		var he *HandlerError
		switch {
		case errors.As(err, &he) && he.Outcome == OutcomeTerm:
			return Term(he)
		case errors.As(err, &he):
			return Retry(he.RetryAfter, he)
		}
		return Retry(0, err)
	})
}
