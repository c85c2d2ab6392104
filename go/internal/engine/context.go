package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// HandlerContext is the context a Go handler receives: its delivery's deadline and
// cancellation, plus the engine and the delivery, so the handler can compose (Emit, Call)
// and extend its deadline (InProgress). Safe for concurrent use.
type HandlerContext struct {
	context.Context
	e *Engine
	d *Delivery

	// With a deadline: a timer that cancels the context, which InProgress may push back.
	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	expired  atomic.Bool
}

type handlerContextKey struct{}

// FromContext returns the HandlerContext ctx comes from, if it comes from a Go handler's.
func FromContext(ctx context.Context) (*HandlerContext, bool) {
	hc, ok := ctx.Value(handlerContextKey{}).(*HandlerContext)
	return hc, ok
}

// Value serves FromContext without an allocation per event.
func (c *HandlerContext) Value(key any) any {
	if key == (handlerContextKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// Engine is the engine running the handler.
func (c *HandlerContext) Engine() *Engine { return c.e }

// Event is the event being handled.
func (c *HandlerContext) Event() *envelope.Event { return c.d.event }

// Route is the route being run.
func (c *HandlerContext) Route() *Route { return c.d.route }

// Handler names the handler being run: the target the delivery went to.
func (c *HandlerContext) Handler() string { return c.d.bound.target.Name }

// Shadow reports whether the delivery is a shadow's copy (shadow.go), whose result is only
// compared.
func (c *HandlerContext) Shadow() bool { return c.d.probe != nil }

// setDeadline makes the context end at d (its Err then reports DeadlineExceeded) and returns
// the function that releases the timer.
func (c *HandlerContext) setDeadline(d time.Time) (stop func()) {
	ctx, cancel := context.WithCancel(c.Context)
	c.Context, c.deadline = ctx, d
	c.timer = time.AfterFunc(time.Until(d), func() {
		c.expired.Store(true)
		cancel()
	})
	return func() {
		c.timer.Stop()
		cancel()
	}
}

// Deadline reports the current deadline, which InProgress may have pushed back.
func (c *HandlerContext) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer == nil {
		return c.Context.Deadline()
	}
	return c.deadline, true
}

// Err reports DeadlineExceeded once the deadline fired.
func (c *HandlerContext) Err() error {
	if c.expired.Load() {
		return context.DeadlineExceeded
	}
	return c.Context.Err()
}

// InProgress pushes the delivery's deadline back to extend from now (never earlier than it
// was). It has no effect without a deadline and fails once the deadline has passed.
func (c *HandlerContext) InProgress(extend time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer == nil {
		return nil
	}
	if c.expired.Load() {
		return context.DeadlineExceeded
	}
	if until := time.Now().Add(extend); until.After(c.deadline) {
		if !c.timer.Stop() {
			return context.DeadlineExceeded // fired while we were here
		}
		c.deadline = until
		c.timer.Reset(time.Until(until))
	}
	return nil
}
