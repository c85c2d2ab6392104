package policy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

// transitions records a breaker's state changes.
type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) record(_ string, from, to string) {
	tr.mu.Lock()
	tr.got = append(tr.got, from+"->"+to)
	tr.mu.Unlock()
}

func (tr *transitions) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return fmt.Sprint(tr.got)
}

// waitForState polls b until it reaches state, for at most ten seconds: the test depends
// on the breaker's Timeout having passed, never on how long it took.
func waitForState(t *testing.T, b *Breaker, state string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); b.State() != state; {
		if time.Now().After(deadline) {
			t.Fatalf("breaker stayed %s, want %s", b.State(), state)
		}
		time.Sleep(time.Millisecond)
	}
}

func failing(_ context.Context, _ int64) tandem.Result {
	return tandem.Retry(0, errors.New("dependency down"))
}

func TestBreakerTripsAfterConsecutiveFailuresAndRefusesWhileOpen(t *testing.T) {
	ctx := context.Background()
	fail := true
	h := &countingHandler{result: func(context.Context, int64) tandem.Result {
		if fail {
			return tandem.Retry(0, errors.New("dependency down"))
		}
		return tandem.Ack()
	}}
	b := NewBreaker("pricing", BreakerSettings{ConsecutiveFailures: 3, Timeout: time.Hour})
	wrapped := b.Wrap(h)
	ev := testEvent("1")

	// Two failures, then a success: the count of consecutive failures starts again.
	wrapped.Handle(ctx, ev)
	wrapped.Handle(ctx, ev)
	fail = false
	wrapped.Handle(ctx, ev)
	fail = true
	wrapped.Handle(ctx, ev)
	wrapped.Handle(ctx, ev)
	if s := b.State(); s != "closed" {
		t.Fatalf("breaker %s after a success broke the run of failures, want closed", s)
	}
	wrapped.Handle(ctx, ev)
	if s := b.State(); s != "open" {
		t.Fatalf("breaker %s after 3 consecutive failures, want open", s)
	}

	calls := h.calls.Load()
	for range 5 {
		res := wrapped.Handle(ctx, ev)
		if res.Outcome() != tandem.OutcomeRetry || !errors.Is(res.Err(), ErrCircuitOpen) {
			t.Fatalf("open breaker returned %v (%v), want Retry with ErrCircuitOpen", res.Outcome(), res.Err())
		}
		if res.After() <= 0 || res.After() > time.Hour {
			t.Fatalf("Retry after %v, want the time left of the 1h timeout", res.After())
		}
		if code := codeOf(res.Err()); code != "circuit_open" {
			t.Fatalf("code %q, want circuit_open", code)
		}
	}
	if n := h.calls.Load(); n != calls {
		t.Fatalf("the open breaker called the handler %d times", n-calls)
	}
}

func TestBreakerCountsTermAndPanicsAsFailures(t *testing.T) {
	b := NewBreaker("b", BreakerSettings{ConsecutiveFailures: 2, Timeout: time.Hour})
	b.Wrap(tandem.HandlerFunc(func(context.Context, *tandem.Event) tandem.Result { return tandem.Term(errors.New("bad")) })).
		Handle(context.Background(), testEvent("1"))
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the breaker swallowed the handler's panic")
			}
		}()
		b.Wrap(tandem.HandlerFunc(func(context.Context, *tandem.Event) tandem.Result { panic("boom") })).
			Handle(context.Background(), testEvent("2"))
	}()
	if s := b.State(); s != "open" {
		t.Fatalf("breaker %s after a Term and a panic with a threshold of 2, want open", s)
	}
}

func TestBreakerDefaultsToFiveConsecutiveFailures(t *testing.T) {
	b := NewBreaker("b", BreakerSettings{})
	for i := range 5 {
		if s := b.State(); s != "closed" {
			t.Fatalf("breaker %s after %d failures, want closed", s, i)
		}
		done, err := b.Admit(context.Background(), testEvent("1"))
		if err != nil {
			t.Fatal(err)
		}
		done(retryOutcome("handler"))
	}
	if s := b.State(); s != "open" {
		t.Fatalf("breaker %s after 5 failures, want open", s)
	}
}

func TestBreakerIgnoresRefusals(t *testing.T) {
	ctx := context.Background()
	b := NewBreaker("b", BreakerSettings{ConsecutiveFailures: 3, Timeout: time.Hour})
	fail := func(err error) {
		t.Helper()
		done, admitErr := b.Admit(ctx, testEvent("1"))
		if admitErr != nil {
			t.Fatalf("refused while %s: %v", b.State(), admitErr)
		}
		done(err)
	}
	fail(retryOutcome("handler"))
	fail(retryOutcome("handler"))
	// Neither counted nor breaking the run of failures.
	fail(retryOutcome("overloaded"))
	fail(tandem.ErrOverloaded)
	fail(newRefusal(ErrDuplicate, codeDuplicate, "dup", 0, nil))
	fail(newRefusal(ErrRateLimited, codeRateLimited, "limited", 0, nil))
	// A Go handler wrapped by the breaker and refused by an inner policy.
	b.Wrap(tandem.HandlerFunc(func(context.Context, *tandem.Event) tandem.Result {
		return tandem.Retry(time.Second, newRefusal(ErrRateLimited, codeRateLimited, "limited", time.Second, nil))
	})).Handle(ctx, testEvent("2"))
	if s := b.State(); s != "closed" {
		t.Fatalf("refusals tripped the breaker: %s", s)
	}
	fail(retryOutcome("handler"))
	if s := b.State(); s != "open" {
		t.Fatalf("breaker %s: refusals broke the run of failures", s)
	}
}

