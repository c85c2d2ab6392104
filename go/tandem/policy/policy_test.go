package policy

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tandemrt/tandem/go/tandem"
)

// countingHandler counts its calls and returns what result returns.
type countingHandler struct {
	calls  atomic.Int64
	result func(ctx context.Context, call int64) tandem.Result
}

func (h *countingHandler) Handle(ctx context.Context, _ *tandem.Event) tandem.Result {
	n := h.calls.Add(1)
	if h.result == nil {
		return tandem.Ack()
	}
	return h.result(ctx, n)
}

// coded is what the runtime reads from a policy's error for the error envelope's code,
// message and retry advice: the *tandem.CodedError errors.As finds (nil if none).
func coded(err error) *tandem.CodedError {
	var ce *tandem.CodedError
	if errors.As(err, &ce) {
		return ce
	}
	return nil
}

// codeOf is the code of err's *tandem.CodedError, "" if it has none.
func codeOf(err error) string {
	if ce := coded(err); ce != nil {
		return ce.Code
	}
	return ""
}

func testEvent(id string) *tandem.Event {
	return &tandem.Event{ID: id, Source: "test", Type: "order.created"}
}

func retryOutcome(code string) error {
	return &tandem.HandlerError{Outcome: tandem.OutcomeRetry, Envelope: tandem.ErrorEnvelope{Code: code, Runtime: "rust", Handler: "h"}}
}

func TestPoliciesChainAsMiddleware(t *testing.T) {
	store := NewMemoryStore(0, nil)
	h := &countingHandler{}
	chained := tandem.Chain(h, NewDedup(store, time.Hour).Wrap, NewBreaker("b", BreakerSettings{}).Wrap)
	ev := testEvent("1")
	for range 3 {
		if res := chained.Handle(context.Background(), ev); res.Outcome() != tandem.OutcomeAck {
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
		tandem.ErrOverloaded,
		fmt.Errorf("submit: %w", tandem.ErrOverloaded),
		retryOutcome("overloaded"),
		retryOutcome("circuit_open"),
		&tandem.HandlerError{Outcome: tandem.OutcomeTerm, Envelope: tandem.ErrorEnvelope{Code: "shed"}},
		tandem.Errorf("rate_limited", "upstream"),
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
		&tandem.HandlerError{Outcome: tandem.OutcomeTerm, Envelope: tandem.ErrorEnvelope{Code: "panic"}},
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
	env := coded(err)
	if env == nil || env.Code != "rate_limited" || env.Retry == nil || env.Retry.Backoff != 3*time.Second {
		t.Fatalf("envelope %+v, want code rate_limited with a 3s backoff", env)
	}
}

// admitInOrder admits ev through policies as a router does for a Rust route: in order,
// and on a refusal the policies that had admitted ev get done with the refusal.
func admitInOrder(ctx context.Context, ev *tandem.Event, policies ...tandem.Policy) (func(error), error) {
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
	store := NewMemoryStore(0, nil)
	dedup := NewDedup(store, time.Hour)
	breaker := NewBreaker("b", BreakerSettings{ConsecutiveFailures: 1, Timeout: time.Hour})
	limit := NewRateLimit(rate.Every(time.Hour), 1)

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
	if seen, _ := store.Seen(ctx, Key(ev), time.Hour); seen {
		t.Fatal("dedup remembered an event another policy refused")
	}

	// A route that was full (ErrShed wraps ErrOverloaded) refused it: no failure either.
	done, err = admitInOrder(ctx, testEvent("3"), dedup, breaker)
	if err != nil {
		t.Fatal(err)
	}
	done(fmt.Errorf("%w (shed)", tandem.ErrOverloaded))
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
