package policy_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/policy"
)

// A policy wraps a Go handler (and admits each event of a Rust route): here a rate limit of
// one event an hour lets the first event through and refuses the second with a Retry that
// advises when a token is due.
func ExampleNewRateLimit() {
	limit := policy.NewRateLimit(rate.Every(time.Hour), 1)
	h := limit.Wrap(tandem.HandlerFunc(func(context.Context, *tandem.Event) tandem.Result {
		return tandem.Ack()
	}))
	for i := range 2 {
		res := h.Handle(context.Background(), &tandem.Event{ID: fmt.Sprint(i), Source: "/example", Type: "order.created"})
		fmt.Println(res.Outcome(), errors.Is(res.Err(), policy.ErrRateLimited), res.After() > 59*time.Minute)
	}
	// Output:
	// ack false false
	// retry true true
}

// Policies compose on a route in order, the first outermost: here deduplication before a
// circuit breaker, so a duplicate never reaches (nor counts against) the breaker.
func ExampleNewBreaker() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	dedup := policy.NewDedup(policy.NewMemoryStore(100_000, nil), 10*time.Minute)
	breaker := policy.NewBreaker("payments", policy.BreakerSettings{ConsecutiveFailures: 3, Timeout: 30 * time.Second})
	if err := rt.HandleRust("payment.*", "demo.echo", tandem.WithPolicy(dedup, breaker)); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(breaker.Name(), breaker.State())
	if err := rt.Shutdown(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output: payments closed
}
