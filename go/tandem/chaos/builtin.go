package chaos

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/policy"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// Faults switches the Builtin scenario's faults on, each with a rate: the share (0..1) of
// the scenario's events that carry it; the rest is healthy traffic to Go and Rust handlers.
// The zero value is healthy traffic only. A plain value.
type Faults struct {
	// GoPanic: a Go handler panics (settled as a terminal "panic" failure, dead-lettered).
	GoPanic float64
	// GoExit: a Go handler calls runtime.Goexit ("goexit", retried, then dead-lettered).
	GoExit float64
	// RustPanic: a Rust handler panics (demo.panic; contained, dead-lettered).
	RustPanic float64
	// Slow: a handler overstays its route's timeout (WithTimeout), in Go (ignoring its
	// context) and in Rust (demo.sleep, cancelled at its deadline): "timeout", retried,
	// then dead-lettered.
	Slow float64
	// RetryStorm: a Rust handler that asks for a retry on every delivery (demo.flaky), with
	// a schedule of many fast attempts, against the runtime's retry budget.
	RetryStorm float64
	// Overload: events to small routes, one per overload policy (Block, Reject, Shed) in
	// each runtime: a Go route with a short queue and one worker, and Rust routes to
	// demo.sleep, which hold request slots (size Config.MaxInFlight small to see them fill).
	Overload float64
	// Breaker: events to routes behind a circuit breaker (policy.NewBreaker) whose handler
	// fails often enough to trip it, in Go and in Rust (demo.fail).
	Breaker float64
	// CancelSubmit: Submits to the blocking Go route whose context ends within 3 ms.
	CancelSubmit float64
	// CancelCall: Calls whose context ends within 5 ms: to the blocking Go overload route
	// (the context may end before the event is accepted or after), and to a Go route and a
	// Rust route (demo.sleep) that reject when full.
	CancelCall float64
}

// AllFaults switches every fault of the Builtin scenario on at rates that keep most traffic
// healthy, so every fault is seen within seconds at a few hundred events per second.
func AllFaults() Faults {
	return Faults{GoPanic: 0.02, GoExit: 0.02, RustPanic: 0.02, Slow: 0.01, RetryStorm: 0.03,
		Overload: 0.18, Breaker: 0.05, CancelSubmit: 0.04, CancelCall: 0.04}
}

// The Builtin scenario's route timeouts and schedules: short, so a fault settles within
// milliseconds and a run of seconds sees many.
const (
	builtinTimeout = 20 * time.Millisecond
	// overloadWork is how long a Go overload route's handler takes: each route serves 50
	// events/s, which the square profile's bursts at 10× -rate exceed.
	overloadWork = 20 * time.Millisecond
	// overloadSleep is how long a Rust overload route's handler holds its request slot (the
	// demo.sleep extension, ms): bursts then take every slot of a small Config.MaxInFlight.
	overloadSleep = "200"
)

var (
	shortRetry = retry.Backoff{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond}
	stormRetry = retry.Backoff{MaxAttempts: 25, Initial: time.Millisecond, Max: 4 * time.Millisecond, Jitter: 1}
)

