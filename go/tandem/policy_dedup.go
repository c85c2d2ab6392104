package tandem

import (
	"context"
	"errors"
	"time"
)

// ErrDuplicate is returned (wrapped) by a Dedup policy's Admit for an event whose
// DedupKey it has seen within its TTL. The router acknowledges such an event without
// publishing it: ErrDuplicate is not a failure, and the submitter sees Ack. The error
// carries the code "duplicate".
var ErrDuplicate = errors.New("tandem: duplicate event")

// dedup is the Policy Dedup returns.
type dedup struct {
	store DedupStore
	ttl   time.Duration
}

// Dedup returns a policy that runs each event's handler once per DedupKey within ttl: a
// duplicate is acknowledged without running its handler (a wrapped Go handler is not
// called and the event gets Ack; Admit returns ErrDuplicate). The key is remembered from
// the first delivery on, so a duplicate arriving while the first is in flight is a
// duplicate too. If the first delivery does not end in Ack or Term (a Retry, or a refusal
// by another policy), the key is forgotten, so the redelivery runs. A Term keeps the key:
// a resubmission of a dead-lettered event (a dead-letter replay, say) within ttl is taken
// for a duplicate.
//
// A store error fails open: the handler runs, since losing an event is worse than running
// it twice. If forgetting a key fails, the redelivery within ttl is taken for a duplicate
// and acknowledged; a store used here should make Forget as reliable as Seen.
func Dedup(store DedupStore, ttl time.Duration) Policy {
	return &dedup{store: store, ttl: ttl}
}

// Wrap implements Policy.
func (p *dedup) Wrap(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, ev *Event) Result {
		key := DedupKey(ev)
		if seen, err := p.store.Seen(ctx, key, p.ttl); err == nil && seen {
			return Ack()
		}
		res := next.Handle(ctx, ev)
		if res.Outcome() == OutcomeRetry {
			p.forget(ctx, key)
		}
		return res
	})
}

// Admit implements Policy: it returns ErrDuplicate for a duplicate, and done forgets the
// key unless the outcome is Ack or Term.
func (p *dedup) Admit(ctx context.Context, ev *Event) (func(error), error) {
	key := DedupKey(ev)
	seen, err := p.store.Seen(ctx, key, p.ttl)
	if err == nil && seen {
		return nil, newRefusal(ErrDuplicate, codeDuplicate, "event "+ev.ID+" was seen within the dedup window", 0, nil)
	}
	return func(err error) {
		if err == nil {
			return
		}
		var he *HandlerError
		if errors.As(err, &he) && he.Outcome == OutcomeTerm && !isRefusal(err) {
			return
		}
		p.forget(ctx, key)
	}, nil
}

// forget forgets key even if ctx is done: the event's deadline passing is one reason the
// delivery failed, and the key must go all the same.
func (p *dedup) forget(ctx context.Context, key string) {
	_ = p.store.Forget(context.WithoutCancel(ctx), key)
}
