package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tandemrt/tandem/go/tandem"
)

func TestRateLimitRefusesBeyondBurstWithoutWaiting(t *testing.T) {
	ctx := context.Background()
	p := NewRateLimit(rate.Every(time.Hour), 3)
	for i := range 3 {
		done, err := p.Admit(ctx, testEvent("1"))
		if err != nil {
			t.Fatalf("event %d of a burst of 3 refused: %v", i, err)
		}
		done(nil)
	}
	done, err := p.Admit(ctx, testEvent("1"))
	if done != nil || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("fourth event: err %v, want ErrRateLimited", err)
	}
	env := coded(err)
	if env == nil || env.Code != "rate_limited" || env.Retry == nil || env.Retry.Backoff <= 0 || env.Retry.Backoff > time.Hour {
		t.Fatalf("refusal envelope %+v, want rate_limited advising the delay until a token", env)
	}
}

func TestRateLimitWrapRetriesWhenATokenIsDue(t *testing.T) {
	h := &countingHandler{}
	wrapped := NewRateLimit(rate.Every(time.Hour), 2).Wrap(h)
	for range 2 {
		if res := wrapped.Handle(context.Background(), testEvent("1")); res.Outcome() != tandem.OutcomeAck {
			t.Fatalf("within the burst: %v", res.Err())
		}
	}
	res := wrapped.Handle(context.Background(), testEvent("1"))
	if res.Outcome() != tandem.OutcomeRetry || !errors.Is(res.Err(), ErrRateLimited) {
		t.Fatalf("beyond the burst: %v %v, want Retry with ErrRateLimited", res.Outcome(), res.Err())
	}
	// The next token is due an hour after the burst began, less the little time since.
	if res.After() < 59*time.Minute || res.After() > time.Hour {
		t.Fatalf("Retry after %v, want the delay until the next token (about 1h)", res.After())
	}
	if code := codeOf(res.Err()); code != "rate_limited" {
		t.Fatalf("code %q, want rate_limited", code)
	}
	if n := h.calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
	// A refusal takes no token: however many events were refused, the next token is
	// still due within the hour.
	for range 10 {
		wrapped.Handle(context.Background(), testEvent("1"))
	}
	if res := wrapped.Handle(context.Background(), testEvent("1")); res.After() > time.Hour {
		t.Fatalf("Retry after %v: refusals pushed the next token back", res.After())
	}
}

func TestRateLimitWaitAdmitsWithinContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A token a millisecond: every event waits for one, none is refused.
	p := NewRateLimit(rate.Every(time.Millisecond), 1, WaitForToken())
	for i := range 5 {
		done, err := p.Admit(ctx, testEvent("1"))
		if err != nil {
			t.Fatalf("event %d refused although its context allows a minute: %v", i, err)
		}
		done(nil)
	}
	h := &countingHandler{}
	wrapped := p.Wrap(h)
	for range 5 {
		if res := wrapped.Handle(ctx, testEvent("1")); res.Outcome() != tandem.OutcomeAck {
			t.Fatalf("wrapped handler: %v", res.Err())
		}
	}
	if n := h.calls.Load(); n != 5 {
		t.Fatalf("handler ran %d times, want 5", n)
	}
}

func TestRateLimitWaitRefusesWhenTheContextEnds(t *testing.T) {
	p := NewRateLimit(rate.Every(time.Hour), 1, WaitForToken())
	if _, err := p.Admit(context.Background(), testEvent("1")); err != nil {
		t.Fatal(err)
	}

	// The deadline comes before the next token: refused at once.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.Admit(ctx, testEvent("2")); !errors.Is(err, ErrRateLimited) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want ErrRateLimited and context.DeadlineExceeded", err)
	}

	// No deadline: it waits until the context is cancelled.
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		time.Sleep(time.Millisecond)
		cancel()
	}()
	if _, err := p.Admit(ctx, testEvent("3")); !errors.Is(err, ErrRateLimited) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want ErrRateLimited and context.Canceled", err)
	}

	h := &countingHandler{}
	res := p.Wrap(h).Handle(ctx, testEvent("4"))
	if res.Outcome() != tandem.OutcomeRetry || res.After() != 0 || !errors.Is(res.Err(), context.Canceled) {
		t.Fatalf("wrapped: %v after %v (%v), want Retry(0) with the context's error", res.Outcome(), res.After(), res.Err())
	}
	if code := codeOf(res.Err()); code != "rate_limited" {
		t.Fatalf("code %q, want rate_limited", code)
	}
	if h.calls.Load() != 0 {
		t.Fatal("the handler ran without a token")
	}
}

func TestRateLimitBurstBelowOneAdmitsOne(t *testing.T) {
	p := NewRateLimit(rate.Every(time.Hour), 0)
	if _, err := p.Admit(context.Background(), testEvent("1")); err != nil {
		t.Fatalf("a burst of 0 refused everything: %v", err)
	}
	if _, err := p.Admit(context.Background(), testEvent("2")); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err %v, want ErrRateLimited", err)
	}
}

func TestRateLimitInfiniteNeverRefuses(t *testing.T) {
	p := NewRateLimit(rate.Inf, 0)
	for range 1000 {
		if _, err := p.Admit(context.Background(), testEvent("1")); err != nil {
			t.Fatal(err)
		}
	}
}
