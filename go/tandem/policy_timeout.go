package tandem

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errHandlerTimeout is the cause of a Timeout middleware's context, which tells its
// deadline from the parent's.
var errHandlerTimeout = errors.New("tandem: handler timeout")

// Timeout returns middleware that gives a Go handler d to handle an event: next runs with
// a context done after d (or sooner, if the parent's is). d of zero or less adds no
// timeout. It is middleware only: for a route to a Rust handler the router sets the
// envelope's deadline instead, and Rust cancels the handler's task when it passes.
//
// next runs in the calling goroutine, and the timeout is cooperative: a handler that
// ignores its context runs to the end and cannot be pre-empted. In exchange nothing is
// left behind: no goroutine outlives the call, and the handler never races its own result.
//
// If the timeout passes and the handler fails with the context's error (Retry or Term
// whose error matches context.DeadlineExceeded), the result becomes Retry(0, error code
// "timeout"): a slow attempt is retryable. A handler that returns Ack after the timeout
// keeps its Ack, since the work was done. Other results, and failures caused by the parent
// context, pass through unchanged.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		if d <= 0 {
			return next
		}
		return HandlerFunc(func(ctx context.Context, ev *Event) Result {
			ctx, cancel := context.WithTimeoutCause(ctx, d, errHandlerTimeout)
			defer cancel()
			res := next.Handle(ctx, ev)
			// An Ack has no error, so a late Ack stays an Ack.
			if !errors.Is(res.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), errHandlerTimeout) {
				return res
			}
			return Retry(0, &timeoutError{
				coded: &CodedError{Code: codeTimeout, Message: fmt.Sprintf("handler exceeded its %v timeout", d)},
				cause: res.Err(),
			})
		})
	}
}

// timeoutError is a Timeout middleware's failure: errors.As finds a *CodedError with code
// "timeout", and errors.Is matches the handler's own error (context.DeadlineExceeded).
type timeoutError struct {
	coded *CodedError
	cause error
}

func (e *timeoutError) Error() string { return "tandem: " + e.coded.Message + ": " + e.cause.Error() }

func (e *timeoutError) Unwrap() []error { return []error{e.coded, e.cause} }
