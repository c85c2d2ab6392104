package tandem

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/tandemrt/tandem/go/internal/engine"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// A route binds an event-type pattern to one handler, in Go or in Rust, with its policies.
//
// Patterns are dot-separated segments. A segment "*" matches exactly one segment; a last
// segment ">" matches one or more. "order.created" is exact, "order.*" matches
// "order.created" but not "order.item.added", "order.>" matches both. An exact route wins;
// among wildcards the one with more literal segments wins, then one without ">", then the one
// registered first.

// routeOptions are a route's settings; zero fields take the runtime's.
type routeOptions struct {
	minWorkers, maxWorkers int
	queue                  int
	idle                   time.Duration
	timeout                time.Duration
	retry                  *retry.Backoff
	overload               OverloadPolicy
	overloadSet            bool
	middleware             []Middleware
	policies               []Policy
	callerRuns             bool
}

// RouteOption configures one route.
type RouteOption func(*routeOptions)

// WithWorkers sizes a Go route's goroutine pool: min workers always, up to max under load,
// shrinking back when they idle (defaults 1 and 4×GOMAXPROCS).
func WithWorkers(min, max int) RouteOption {
	return func(o *routeOptions) { o.minWorkers, o.maxWorkers = min, max }
}

// WithIdleTimeout sets how long a Go route's worker above the minimum may idle before it
// exits (default 10s).
func WithIdleTimeout(d time.Duration) RouteOption { return func(o *routeOptions) { o.idle = d } }

// WithQueue bounds a Go route's queue of events waiting for a worker (default 1024).
func WithQueue(n int) RouteOption { return func(o *routeOptions) { o.queue = n } }

// WithTimeout bounds each delivery: a Go handler's context is done after d; a Rust handler's
// delivery carries the deadline and its task is cancelled then. The outcome is a Retry with
// code "timeout" (so the retry schedule decides what follows), the same in both runtimes: a
// Go handler that ignores its context and returns after d has timed out whatever it returns,
// as a Rust handler's late result is never seen.
func WithTimeout(d time.Duration) RouteOption { return func(o *routeOptions) { o.timeout = d } }

// WithRetry sets the route's retry schedule (default Config.Retry).
func WithRetry(b retry.Backoff) RouteOption { return func(o *routeOptions) { o.retry = &b } }

// WithOverload sets what Submit does when the route is full: Block, Reject or Shed (default
// Config.Overload). A Go route is full when its queue is; a Rust route when every request
// slot is in flight.
func WithOverload(p OverloadPolicy) RouteOption {
	return func(o *routeOptions) { o.overload, o.overloadSet = p, true }
}

// WithCallerRuns lets a Call to this Go route run the handler on the calling goroutine,
// where it would otherwise hand the event to one of the route's workers and wait for it: no
// goroutine hop either way, which on a small machine is most of what a Call to a Go handler
// costs. It does so when the route's pool has room for one more worker (WithWorkers' max
// bounds the workers and the callers running the handler together), and a worker runs the
// event otherwise. Submit, retries and Rust handlers' calls go through the workers as
// always.
//
// What changes for such a Call: it returns when the handler does, with its outcome, even if
// its ctx ends first (the handler's context is the runtime's, as on a worker); and a handler
// that calls runtime.Goexit ends the caller's goroutine rather than a worker's.
func WithCallerRuns() RouteOption { return func(o *routeOptions) { o.callerRuns = true } }

// WithMiddleware wraps the route's Go handler, after the runtime's global middleware (Use).
func WithMiddleware(mw ...Middleware) RouteOption {
	return func(o *routeOptions) { o.middleware = append(o.middleware, mw...) }
}

// WithPolicy adds policies (see the policy package) to the route, in order. On a Go route
// they wrap the handler; on a Rust route they admit each event before it is published and
// learn its final outcome.
func WithPolicy(p ...Policy) RouteOption {
	return func(o *routeOptions) { o.policies = append(o.policies, p...) }
}

// Use adds global middleware, applied to every Go route's handler before the route's own
// middleware and policies (the first outermost). Call it before the routes it should wrap
// and before Start.
func (r *Runtime) Use(mw ...Middleware) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.middleware = append(r.middleware, mw...)
}

// Handle routes events whose type matches pattern to the Go handler h, registered under
// name (as Register does; default: the pattern), which names it in logs, errors, dead
// letters and route changes (GoTarget(name)). It runs on a goroutine pool of its own
// (WithWorkers), behind a bounded queue (WithQueue), wrapped by the global middleware, the
// route's middleware and its policies. A handler may implement Init(ctx) error, WarmUp(ctx)
// error and Close() error; Start and Shutdown call them, and so do route changes that open
// or drain it while running. Routes are added before Start.
func (r *Runtime) Handle(pattern, name string, h Handler, opts ...RouteOption) error {
	if h == nil {
		return fmt.Errorf("%w: %q: nil handler", ErrInvalidRoute, pattern)
	}
	if name == "" {
		name = pattern
	}
	rt, o, err := r.newRoute(pattern, name, opts)
	if err != nil {
		return err
	}
	if _, err := r.e.LookupRoute(pattern); err == nil {
		// Refused before the handler is registered, which would take its name.
		return fmt.Errorf("%w: %q is routed twice", ErrInvalidRoute, pattern)
	}
	t, err := r.register(name, h, o, nil)
	if err != nil {
		return err
	}
	r.bindRoute(rt, o)
	return r.e.AddRouteTo(rt, t)
}