func TestBreakerAdmitRefusesWhileOpen(t *testing.T) {
	ctx := context.Background()
	b := NewBreaker("hash", BreakerSettings{ConsecutiveFailures: 2, Timeout: time.Hour})
	for _, outcome := range []error{
		&tandem.HandlerError{Outcome: tandem.OutcomeRetry, Envelope: tandem.ErrorEnvelope{Code: "handler"}},
		&tandem.HandlerError{Outcome: tandem.OutcomeTerm, Envelope: tandem.ErrorEnvelope{Code: "panic"}},
	} {
		done, err := b.Admit(ctx, testEvent("1"))
		if err != nil {
			t.Fatal(err)
		}
		done(outcome)
	}
	done, err := b.Admit(ctx, testEvent("2"))
	if done != nil || !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("open breaker admitted: err %v", err)
	}
	env := coded(err)
	if env == nil || env.Code != "circuit_open" || env.Retry == nil || env.Retry.Backoff <= 0 || env.Retry.Backoff > time.Hour {
		t.Fatalf("refusal envelope %+v, want circuit_open advising the time left", env)
	}
}

func TestBreakerHalfOpensAfterTimeoutAndClosesAfterSuccess(t *testing.T) {
	ctx := context.Background()
	var tr transitions
	b := NewBreaker("b", BreakerSettings{ConsecutiveFailures: 1, Timeout: 5 * time.Millisecond, OnStateChange: tr.record})
	if b.Name() != "b" {
		t.Fatalf("name %q", b.Name())
	}
	done, err := b.Admit(ctx, testEvent("1"))
	if err != nil {
		t.Fatal(err)
	}
	done(retryOutcome("handler"))
	waitForState(t, b, "half-open")

	// One probe (MaxRequests defaults to 1): a second event is refused while it is out.
	probe, err := b.Admit(ctx, testEvent("2"))
	if err != nil {
		t.Fatalf("half-open breaker refused its probe: %v", err)
	}
	if _, err := b.Admit(ctx, testEvent("3")); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("half-open breaker admitted a second probe: err %v", err)
	}
	probe(nil)
	if s := b.State(); s != "closed" {
		t.Fatalf("breaker %s after a successful probe, want closed", s)
	}
	if got, want := tr.String(), "[closed->open open->half-open half-open->closed]"; got != want {
		t.Fatalf("transitions %s, want %s", got, want)
	}
}

func TestBreakerReopensWhenAProbeFails(t *testing.T) {
	ctx := context.Background()
	var tr transitions
	b := NewBreaker("b", BreakerSettings{ConsecutiveFailures: 1, Timeout: 5 * time.Millisecond, OnStateChange: tr.record})
	h := &countingHandler{result: failing}
	wrapped := b.Wrap(h)
	wrapped.Handle(ctx, testEvent("1"))
	waitForState(t, b, "half-open")
	if res := wrapped.Handle(ctx, testEvent("2")); res.Outcome() != tandem.OutcomeRetry || errors.Is(res.Err(), ErrCircuitOpen) {
		t.Fatalf("the probe did not run: %v", res.Err())
	}
	if n := h.calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2 (the failure and the probe)", n)
	}
	if got, want := tr.String(), "[closed->open open->half-open half-open->open]"; got != want {
		t.Fatalf("transitions %s, want %s", got, want)
	}
}

func TestBreakerHalfOpenProbesNeedConsecutiveSuccesses(t *testing.T) {
	ctx := context.Background()
	b := NewBreaker("b", BreakerSettings{ConsecutiveFailures: 1, MaxRequests: 2, Timeout: 5 * time.Millisecond})
	done, _ := b.Admit(ctx, testEvent("1"))
	done(retryOutcome("handler"))
	waitForState(t, b, "half-open")
	p1, err1 := b.Admit(ctx, testEvent("2"))
	p2, err2 := b.Admit(ctx, testEvent("3"))
	if err1 != nil || err2 != nil {
		t.Fatalf("half-open breaker refused one of MaxRequests=2 probes: %v, %v", err1, err2)
	}
	// A refused probe frees its slot without deciding anything.
	p1(newRefusal(ErrRateLimited, codeRateLimited, "limited", 0, nil))
	p3, err := b.Admit(ctx, testEvent("4"))
	if err != nil {
		t.Fatalf("a refused probe kept its slot: %v", err)
	}
	p2(nil)
	if s := b.State(); s != "half-open" {
		t.Fatalf("breaker %s after one of two successes, want half-open", s)
	}
	p3(nil)
	if s := b.State(); s != "closed" {
		t.Fatalf("breaker %s after two successes, want closed", s)
	}
}
