// Package tandem composes event handlers across a Go runtime and a Rust tokio runtime in one
// process. It is the package an application imports: a Runtime, the Event it routes, the
// Handler a Go route runs and the Result it returns, route options, and errors.
//
// Go hands each event to its route's handler, in either runtime. A Rust handler's event is
// encoded once (CBOR, package envelope) straight into a request slot in memory shared with
// Rust and published on a ring; its outcome comes back on another ring, and every buffer is
// handed back explicitly. A Go handler runs on its route's goroutine pool. Whatever ran it,
// an event's outcome is settled in one place: acknowledged (Receipt, Call), redelivered
// (package retry decides when), or dead-lettered (package deadletter).
//
// A route's handler can be moved while the runtime runs, between handlers in either runtime:
// Swap moves it, SetWeights splits it, Shadow compares another handler with it (targets.go).
// Events in flight finish where they are; retries go to the handler current at the retry.
//
// The packages beside this one are for those who configure or extend it: envelope (the wire
// format and the error-code vocabulary), deadletter (records and sinks), policy (circuit
// breaker, rate limit, deduplication, timeout) and retry (schedule and budget).
//
// A Runtime goes Registered (routes are added) → Running (Start) → Draining → Stopped
// (Shutdown). Every exported function and method is safe for concurrent use unless its
// documentation says otherwise.
package tandem