// bindRoute gives rt the way it runs a Go target's handler: wrapped, outermost first, by the
// global middleware as it is now, the route's middleware and its policies (a shadow's copy
// passes no policy: a breaker or a deduplicator must not count it).
func (r *Runtime) bindRoute(rt *engine.Route, o *routeOptions) {
	r.mu.Lock()
	mw := append(append([]Middleware(nil), r.middleware...), o.middleware...)
	r.mu.Unlock()
	policies := make([]Middleware, 0, len(o.policies))
	for _, p := range o.policies {
		policies = append(policies, p.Wrap)
	}
	rt.Bind = func(t *engine.Target, shadow bool) engine.GoHandler {
		wrap := mw
		if !shadow {
			wrap = append(append([]Middleware(nil), mw...), policies...)
		}
		chained := Chain(r.goHandler(t.Name), wrap...)
		name := t.Name
		return func(ctx context.Context, ev *envelope.Event) engine.Result {
			return chained.Handle(ctx, ev).engine(name)
		}
	}
	if len(o.policies) > 0 {
		rt.Admit = admission(o.policies)
	}
}

// HandleRust routes events whose type matches pattern to the Rust handler registered (in the
// linked library) under rustType (RustTarget(rustType)), whatever the event's own type:
// wildcards and aliases for Rust handlers. Every type the library registers is already routed
// to its handler exactly. The route's policies admit each event before it is published; if
// the route is moved to a Go handler (Swap), they wrap that handler instead.
func (r *Runtime) HandleRust(pattern, rustType string, opts ...RouteOption) error {
	index := r.e.RustIndex(rustType)
	if index == 0 {
		return fmt.Errorf("%w: %q: the Rust library registers no handler for it (it has %v)", ErrNoRoute, rustType, r.e.RustTypes())
	}
	rt, o, err := r.newRoute(pattern, rustType, opts)
	if err != nil {
		return err
	}
	t, err := r.e.LookupTarget(true, rustType)
	if err != nil {
		return err
	}
	rt.RustIndex = index
	r.bindRoute(rt, o)
	return r.e.AddRouteTo(rt, t)
}

func (r *Runtime) newRoute(pattern, name string, opts []RouteOption) (*engine.Route, *routeOptions, error) {
	if st := r.State(); st != Registered {
		return nil, nil, fmt.Errorf("%w: routes are added before Start (state %s)", ErrInvalidRoute, st)
	}
	if err := engine.ParsePattern(pattern); err != nil {
		return nil, nil, err
	}
	o, err := r.options(pattern, opts)
	if err != nil {
		return nil, nil, err
	}
	rt := &engine.Route{
		Pattern: pattern, Name: name,
		Timeout: o.timeout, Retry: o.retry, Overload: engine.Overload(o.overload),
		MinWorkers: o.minWorkers, MaxWorkers: o.maxWorkers, Queue: o.queue, Idle: o.idle,
		Policies: len(o.policies) > 0, CallerRuns: o.callerRuns,
	}
	for _, p := range o.policies {
		if b, ok := p.(interface{ State() string }); ok {
			rt.Gauges = map[string]func() int64{"breaker.state": func() int64 { return breakerLevel(b.State()) }}
		}
	}
	return rt, o, nil
}

// options applies opts over the runtime's defaults and checks them; what names the route or
// handler in errors.
func (r *Runtime) options(what string, opts []RouteOption) (*routeOptions, error) {
	o := &routeOptions{}
	for _, opt := range opts {
		opt(o)
	}
	if o.minWorkers <= 0 {
		o.minWorkers = 1
	}
	if o.maxWorkers <= 0 {
		o.maxWorkers = max(o.minWorkers, 4*runtime.GOMAXPROCS(0))
	}
	if o.maxWorkers < o.minWorkers {
		return nil, fmt.Errorf("%w: %q: WithWorkers(%d, %d): max below min", ErrInvalidRoute, what, o.minWorkers, o.maxWorkers)
	}
	if o.queue <= 0 {
		o.queue = 1024
	}
	if o.idle <= 0 {
		o.idle = 10 * time.Second
	}
	if !o.overloadSet {
		o.overload = r.cfg.Overload
	}
	if o.overload != Block && o.overload != Reject && o.overload != Shed {
		return nil, fmt.Errorf("%w: %q: unknown overload policy %d", ErrInvalidRoute, what, int(o.overload))
	}
	return o, nil
}

// breakerLevel is a breaker's state as the breaker.state gauge reports it.
func breakerLevel(state string) int64 {
	switch state {
	case "half-open":
		return 1
	case "open":
		return 2
	}
	return 0
}

// admission runs a Rust route's policies before each event is published: each admits in
// order; on a refusal the policies that had admitted it learn the refusal (which is not a
// handler outcome). A duplicate is acknowledged without running the handler.
func admission(policies []Policy) engine.Admission {
	return func(ctx context.Context, ev *envelope.Event) (func(error), error) {
		dones := make([]func(error), 0, len(policies))
		finish := func(err error) {
			for _, d := range dones {
				d(err)
			}
		}
		for _, p := range policies {
			done, err := p.Admit(ctx, ev)
			if err != nil {
				finish(err)
				if isDuplicate(err) {
					return nil, engine.ErrAcked
				}
				return nil, err
			}
			if done != nil {
				dones = append(dones, done)
			}
		}
		return finish, nil
	}
}
