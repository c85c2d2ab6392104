package tandem

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/engine"
)

// EventFrom returns the event a Go handler's context belongs to.
func EventFrom(ctx context.Context) (*Event, bool) {
	hc, ok := engine.FromContext(ctx)
	if !ok {
		return nil, false
	}
	return hc.Event(), true
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
// ev leaves them empty). ctx must be the handler's context. In a shadow's run (IsShadow) it
// emits nothing and returns nil: the primary's run sends the follow-ups.
func Emit(ctx context.Context, ev *Event) error {
	hc, ok := engine.FromContext(ctx)
	if !ok {
		return ErrNoHandlerContext
	}
	if hc.Shadow() {
		return nil
	}
	derive(hc.Event(), ev)
	if err := hc.Engine().Submit(ctx, ev, nil); err != nil {
		return fmt.Errorf("tandem: emit %q: %w", ev.Type, err)
	}
	return nil
}

// Call is request/reply from inside a handler: it routes ev (filled in as Emit does) and
// waits for its handler's reply, in either runtime. Release the Reply. Its errors are
// Runtime.Call's (ErrAbandoned when ctx ends after the event was accepted).
func Call(ctx context.Context, ev *Event) (Reply, error) {
	hc, ok := engine.FromContext(ctx)
	if !ok {
		return Reply{}, ErrNoHandlerContext
	}
	derive(hc.Event(), ev)
	return call(ctx, hc.Engine(), ev)
}

// InProgress tells the runtime that a Go handler is still working on its event: it pushes the
// event's deadline back to extend from now (never earlier than it was). It has no effect on an
// event without a deadline, and fails once the deadline has passed. ctx must be the handler's
// context. (A Rust handler calls Context::in_progress.)
func InProgress(ctx context.Context, extend time.Duration) error {
	hc, ok := engine.FromContext(ctx)
	if !ok {
		return ErrNoHandlerContext
	}
	return hc.InProgress(extend)
}

// Logger returns the runtime's logger with the fields of the event a Go handler's ctx belongs
// to (runtime, route, handler, event_id, correlation_id, trace_id, attempt: the fields Rust's
// records carry too); outside a handler, a no-op logger.
func Logger(ctx context.Context) *zap.Logger {
	hc, ok := engine.FromContext(ctx)
	if !ok {
		return zap.NewNop()
	}
	ev, rt := hc.Event(), hc.Route()
	correlation := ev.CorrelationID
	if correlation == "" {
		correlation = ev.ID
	}
	fields := []zap.Field{
		zap.String("runtime", "go"), zap.String("route", rt.Pattern), zap.String("handler", hc.Handler()),
		zap.String("event_id", ev.ID), zap.String("correlation_id", correlation), zap.Uint32("attempt", ev.Attempt),
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		fields = append(fields, zap.String("trace_id", sc.TraceID().String()))
	} else if len(ev.TraceParent) >= 35 {
		fields = append(fields, zap.String("trace_id", ev.TraceParent[3:35]))
	}
	return hc.Engine().Logger().With(fields...)
}

// IsShadow reports whether a Go handler's ctx is a shadow's run of an event (Runtime.Shadow):
// its result is compared with the primary's and discarded, and what it emits is discarded
// too. A handler may skip its other side effects then. False outside a handler.
func IsShadow(ctx context.Context) bool {
	hc, ok := engine.FromContext(ctx)
	return ok && hc.Shadow()
}
