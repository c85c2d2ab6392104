// Package retry holds the two halves of tandem's retry judgement: the schedule and the
// budget. The runtime consults both, for every retryable failure, whichever runtime ran
// the handler; a user configures them (tandem.Config.Retry, tandem.WithRetry,
// tandem.Config.RetryBudget) and rarely calls them directly.
//
// A schedule (Backoff) says how many deliveries an event gets and how long to wait
// between them: exponential growth, capped, with jitter so that events that failed
// together do not come back together. The failure's own Advice refines it: the failing
// side may ask for a delay, an earliest time or more attempts, and a Go handler may set a
// floor with Retry(after). A Backoff is a plain value: its methods never modify it and are
// safe for concurrent use.
//
// A budget (Budget) bounds retries across all events to a share of recent first
// deliveries plus a small floor per second, so that a failing dependency cannot turn every
// failure into a retry storm: when the budget refuses, the event is dead-lettered instead
// of retried. A Budget is shared by every route of a runtime and is safe for concurrent
// use by many goroutines.
//
// Both take the current time as an argument rather than reading a clock, so that tests
// drive them deterministically.
package retry
