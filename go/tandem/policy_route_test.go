package tandem_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/policy"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// The policies' behaviour on their own is tested in package policy; these tests hold the
// runtime to its side of tandem.Policy: Admit before publishing, done with the outcome, a
// duplicate acknowledged, a refusal's code in the submitter's error.

func startedRuntime(t *testing.T, cfg tandem.Config, routes func(rt *tandem.Runtime) error) *tandem.Runtime {
	t.Helper()
	rt, err := tandem.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := routes(rt); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	return rt
}

func testEvent(typ, id string, data []byte) *tandem.Event {
	return &tandem.Event{ID: id, Source: "/test", Type: typ, Data: data}
}

func TestPoliciesGuardRustRoutes(t *testing.T) {
	breaker := policy.NewBreaker("risky", policy.BreakerSettings{ConsecutiveFailures: 2, Timeout: time.Hour})
	dedup := policy.NewDedup(policy.NewMemoryStore(100, nil), time.Minute)
	rt := startedRuntime(t, tandem.Config{DeadLetters: deadletter.NewMemorySink()}, func(rt *tandem.Runtime) error {
		if err := rt.HandleRust("risky.*", "demo.fail", tandem.WithPolicy(breaker)); err != nil {
			return err
		}
		return rt.HandleRust("once.*", "demo.echo", tandem.WithPolicy(dedup))
	})
	ctx := context.Background()
	for i := range 2 {
		if _, err := rt.Call(ctx, testEvent("risky.op", fmt.Sprint(i), []byte("term"))); err == nil {
			t.Fatal("demo.fail term succeeded")
		}
	}
	if breaker.State() != "open" {
		t.Fatalf("breaker %s after 2 failures, want open", breaker.State())
	}
	before := rt.Stats().ToRust
	if _, err := rt.Call(ctx, testEvent("risky.op", "3", []byte("term"))); !errors.Is(err, policy.ErrCircuitOpen) {
		t.Fatalf("open breaker: %v, want ErrCircuitOpen", err)
	}
	if rt.Stats().ToRust != before {
		t.Fatal("an open breaker let the event reach Rust")
	}

	first, err := rt.Call(ctx, testEvent("once.pay", "p-1", []byte("pay")))
	if err != nil || string(first.Data()) != "pay" {
		t.Fatalf("first delivery: %q, %v", first.Data(), err)
	}
	first.Release()
	before = rt.Stats().ToRust
	dup, err := rt.Call(ctx, testEvent("once.pay", "p-1", []byte("pay")))
	if err != nil || len(dup.Data()) != 0 {
		t.Fatalf("duplicate: %q, %v: want acknowledged without a reply", dup.Data(), err)
	}
	if rt.Stats().ToRust != before {
		t.Fatal("a duplicate reached its handler")
	}
	tandem.AssertInvariant(t, rt)
}

// refuseAsDuplicate is a user's own policy that says every event was handled before.
type refuseAsDuplicate struct{ admitted atomic.Int64 }

func (p *refuseAsDuplicate) Wrap(next tandem.Handler) tandem.Handler { return next }

func (p *refuseAsDuplicate) Admit(context.Context, *tandem.Event) (func(error), error) {
	p.admitted.Add(1)
	return nil, tandem.Errorf("duplicate", "seen before")
}

func TestARefusalCodedDuplicateIsAcknowledged(t *testing.T) {
	p := &refuseAsDuplicate{}
	rt := startedRuntime(t, tandem.Config{}, func(rt *tandem.Runtime) error {
		return rt.HandleRust("seen.*", "demo.echo", tandem.WithPolicy(p))
	})
	before := rt.Stats().ToRust
	reply, err := rt.Call(context.Background(), testEvent("seen.pay", "s-1", []byte("pay")))
	if err != nil || len(reply.Data()) != 0 {
		t.Fatalf("Call = %q, %v: want acknowledged without a reply", reply.Data(), err)
	}
	if p.admitted.Load() != 1 || rt.Stats().ToRust != before {
		t.Fatalf("admitted %d, published %d: want the policy asked once and nothing published",
			p.admitted.Load(), rt.Stats().ToRust)
	}
	tandem.AssertInvariant(t, rt)
}

func TestRateLimitedGoRoute(t *testing.T) {
	var ran atomic.Int64
	limit := policy.NewRateLimit(0.001, 1)
	rt := startedRuntime(t, tandem.Config{DeadLetters: deadletter.NewMemorySink()}, func(rt *tandem.Runtime) error {
		return rt.Handle("limited", "limited", tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
			ran.Add(1)
			return tandem.Ack()
		}), tandem.WithPolicy(limit), tandem.WithRetry(retry.Backoff{MaxAttempts: 1}))
	})
	ctx := context.Background()
	if _, err := rt.Call(ctx, testEvent("limited", "1", nil)); err != nil {
		t.Fatalf("within the burst: %v", err)
	}
	_, err := rt.Call(ctx, testEvent("limited", "2", nil))
	var he *tandem.HandlerError
	if !errors.As(err, &he) || he.Code() != "rate_limited" {
		t.Fatalf("beyond the rate: %v, want rate_limited", err)
	}
	if ran.Load() != 1 {
		t.Fatalf("the handler ran %d times, want 1", ran.Load())
	}
	tandem.AssertInvariant(t, rt)
}
