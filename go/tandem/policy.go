package tandem

import (
	"context"
	"errors"
	"time"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Policy is a per-route (or global) policy. For routes to Go handlers the router applies
// Wrap, in order, the first outermost. For routes to Rust handlers it calls Admit before
// publishing each event; a non-nil error refuses the event (the submitter gets it; the
// router may dead-letter it); on success it calls done exactly once with the event's final
// outcome error (nil for Ack, a *HandlerError otherwise). Implementations are safe for
// concurrent use.
//
// When a route has several policies, the router admits through them in order and stops at
// the first refusal; each policy that had admitted the event then gets done with that
// refusal, so it can tell a refused event from a handled one (a refusal is never a handler
// failure: it does not trip a circuit breaker, and it makes Dedup forget the event).
//
// The policies are CircuitBreaker, RateLimit and Dedup; Timeout is middleware only.
type Policy interface {
	// Wrap returns a Handler that applies the policy around next.
	Wrap(next Handler) Handler
	// Admit decides whether ev may be published to a Rust handler now. On success done
	// must be called exactly once, with the event's final outcome error.
	Admit(ctx context.Context, ev *Event) (done func(err error), err error)
}

// MiddlewareOf returns p as Middleware, for Chain.
func MiddlewareOf(p Policy) Middleware { return p.Wrap }

// Error codes the policies give their refusals and failures, or recognise as refusals.
const (
	codeCircuitOpen = envelope.CodeCircuitOpen
	codeRateLimited = envelope.CodeRateLimited
	codeDuplicate   = envelope.CodeDuplicate
	codeTimeout     = envelope.CodeTimeout
	codeOverloaded  = envelope.CodeOverloaded
	codeShed        = envelope.CodeShed
)

// refusal is a policy's refusal of an event. errors.Is matches its sentinel (and its
// cause, if any); errors.As finds a *CodedError with the refusal's code and retry advice,
// so errorEnvelope describes it with that code.
type refusal struct {
	sentinel error
	coded    *CodedError
	cause    error // optional, e.g. the context's error
}

func newRefusal(sentinel error, code, msg string, after time.Duration, cause error) *refusal {
	ce := &CodedError{Code: code, Message: msg}
	if after > 0 {
		ce.Retry = &RetryPolicy{Backoff: after}
	}
	return &refusal{sentinel: sentinel, coded: ce, cause: cause}
}

func (r *refusal) Error() string { return r.sentinel.Error() + ": " + r.coded.Message }

func (r *refusal) Unwrap() []error {
	if r.cause != nil {
		return []error{r.sentinel, r.coded, r.cause}
	}
	return []error{r.sentinel, r.coded}
}

// isRefusal reports whether err says the event was refused before or instead of running
// its handler (by a policy, or because the runtime or the route was full: ErrOverloaded,
// ErrShed, codes "overloaded" and "shed") rather than that the
// handler failed. err may be the error of a Result or an outcome error given to done.
func isRefusal(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrCircuitOpen) || errors.Is(err, ErrRateLimited) ||
		errors.Is(err, ErrDuplicate) || errors.Is(err, ErrOverloaded) {
		return true
	}
	var code string
	var he *HandlerError
	var ce *CodedError
	switch {
	case errors.As(err, &he):
		code = he.Envelope.Code
	case errors.As(err, &ce):
		code = ce.Code
	}
	switch code {
	case codeCircuitOpen, codeRateLimited, codeDuplicate, codeOverloaded, codeShed:
		return true
	}
	return false
}

// noopDone is the done of an admission that needs no outcome.
func noopDone(error) {}