// Builtin is tandem's own chaos scenario: Go routes (chaos.go.*), Rust routes to the bundled
// demo handlers (demo.*, and chaos.rust.* aliases of them with their own options), and the
// faults f switches on. It needs the demo handlers of the bundled library (rust/tandem-native).
// docs/chaos.md lists its routes.
func Builtin(f Faults) Scenario {
	healthy := 1 - (f.GoPanic + f.GoExit + f.RustPanic + f.Slow + f.RetryStorm + f.Overload + f.Breaker + f.CancelSubmit + f.CancelCall)
	healthy = max(healthy, 0)
	ev := func(typ, data string, ext ...string) func(*rand.Rand) tandem.Event {
		var m map[string]string
		if len(ext) > 0 {
			m = make(map[string]string, len(ext)/2)
			for i := 0; i+1 < len(ext); i += 2 {
				m[ext[i]] = ext[i+1]
			}
		}
		return func(*rand.Rand) tandem.Event { return tandem.Event{Type: typ, Data: []byte(data), Extensions: m} }
	}
	goFault := func(fault Fault) func(*rand.Rand) tandem.Event {
		return ev("chaos.go.work", "x", FaultExtension, string(fault))
	}
	breakerEvent := func(typ, fail string) func(*rand.Rand) tandem.Event {
		return func(rng *rand.Rand) tandem.Event {
			data := "ok"
			if rng.Float64() < 0.7 {
				data = fail
			}
			return tandem.Event{Type: typ, Data: []byte(data)}
		}
	}
	traffic := []Traffic{
		{Name: "go ack (Submit)", Weight: healthy * 0.3, Event: ev("chaos.go.work", "x")},
		{Name: "go ack (Call)", Weight: healthy * 0.1, Event: ev("chaos.go.work", "x"), Call: true, ReplyIsData: true},
		{Name: "rust echo (Call)", Weight: healthy * 0.25, Event: ev("demo.echo", "hello"), Call: true, ReplyIsData: true},
		{Name: "rust noop (Submit)", Weight: healthy * 0.2, Event: ev("demo.noop", "")},
		{Name: "rust hash (Call)", Weight: healthy * 0.15, Event: ev("demo.hash", "payload", "rounds", "4"), Call: true},

		{Name: "go panic", Weight: f.GoPanic, Event: goFault(FaultPanic), Fault: FaultPanic},
		{Name: "go goexit", Weight: f.GoExit, Event: goFault(FaultGoexit), Fault: FaultGoexit},
		{Name: "rust panic", Weight: f.RustPanic, Event: ev("demo.panic", "panic")},
		{Name: "go slow past timeout", Weight: f.Slow / 2, Event: goFault(FaultSlow), Fault: FaultSlow},
		{Name: "rust slow past timeout", Weight: f.Slow / 2, Event: ev("chaos.rust.slow", "", "sleep_ms", "60")},
		{Name: "rust retry storm", Weight: f.RetryStorm, Event: ev("chaos.rust.storm", "", "succeed_at", "1000")},
		{Name: "go overload Block", Weight: f.Overload / 6, Event: ev("chaos.go.block", "")},
		{Name: "go overload Reject", Weight: f.Overload / 6, Event: ev("chaos.go.reject", "")},
		{Name: "go overload Shed", Weight: f.Overload / 6, Event: ev("chaos.go.shed", "")},
		{Name: "rust overload Block", Weight: f.Overload / 6, Event: ev("chaos.rust.block", "", "sleep_ms", overloadSleep)},
		{Name: "rust overload Reject", Weight: f.Overload / 6, Event: ev("chaos.rust.reject", "", "sleep_ms", overloadSleep)},
		{Name: "rust overload Shed", Weight: f.Overload / 6, Event: ev("chaos.rust.shed", "", "sleep_ms", overloadSleep)},
		{Name: "go breaker", Weight: f.Breaker / 2, Event: breakerEvent("chaos.go.breaker", "fail")},
		{Name: "rust breaker", Weight: f.Breaker / 2, Event: breakerEvent("chaos.rust.breaker", "term")},
		{Name: "cancel at Submit", Weight: f.CancelSubmit, Event: ev("chaos.go.block", ""),
			Cancel: 1, CancelWithin: 3 * time.Millisecond},
		{Name: "cancel at Call (go Block)", Weight: f.CancelCall / 3, Event: ev("chaos.go.block", ""), Call: true,
			Cancel: 1, CancelWithin: 5 * time.Millisecond},
		{Name: "cancel at Call (go Reject)", Weight: f.CancelCall / 3, Event: ev("chaos.go.call", ""), Call: true,
			Cancel: 1, CancelWithin: 5 * time.Millisecond},
		{Name: "cancel at Call (rust)", Weight: f.CancelCall / 3, Event: ev("chaos.rust.call", "", "sleep_ms", "3"), Call: true,
			Cancel: 1, CancelWithin: 5 * time.Millisecond},
	}
	kept := traffic[:0]
	for _, t := range traffic {
		if t.Weight > 0 {
			kept = append(kept, t)
		}
	}
	return Scenario{Name: "builtin", Setup: setupBuiltin, Traffic: kept}
}

