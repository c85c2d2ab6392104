package tandem

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// CallOnce returns the first delivery's outcome as the handler gave it, in either runtime:
// a retry is not redelivered and nothing is dead-lettered, where Call on the same route
// retries and dead-letters.
func TestCallOnceJudgesOneDelivery(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 3, Initial: time.Millisecond}})
	var calls atomic.Int32
	err := rt.Handle("go.flaky", "go-flaky", HandlerFunc(func(_ context.Context, ev *Event) Result {
		calls.Add(1)
		if ev.Attempt < 2 {
			return Retry(0, Errorf("unavailable", "attempt %d", ev.Attempt))
		}
		return AckReply([]byte("ok"))
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	defer assertInvariant(t, rt)
	ctx := context.Background()

	_, err = rt.CallOnce(ctx, event("go.flaky", "1", nil))
	var he *HandlerError
	if !errors.As(err, &he) || he.Outcome != OutcomeRetry || he.Code() != "unavailable" || he.DeadLetter != "" {
		t.Fatalf("CallOnce = %v, want the retry as the handler gave it", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the handler ran %d times, want once", n)
	}
	second := event("go.flaky", "2", nil)
	second.Attempt = 2
	if reply, err := rt.CallOnce(ctx, second); err != nil || string(reply) != "ok" {
		t.Fatalf("CallOnce at attempt 2 = %q, %v", reply, err)
	}
	// The Rust side: demo.fail's term is returned, not dead-lettered.
	_, err = rt.CallOnce(ctx, event("demo.fail", "3", []byte("term")))
	if !errors.As(err, &he) || he.Outcome != OutcomeTerm || he.Code() != "invalid" || he.DeadLetter != "" {
		t.Fatalf("CallOnce on demo.fail = %v", err)
	}
	if s := rt.Stats(); s.Retried != 0 || s.DeadLettered != 0 || len(sink.Records()) != 0 {
		t.Fatalf("CallOnce retried %d, dead-lettered %d", s.Retried, s.DeadLettered)
	}
	// Call on the same route retries.
	calls.Store(0)
	if reply, err := rt.Call(ctx, event("go.flaky", "4", nil)); err != nil || string(reply.Data()) != "ok" || calls.Load() != 2 {
		t.Fatalf("Call = %v after %d deliveries", err, calls.Load())
	}
	if _, err := rt.CallOnce(ctx, event("no.route", "5", nil)); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("CallOnce without a route = %v", err)
	}
}
