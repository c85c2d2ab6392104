package tandem

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// handlerContext is the context a Go handler receives: its deadline and cancellation, plus the
// runtime and the event being handled, so the handler can compose (Emit, Call).
type handlerContext struct {
	context.Context
	r     *Runtime
	ev    *Event
	route *route

	// With a deadline: a timer that cancels the context, which InProgress may push back.
	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	expired  atomic.Bool
}

// setDeadline makes the context end at d (its Err then reports DeadlineExceeded) and returns
// the function that releases the timer.
func (c *handlerContext) setDeadline(d time.Time) (stop func()) {
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
func (c *handlerContext) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer == nil {
		return c.Context.Deadline()
	}
	return c.deadline, true
}

// Err reports DeadlineExceeded once the deadline fired.
func (c *handlerContext) Err() error {
	if c.expired.Load() {
		return context.DeadlineExceeded
	}
	return c.Context.Err()
}

type handlerContextKey struct{}

// Value serves EventFrom and the composition functions without an allocation per event.
func (c *handlerContext) Value(key any) any {
	if key == (handlerContextKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func fromContext(ctx context.Context) (*handlerContext, bool) {
	hc, ok := ctx.Value(handlerContextKey{}).(*handlerContext)
	return hc, ok
}

// EventFrom returns the event a Go handler's context belongs to.
func EventFrom(ctx context.Context) (*Event, bool) {
	hc, ok := fromContext(ctx)
	if !ok {
		return nil, false
	}
	return hc.ev, true
}

// derive makes child a follow-up of parent: it carries the parent's correlation id (or the
// parent's id when it has none), names the parent as its cause, and continues its trace.
// Fields the child already set are kept.
func derive(parent, child *Event) {
	if child.CorrelationID == "" {
		child.CorrelationID = parent.CorrelationID
		if child.CorrelationID == "" {
			child.CorrelationID = parent.ID
		}
	}
	if child.CausationID == "" {
		child.CausationID = parent.ID
	}
	if child.TraceParent == "" {
		child.TraceParent, child.TraceState = parent.TraceParent, parent.TraceState
	}
}

// Emit routes a follow-up event from inside a handler, to a handler in either runtime, like a
// submitted one: retries and dead letters apply, and nobody waits for it. It fills in
// CorrelationID, CausationID, TraceParent and TraceState from the event being handled (when
// ev leaves them empty). ctx must be the handler's context.
func Emit(ctx context.Context, ev *Event) error {
	hc, ok := fromContext(ctx)
	if !ok {
		return ErrNoHandlerContext
	}
	derive(hc.ev, ev)
	if err := hc.r.submit(ctx, ev, nil); err != nil {
		return fmt.Errorf("tandem: emit %q: %w", ev.Type, err)
	}
	return nil
}

// Call is request/reply from inside a handler: it routes ev (filled in as Emit does) and
// waits for its handler's reply, in either runtime. Release the Reply.
func Call(ctx context.Context, ev *Event) (Reply, error) {
	hc, ok := fromContext(ctx)
	if !ok {
		return Reply{}, ErrNoHandlerContext
	}
	derive(hc.ev, ev)
	return hc.r.Call(ctx, ev)
}

// InProgress tells the runtime that a Go handler is still working on its event: it pushes the
// event's deadline back to extend from now (never earlier than it was). It has no effect on an
// event without a deadline, and fails once the deadline has passed. ctx must be the handler's
// context. (A Rust handler calls Context::in_progress.)
func InProgress(ctx context.Context, extend time.Duration) error {
	hc, ok := fromContext(ctx)
	if !ok {
		return ErrNoHandlerContext
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.timer == nil {
		return nil
	}
	if hc.expired.Load() {
		return context.DeadlineExceeded
	}
	if until := time.Now().Add(extend); until.After(hc.deadline) {
		if !hc.timer.Stop() {
			return context.DeadlineExceeded // fired while we were here
		}
		hc.deadline = until
		hc.timer.Reset(time.Until(until))
	}
	return nil
}
