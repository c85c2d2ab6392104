package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

// errHandlerTimeout is the cause of a Timeout's context, which tells its deadline from the
// parent's.
var errHandlerTimeout = errors.New("tandem: handler timeout")

// Timeout is a policy that gives a Go handler a fixed time to handle an event, made by
// NewTimeout. It is safe for concurrent use and holds no state beyond its duration.
//
// It bounds Go handlers only. For a route to a Rust handler use the route option
// tandem.WithTimeout, which sets the envelope's deadline so that Rust cancels the handler's
// task when it passes: Admit cannot do that, since the event it is given is the submitter's
// own and a policy must not rewrite it, so Timeout admits every event of a Rust route and
// changes nothing about it.
type Timeout struct {
	d time.Duration
}

var _ tandem.Policy = (*Timeout)(nil)

// NewTimeout returns a policy that gives a Go handler d to handle an event: next runs with
// a context done after d (or sooner, if the parent's is). d of zero or less adds no
// timeout.
//
// next runs in the calling goroutine, and the timeout is cooperative: a handler that
// ignores its context runs to the end and cannot be pre-empted. In exchange nothing is
// left behind: no goroutine outlives the call, and the handler never races its own result.
//
// If the timeout passes and the handler fails with the context's error (Retry or Term
// whose error matches context.DeadlineExceeded), the result becomes Retry(0, error code
// "timeout"): a slow attempt is retryable, and a Breaker outside the Timeout counts it as
// a failure. A handler that returns Ack after the timeout keeps its Ack, since the work was
// done. Other results, and failures caused by the parent context, pass through unchanged.
func NewTimeout(d time.Duration) *Timeout { return &Timeout{d: d} }

// Wrap implements tandem.Policy: next runs with the timeout.
func (t *Timeout) Wrap(next tandem.Handler) tandem.Handler {
	d := t.d
	if d <= 0 {
		return next
	}
	return tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		ctx, cancel := context.WithTimeoutCause(ctx, d, errHandlerTimeout)
		defer cancel()
		res := next.Handle(ctx, ev)
		// An Ack has no error, so a late Ack stays an Ack.
		if !errors.Is(res.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), errHandlerTimeout) {
			return res
		}
		return tandem.Retry(0, &timeoutError{
			coded: &tandem.CodedError{Code: codeTimeout, Message: fmt.Sprintf("handler exceeded its %v timeout", d)},
			cause: res.Err(),
		})
	})
}

// Admit implements tandem.Policy: it admits every event and does nothing with its outcome
// (see Timeout for why; tandem.WithTimeout bounds a Rust handler).
func (t *Timeout) Admit(context.Context, *tandem.Event) (func(error), error) {
	return noopDone, nil
}

// timeoutError is a Timeout's failure: errors.As finds a *tandem.CodedError with code
// "timeout", and errors.Is matches the handler's own error (context.DeadlineExceeded).
type timeoutError struct {
	coded *tandem.CodedError
	cause error
}

func (e *timeoutError) Error() string { return "tandem: " + e.coded.Message + ": " + e.cause.Error() }

func (e *timeoutError) Unwrap() []error { return []error{e.coded, e.cause} }
