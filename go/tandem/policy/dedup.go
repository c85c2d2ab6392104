package policy

import (
	"context"
	"errors"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

// ErrDuplicate is wrapped by the error a Dedup's Admit returns for an event whose Key it
// has seen within its TTL. The error carries the code "duplicate", which tells the router to
// acknowledge the event without publishing it: a duplicate is not a failure, and the
// submitter sees Ack.
var ErrDuplicate = errors.New("tandem: duplicate event")

// Dedup is a policy that runs each event's handler once per Key within a TTL, made by
// NewDedup. It is safe for concurrent use as far as its Store is (MemoryStore is); routes
// sharing a Dedup share its window, so an event submitted to both runs once.
type Dedup struct {
	store Store
	ttl   time.Duration
}

var _ tandem.Policy = (*Dedup)(nil)

// NewDedup returns a policy that runs each event's handler once per Key within ttl,
// remembering keys in store (nil means a new NewMemoryStore(0, nil)): a duplicate is
// acknowledged without running its handler (a wrapped Go handler is not called and the
// event gets Ack; Admit refuses with ErrDuplicate, which the router acknowledges). The key
// is remembered from the first delivery on, so a duplicate arriving while the first is in
// flight is a duplicate too. If the first delivery does not end in Ack or Term (a Retry,
// or a refusal by another policy), the key is forgotten, so the redelivery runs. A Term
// keeps the key: a resubmission of a dead-lettered event (a dead-letter replay, say) within
// ttl is taken for a duplicate.
//
// A store error fails open: the handler runs, since losing an event is worse than running
// it twice. If forgetting a key fails, the redelivery within ttl is taken for a duplicate
// and acknowledged; a store used here should make Forget as reliable as Seen.
func NewDedup(store Store, ttl time.Duration) *Dedup {
	if store == nil {
		store = NewMemoryStore(0, nil)
	}
	return &Dedup{store: store, ttl: ttl}
}

// Wrap implements tandem.Policy: next runs unless ev is a duplicate.
func (p *Dedup) Wrap(next tandem.Handler) tandem.Handler {
	return tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		key := Key(ev)
		if seen, err := p.store.Seen(ctx, key, p.ttl); err == nil && seen {
			return tandem.Ack()
		}
		res := next.Handle(ctx, ev)
		if res.Outcome() == tandem.OutcomeRetry {
			p.forget(ctx, key)
		}
		return res
	})
}

// Admit implements tandem.Policy: it refuses a duplicate with an error wrapping
// ErrDuplicate, and done forgets the key unless the outcome is Ack or Term.
func (p *Dedup) Admit(ctx context.Context, ev *tandem.Event) (func(error), error) {
	key := Key(ev)
	seen, err := p.store.Seen(ctx, key, p.ttl)
	if err == nil && seen {
		return nil, newRefusal(ErrDuplicate, codeDuplicate, "event "+ev.ID+" was seen within the dedup window", 0, nil)
	}
	return func(err error) {
		if err == nil {
			return
		}
		var he *tandem.HandlerError
		if errors.As(err, &he) && he.Outcome == tandem.OutcomeTerm && !isRefusal(err) {
			return
		}
		p.forget(ctx, key)
	}, nil
}

// Key is the key a Dedup remembers an event by, its idempotency key: ev.IdempotencyKey if set, else
// Source + "\x00" + ID, which CloudEvents defines as unique per distinct event.
func Key(ev *tandem.Event) string {
	if ev.IdempotencyKey != "" {
		return ev.IdempotencyKey
	}
	return ev.Source + "\x00" + ev.ID
}

// forget forgets key even if ctx is done: the event's deadline passing is one reason the
// delivery failed, and the key must go all the same.
func (p *Dedup) forget(ctx context.Context, key string) {
	_ = p.store.Forget(context.WithoutCancel(ctx), key)
}
