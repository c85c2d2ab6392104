package tandem

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandemrt/tandem/go/internal/engine"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Handler handles events in Go. Implementations must be safe for concurrent use: a route
// runs its handler on several workers at once.
//
// A handler may also implement any of the lifecycle hooks Rust handlers have
// (docs/lifecycle.md): Init(ctx) error, to wire dependencies, and WarmUp(ctx) error, to prime
// caches and connections, which Start calls before any event; and Close() error, which
// Shutdown calls once, in the reverse order of Init, for each handler whose Init succeeded
// (a handler without Init counts as initialised). The hooks are called one at a time.
type Handler interface {
	// Handle returns the event's outcome. ctx is done when the event's deadline or the route's
	// timeout passes, or at shutdown past its grace; a handler should stop then: a result
	// returned past the deadline is a timeout, whatever it says.
	Handle(ctx context.Context, ev *Event) Result
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, ev *Event) Result

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, ev *Event) Result { return f(ctx, ev) }

// Middleware wraps a Handler: the policies of a route (timeouts, breakers, rate limits,
// deduplication, logging) are middleware, applied in order, the first outermost.
type Middleware func(Handler) Handler

// Chain applies middleware to h, the first outermost.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// Result is a handler's outcome: Ack (with an optional reply), Retry or Term. The zero
// Result is Ack with no reply. Build one with Ack, AckReply, Retry or Term.
type Result struct {
	outcome Outcome
	after   time.Duration
	err     error
	reply   []byte
}

// Ack is the outcome of a handled event.
func Ack() Result { return Result{outcome: OutcomeAck} }

// AckReply acknowledges with a reply payload for a request/reply caller.
func AckReply(reply []byte) Result { return Result{outcome: OutcomeAck, reply: reply} }

// Retry asks for another delivery, no sooner than after (0: the route's backoff decides).
// err says why; give it a code with Errorf or a *HandlerError.
func Retry(after time.Duration, err error) Result {
	return Result{outcome: OutcomeRetry, after: after, err: err}
}

// Term fails the event for good: it is dead-lettered, never retried.
func Term(err error) Result { return Result{outcome: OutcomeTerm, err: err} }

// Outcome returns the result's outcome.
func (r Result) Outcome() Outcome { return r.outcome }

// Err returns the error of a Retry or Term result.
func (r Result) Err() error { return r.err }

// Reply returns the reply of an Ack result.
func (r Result) Reply() []byte { return r.reply }

// After returns the delay a Retry asked for.
func (r Result) After() time.Duration { return r.after }

// CodedError is an error with a machine-readable code, carried in the error envelope.
type CodedError struct {
	Code    string
	Message string
	// Retry is optional advice for the retry schedule.
	Retry *RetryPolicy
}

func (e *CodedError) Error() string { return e.Code + ": " + e.Message }

// Errorf makes a *CodedError with code and a formatted message.
func Errorf(code, format string, args ...any) error {
	return &CodedError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// engine is the result as the engine reads it: a failure is described as an error envelope
// from the Go handler named handler.
func (r Result) engine(handler string) engine.Result {
	res := engine.Result{Outcome: engine.Outcome(r.outcome), After: r.after}
	switch r.outcome {
	case OutcomeAck:
		res.Reply = r.reply
	case OutcomeRetry, OutcomeTerm:
		res.Error = errorEnvelope(r.err, handler)
	}
	return res
}

// errorEnvelope describes err as an error envelope from a Go handler named handler.
func errorEnvelope(err error, handler string) ErrorEnvelope {
	env := ErrorEnvelope{Code: envelope.CodeHandler, Runtime: "go", Handler: handler}
	var ce *CodedError
	var he *HandlerError
	switch {
	case err == nil:
		env.Message = "the handler failed without an error"
	case errors.As(err, &he):
		env = he.Envelope
	case errors.As(err, &ce):
		env.Code, env.Message, env.Retry = ce.Code, ce.Message, ce.Retry
	case errors.Is(err, context.DeadlineExceeded):
		env.Code, env.Message = envelope.CodeTimeout, err.Error()
	case errors.Is(err, context.Canceled):
		env.Code, env.Message = envelope.CodeCancelled, err.Error()
	default:
		env.Message = err.Error()
	}
	if env.Runtime == "" {
		env.Runtime = "go"
	}
	if env.Handler == "" {
		env.Handler = handler
	}
	return env
}