// setupBuiltin registers the Builtin scenario's routes on rt.
func setupBuiltin(rt *tandem.Runtime) error {
	work := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		return tandem.AckReply(ev.Data)
	})
	// sleeper works for d or until its context ends, as a well-behaved handler does.
	sleeper := func(d time.Duration) tandem.Handler {
		return tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
			select {
			case <-time.After(d):
				return tandem.Ack()
			case <-ctx.Done():
				return tandem.Retry(0, ctx.Err())
			}
		})
	}
	breakerSettings := policy.BreakerSettings{ConsecutiveFailures: 3, Timeout: 100 * time.Millisecond}
	failing := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		if string(ev.Data) == "fail" {
			return tandem.Term(tandem.Errorf("unavailable", "asked to fail"))
		}
		return tandem.Ack()
	})
	steps := []func() error{
		func() error {
			return rt.Handle("chaos.go.work", "chaos-work", work, tandem.WithMiddleware(Inject),
				tandem.WithTimeout(builtinTimeout), tandem.WithRetry(shortRetry), tandem.WithWorkers(2, 16))
		},
		func() error {
			return rt.HandleRust("chaos.rust.slow", "demo.sleep", tandem.WithTimeout(builtinTimeout), tandem.WithRetry(shortRetry))
		},
		func() error { return rt.HandleRust("chaos.rust.storm", "demo.flaky", tandem.WithRetry(stormRetry)) },
		func() error { return overloadGo(rt, "chaos.go.block", sleeper(overloadWork), tandem.Block) },
		func() error { return overloadGo(rt, "chaos.go.reject", sleeper(overloadWork), tandem.Reject) },
		func() error { return overloadGo(rt, "chaos.go.shed", sleeper(overloadWork), tandem.Shed) },
		func() error {
			return rt.HandleRust("chaos.rust.block", "demo.sleep", tandem.WithOverload(tandem.Block))
		},
		func() error {
			return rt.HandleRust("chaos.rust.reject", "demo.sleep", tandem.WithOverload(tandem.Reject))
		},
		func() error { return rt.HandleRust("chaos.rust.shed", "demo.sleep", tandem.WithOverload(tandem.Shed)) },
		func() error {
			return rt.Handle("chaos.go.breaker", "chaos-breaker", failing, tandem.WithRetry(shortRetry),
				tandem.WithPolicy(policy.NewBreaker("chaos-go", breakerSettings)))
		},
		func() error {
			return rt.HandleRust("chaos.rust.breaker", "demo.fail", tandem.WithRetry(shortRetry),
				tandem.WithPolicy(policy.NewBreaker("chaos-rust", breakerSettings)))
		},
		func() error {
			return rt.Handle("chaos.go.call", "chaos-call", sleeper(3*time.Millisecond), tandem.WithOverload(tandem.Reject),
				tandem.WithWorkers(1, 8))
		},
		func() error {
			return rt.HandleRust("chaos.rust.call", "demo.sleep", tandem.WithOverload(tandem.Reject))
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// overloadGo registers a Go route of one worker behind a queue of 2 events: past about
// 1/overloadWork events per second it is full and its policy decides.
func overloadGo(rt *tandem.Runtime, typ string, h tandem.Handler, p tandem.OverloadPolicy) error {
	return rt.Handle(typ, typ, h, tandem.WithOverload(p), tandem.WithQueue(2), tandem.WithWorkers(1, 1),
		tandem.WithRetry(shortRetry))
}

// builtinCapacity is the Builtin scenario's nominal capacity on a small machine, in events
// per second: what the command's -rate defaults to.
const builtinCapacity = 400
