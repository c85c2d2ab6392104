package tandem

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// countingHandler counts its calls and returns what result returns.
type countingHandler struct {
	calls  atomic.Int64
	result func(ctx context.Context, call int64) Result
}

func (h *countingHandler) Handle(ctx context.Context, _ *Event) Result {
	n := h.calls.Add(1)
	if h.result == nil {
		return Ack()
	}
	return h.result(ctx, n)
}

func testEvent(id string) *Event {
	return &Event{ID: id, Source: "test", Type: "order.created"}
}

func retryOutcome(code string) error {
	return &HandlerError{Outcome: OutcomeRetry, Envelope: ErrorEnvelope{Code: code, Runtime: "rust", Handler: "h"}}
}

func TestPolicyMiddlewareOfChainsPolicies(t *testing.T) {
	store := NewMemoryDedup(0, nil)
	h := &countingHandler{}
	chained := Chain(h, MiddlewareOf(Dedup(store, time.Hour)), MiddlewareOf(CircuitBreaker("b", BreakerSettings{})))
	ev := testEvent("1")
	for range 3 {
		if res := chained.Handle(context.Background(), ev); res.Outcome() != OutcomeAck {
			t.Fatalf("result %v, want ack", res.Outcome())
		}
	}
	if n := h.calls.Load(); n != 1 {
		t.Fatalf("the handler ran %d times for one event and two duplicates, want 1", n)
	}
}

func TestPolicyRefusalsAreNotHandlerFailures(t *testing.T) {
	refusals := []error{
		newRefusal(ErrCircuitOpen, codeCircuitOpen, "open", time.Second, nil),
		newRefusal(ErrRateLimited, codeRateLimited, "limited", 0, context.Canceled),
		newRefusal(ErrDuplicate, codeDuplicate, "dup", 0, nil),
		ErrOverloaded,
		fmt.Errorf("submit: %w", ErrOverloaded),
		retryOutcome("overloaded"),
		retryOutcome("circuit_open"),
		&HandlerError{Outcome: OutcomeTerm, Envelope: ErrorEnvelope{Code: "shed"}},
		Errorf("rate_limited", "upstream"),
	}
	for _, err := range refusals {
		if !isRefusal(err) {
			t.Errorf("isRefusal(%v) = false, want true", err)
		}
	}
	failures := []error{
		nil,
		errors.New("boom"),
		retryOutcome("handler"),
		retryOutcome("timeout"),
		&HandlerError{Outcome: OutcomeTerm, Envelope: ErrorEnvelope{Code: "panic"}},
		context.DeadlineExceeded,
	}
	for _, err := range failures {
		if isRefusal(err) {
			t.Errorf("isRefusal(%v) = true, want false", err)
		}
	}
}

func TestPolicyRefusalCarriesCodeAndAdvice(t *testing.T) {
	err := newRefusal(ErrRateLimited, codeRateLimited, "over the rate", 3*time.Second, context.DeadlineExceeded)
	if !errors.Is(err, ErrRateLimited) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v does not match its sentinel and cause", err)
	}
	env := errorEnvelope(err, "h")
	if env.Code != "rate_limited" || env.Retry == nil || env.Retry.Backoff != 3*time.Second {
		t.Fatalf("envelope %+v, want code rate_limited with a 3s backoff", env)
	}
}

// admitInOrder admits ev through policies as a router does for a Rust route: in order,
// and on a refusal the policies that had admitted ev get done with the refusal.
func admitInOrder(ctx context.Context, ev *Event, policies ...Policy) (func(error), error) {
	var dones []func(error)
	settle := func(err error) {
		for _, done := range dones {
			done(err)
		}
	}
	for _, p := range policies {
		done, err := p.Admit(ctx, ev)
		if err != nil {
			settle(err)
			return nil, err
		}
		dones = append(dones, done)
	}
	return settle, nil
}

func TestPolicyARefusalByALaterPolicyIsNoFailure(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryDedup(0, nil)
	dedup := Dedup(store, time.Hour)
	breaker := CircuitBreaker("b", BreakerSettings{ConsecutiveFailures: 1, Timeout: time.Hour})
	limit := RateLimit(rate.Every(time.Hour), 1, false)

	done, err := admitInOrder(ctx, testEvent("1"), dedup, breaker, limit)
	if err != nil {
		t.Fatalf("first event refused: %v", err)
	}
	done(nil)

	// The limiter refuses the second event: the breaker must not count it (one failure
	// would trip it), and dedup must forget it so its resubmission is not a duplicate.
	ev := testEvent("2")
	if _, err := admitInOrder(ctx, ev, dedup, breaker, limit); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("second event: err %v, want ErrRateLimited", err)
	}
	if s := breaker.State(); s != "closed" {
		t.Fatalf("a rate-limit refusal tripped the breaker: %s", s)
	}
	if seen, _ := store.Seen(ctx, DedupKey(ev), time.Hour); seen {
		t.Fatal("dedup remembered an event another policy refused")
	}

	// A route that was full (ErrShed wraps ErrOverloaded) refused it: no failure either.
	done, err = admitInOrder(ctx, testEvent("3"), dedup, breaker)
	if err != nil {
		t.Fatal(err)
	}
	done(fmt.Errorf("%w (shed)", ErrOverloaded))
	if s := breaker.State(); s != "closed" {
		t.Fatalf("an overload tripped the breaker: %s", s)
	}

	// A handler failure reaches every admitted policy.
	done, err = admitInOrder(ctx, testEvent("4"), dedup, breaker)
	if err != nil {
		t.Fatal(err)
	}
	done(retryOutcome("handler"))
	if s := breaker.State(); s != "open" {
		t.Fatalf("breaker %s after a failure with a threshold of one, want open", s)
	}
}
