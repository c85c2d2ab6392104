package policy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

func TestDedupAcknowledgesADuplicateWithoutRunningItsHandler(t *testing.T) {
	h := &countingHandler{}
	wrapped := NewDedup(NewMemoryStore(0, nil), time.Hour).Wrap(h)
	ev := testEvent("1")
	for i := range 3 {
		if res := wrapped.Handle(context.Background(), ev); res.Outcome() != tandem.OutcomeAck {
			t.Fatalf("delivery %d: %v, want ack", i, res.Outcome())
		}
	}
	if n := h.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times for one event, want 1", n)
	}
	// Another event is not a duplicate; the same idempotency key is.
	wrapped.Handle(context.Background(), testEvent("2"))
	wrapped.Handle(context.Background(), &tandem.Event{ID: "3", Source: "test", Type: "t", IdempotencyKey: "k"})
	wrapped.Handle(context.Background(), &tandem.Event{ID: "4", Source: "test", Type: "t", IdempotencyKey: "k"})
	if n := h.calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times, want 3", n)
	}
}

func TestDedupForgetsARetrySoTheRedeliveryRuns(t *testing.T) {
	h := &countingHandler{result: func(_ context.Context, call int64) tandem.Result {
		if call == 1 {
			return tandem.Retry(0, errors.New("transient"))
		}
		return tandem.Ack()
	}}
	wrapped := NewDedup(NewMemoryStore(0, nil), time.Hour).Wrap(h)
	ev := testEvent("1")
	if res := wrapped.Handle(context.Background(), ev); res.Outcome() != tandem.OutcomeRetry {
		t.Fatalf("first delivery: %v, want the handler's retry", res.Outcome())
	}
	if res := wrapped.Handle(context.Background(), ev); res.Outcome() != tandem.OutcomeAck {
		t.Fatalf("redelivery: %v", res.Outcome())
	}
	if n := h.calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2: the redelivery after a retry was taken for a duplicate", n)
	}
	wrapped.Handle(context.Background(), ev)
	if n := h.calls.Load(); n != 2 {
		t.Fatal("a duplicate of the acknowledged delivery ran")
	}
}

func TestDedupKeepsATermedEvent(t *testing.T) {
	h := &countingHandler{result: func(context.Context, int64) tandem.Result { return tandem.Term(errors.New("invalid")) }}
	wrapped := NewDedup(NewMemoryStore(0, nil), time.Hour).Wrap(h)
	wrapped.Handle(context.Background(), testEvent("1"))
	if res := wrapped.Handle(context.Background(), testEvent("1")); res.Outcome() != tandem.OutcomeAck || h.calls.Load() != 1 {
		t.Fatalf("a duplicate of a termed event: %v after %d calls, want ack after 1", res.Outcome(), h.calls.Load())
	}
}

// flakyStore is a Store whose Seen fails while failSeen is set, and which records the
// contexts Forget is given.
type flakyStore struct {
	*MemoryStore
	failSeen   bool
	mu         sync.Mutex
	forgetErrs []error
}

func (s *flakyStore) Seen(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if s.failSeen {
		return false, errors.New("store unreachable")
	}
	return s.MemoryStore.Seen(ctx, key, ttl)
}

func (s *flakyStore) Forget(ctx context.Context, key string) error {
	s.mu.Lock()
	s.forgetErrs = append(s.forgetErrs, ctx.Err())
	s.mu.Unlock()
	return s.MemoryStore.Forget(ctx, key)
}

func TestDedupFailsOpenWhenTheStoreFails(t *testing.T) {
	store := &flakyStore{MemoryStore: NewMemoryStore(0, nil), failSeen: true}
	p := NewDedup(store, time.Hour)
	h := &countingHandler{}
	wrapped := p.Wrap(h)
	for range 2 {
		wrapped.Handle(context.Background(), testEvent("1"))
		done, err := p.Admit(context.Background(), testEvent("1"))
		if err != nil {
			t.Fatalf("Admit refused while the store failed: %v", err)
		}
		done(nil)
	}
	if n := h.calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times while the store failed, want 2", n)
	}
}

func TestDedupForgetsEvenWhenTheContextIsDone(t *testing.T) {
	store := &flakyStore{MemoryStore: NewMemoryStore(0, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	h := &countingHandler{result: func(ctx context.Context, _ int64) tandem.Result {
		cancel()
		return tandem.Retry(0, ctx.Err())
	}}
	wrapped := NewDedup(store, time.Hour).Wrap(h)
	wrapped.Handle(ctx, testEvent("1"))
	wrapped.Handle(context.Background(), testEvent("1"))
	if n := h.calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.forgetErrs) == 0 || store.forgetErrs[0] != nil {
		t.Fatalf("Forget got contexts with errors %v, want a live context", store.forgetErrs)
	}
}

func TestDedupAdmit(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore(0, nil)
	p := NewDedup(store, time.Hour)
	admit := func(id string) (func(error), error) {
		t.Helper()
		return p.Admit(ctx, testEvent(id))
	}

	done, err := admit("acked")
	if err != nil {
		t.Fatal(err)
	}
	done(nil)
	if _, err := admit("acked"); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate of an acknowledged event: err %v, want ErrDuplicate", err)
	} else if code := codeOf(err); code != "duplicate" {
		t.Fatalf("code %q, want duplicate", code)
	}

	// A duplicate while the first is in flight is a duplicate too.
	inFlight, err := admit("in-flight")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admit("in-flight"); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate of an event in flight: err %v, want ErrDuplicate", err)
	}
	inFlight(nil)

	cases := []struct {
		name    string
		outcome error
		forget  bool
	}{
		{"retry", &tandem.HandlerError{Outcome: tandem.OutcomeRetry, Envelope: tandem.ErrorEnvelope{Code: "handler"}}, true},
		{"term", &tandem.HandlerError{Outcome: tandem.OutcomeTerm, Envelope: tandem.ErrorEnvelope{Code: "handler"}}, false},
		{"refused", newRefusal(ErrRateLimited, codeRateLimited, "limited", 0, nil), true},
		{"overloaded", tandem.ErrOverloaded, true},
	}
	for _, c := range cases {
		done, err := admit(c.name)
		if err != nil {
			t.Fatal(err)
		}
		done(c.outcome)
		done, err = admit(c.name)
		if forgotten := err == nil; forgotten != c.forget {
			t.Errorf("%s: after the outcome %v the resubmission was admitted: %v, want %v", c.name, c.outcome, forgotten, c.forget)
		}
		if done != nil {
			done(nil)
		}
	}
}

func TestDedupWithoutAStoreRemembersInMemory(t *testing.T) {
	h := &countingHandler{}
	wrapped := NewDedup(nil, time.Hour).Wrap(h)
	for range 2 {
		wrapped.Handle(context.Background(), testEvent("1"))
	}
	if n := h.calls.Load(); n != 1 {
		t.Fatalf("the handler ran %d times for an event and its duplicate, want 1", n)
	}
}
