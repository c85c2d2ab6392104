package policy

import (
	"errors"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

// Error codes the policies give their refusals and failures, or recognise as refusals.
// They are the error envelope's codes (ffi/envelope.cddl).
const (
	codeCircuitOpen = "circuit_open"
	codeRateLimited = "rate_limited"
	codeDuplicate   = "duplicate"
	codeTimeout     = "timeout"
	codeOverloaded  = "overloaded"
	codeShed        = "shed"
)

// refusal is a policy's refusal of an event. errors.Is matches its sentinel (and its
// cause, if any); errors.As finds a *tandem.CodedError with the refusal's code and retry
// advice, so the runtime describes it with that code in the error envelope.
type refusal struct {
	sentinel error
	coded    *tandem.CodedError
	cause    error // optional, e.g. the context's error
}

func newRefusal(sentinel error, code, msg string, after time.Duration, cause error) *refusal {
	ce := &tandem.CodedError{Code: code, Message: msg}
	if after > 0 {
		ce.Retry = &tandem.RetryPolicy{Backoff: after}
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
// its handler (by a policy, or because the runtime or the route was full:
// tandem.ErrOverloaded, tandem.ErrShed, codes "overloaded" and "shed") rather than that the
// handler failed. err may be the error of a Result or an outcome error given to done.
// Refusals are recognised by code as well as by sentinel, so that a refusal by a policy of
// another package, or one that crossed the envelope, counts too.
func isRefusal(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrCircuitOpen) || errors.Is(err, ErrRateLimited) ||
		errors.Is(err, ErrDuplicate) || errors.Is(err, tandem.ErrOverloaded) {
		return true
	}
	var code string
	var he *tandem.HandlerError
	var ce *tandem.CodedError
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
