package tandem

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/tandem/retry"
)

// Use adds global middleware, applied to every Go route's handler before the route's own
// middleware and policies (the first outermost). Call it before the routes it should wrap
// and before Start.
func (r *Runtime) Use(mw ...Middleware) {
	r.middleware = append(r.middleware, mw...)
}

// Handle routes events whose type matches pattern to the Go handler h, named name in logs,
// errors and dead letters. It runs on a goroutine pool of its own (WithWorkers), behind a
// bounded queue (WithQueue), wrapped by the global middleware, the route's middleware and its
// policies. A handler may implement Init(ctx) error, WarmUp(ctx) error and Close() error;
// Start and Shutdown call them. Routes are added before Start.
func (r *Runtime) Handle(pattern, name string, h Handler, opts ...RouteOption) error {
	if h == nil {
		return fmt.Errorf("%w: %q: nil handler", ErrInvalidRoute, pattern)
	}
	rt, err := r.newRoute(pattern, name, opts)
	if err != nil {
		return err
	}
	mw := append(append([]Middleware(nil), r.middleware...), rt.opts.middleware...)
	for _, p := range rt.opts.policies {
		mw = append(mw, p.Wrap)
	}
	rt.raw = h
	rt.goHandler = Chain(h, mw...)
	rt.pool = newWorkerPool(r, rt)
	if err := r.router.add(rt); err != nil {
		return err
	}
	r.pools = append(r.pools, rt.pool)
	return nil
}

// HandleRust routes events whose type matches pattern to the Rust handler registered (in the
// linked library) under rustType, whatever the event's own type: wildcards and aliases for
// Rust handlers. Every type the library registers is already routed to its handler exactly.
func (r *Runtime) HandleRust(pattern, rustType string, opts ...RouteOption) error {
	var index uint32
	for i, t := range r.types {
		if t == rustType {
			index = uint32(i) + 1
		}
	}
	if index == 0 {
		return fmt.Errorf("%w: %q: the Rust library registers no handler for it (it has %v)", ErrNoRoute, rustType, r.types)
	}
	rt, err := r.newRoute(pattern, rustType, opts)
	if err != nil {
		return err
	}
	rt.rustIndex = index
	return r.router.add(rt)
}

func (r *Runtime) newRoute(pattern, name string, opts []RouteOption) (*route, error) {
	if st := r.State(); st != Registered {
		return nil, fmt.Errorf("%w: routes are added before Start (state %s)", ErrInvalidRoute, st)
	}
	rt, err := parsePattern(pattern)
	if err != nil {
		return nil, err
	}
	rt.name = name
	if rt.name == "" {
		rt.name = pattern
	}
	for _, o := range opts {
		o(&rt.opts)
	}
	o := &rt.opts
	if o.minWorkers <= 0 {
		o.minWorkers = 1
	}
	if o.maxWorkers <= 0 {
		o.maxWorkers = max(o.minWorkers, 4*runtime.GOMAXPROCS(0))
	}
	if o.maxWorkers < o.minWorkers {
		return nil, fmt.Errorf("%w: %q: WithWorkers(%d, %d): max below min", ErrInvalidRoute, pattern, o.minWorkers, o.maxWorkers)
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
		return nil, fmt.Errorf("%w: %q: unknown overload policy %d", ErrInvalidRoute, pattern, int(o.overload))
	}
	return rt, nil
}

// backoff is the route's retry schedule.
func (rt *route) backoff(r *Runtime) retry.Backoff {
	if rt != nil && rt.opts.retry != nil {
		return rt.opts.retry.WithDefaults()
	}
	return r.retry
}

// rawHandler is the Go handler as registered, for its lifecycle methods.
func (rt *route) rawHandler() Handler { return rt.raw }

// closeHandlers calls Close on every Go handler that has one, once.
func (r *Runtime) closeHandlers() {
	for _, rt := range r.router.all {
		if c, ok := rt.raw.(interface{ Close() error }); ok {
			if err := c.Close(); err != nil && !errors.Is(err, context.Canceled) {
				r.log.Warn("tandem: closing a Go handler", zap.String("handler", rt.name), zap.Error(err))
			}
		}
	}
}
