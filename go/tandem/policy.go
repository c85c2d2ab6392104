package tandem

import (
	"context"
	"errors"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Policy is a per-route policy: a circuit breaker, a rate limit, deduplication, a timeout
// (package policy has these) or one of the user's own. For routes to Go handlers the router
// applies Wrap, in order, the first outermost. For routes to Rust handlers it calls Admit
// before publishing each event; a non-nil error refuses the event (the submitter gets it);
// on success it calls done exactly once with the event's final outcome error (nil for Ack,
// a *HandlerError otherwise). Implementations must be safe for concurrent use: one Policy
// value serves every event of every route it is given to.
//
// When a route has several policies, the router admits through them in order and stops at
// the first refusal; each policy that had admitted the event then gets done with that
// refusal, so it can tell a refused event from a handled one. A refusal should carry an
// error code (errors.As finds a *CodedError), which the submitter's error and the dead
// letter show. A refusal with the code "duplicate" says the event was handled before: the
// router acknowledges it without publishing it, and the submitter sees Ack.
type Policy interface {
	// Wrap returns a Handler that applies the policy around next.
	Wrap(next Handler) Handler
	// Admit decides whether ev may be published to a Rust handler now. ev is the
	// submitter's event: Admit must not modify it. On success done must be called exactly
	// once, with the event's final outcome error.
	Admit(ctx context.Context, ev *Event) (done func(err error), err error)
}

// isDuplicate reports whether err, a policy's refusal, says the event was handled before.
// The code, not a sentinel, is the contract, so that any policy can say it.
func isDuplicate(err error) bool {
	var ce *CodedError
	return errors.As(err, &ce) && ce.Code == envelope.CodeDuplicate
}
