// Package policy holds tandem's route policies: a circuit breaker (Breaker), a rate limit
// (RateLimit), deduplication (Dedup, with its Store) and a handler timeout (Timeout). Each
// constructor returns its own concrete type, and each type implements tandem.Policy, so a
// route takes any of them with tandem.WithPolicy:
//
//	breaker := policy.NewBreaker("payments", policy.BreakerSettings{})
//	err := rt.HandleRust("payment.*", "demo.flaky", tandem.WithPolicy(breaker))
//
// On a route to a Go handler a policy wraps the handler (Wrap), the first policy outermost;
// on a route to a Rust handler the runtime asks it to admit each event before publishing it
// (Admit) and tells it the event's final outcome. A policy that refuses an event returns an
// error matching its sentinel (ErrCircuitOpen, ErrRateLimited, ErrDuplicate) and carrying
// an error code ("circuit_open", "rate_limited", "duplicate") and, where it knows one, the
// delay after which to try again. A refusal is never a handler failure: it does not trip a
// Breaker, and it makes a Dedup forget the event. A duplicate is acknowledged, not failed.
//
// Every type here is safe for concurrent use by many goroutines. A policy value holds
// state (a circuit, a token bucket, a window of keys): routes that share one value share
// that state, which is how two routes to one dependency share one breaker.
package policy
