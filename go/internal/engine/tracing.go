package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// tracing follows each event through both runtimes with OpenTelemetry spans named after the
// messaging semantic conventions: "publish {type}" (producer) when an event is accepted, and
// "process {type}" (consumer) around each delivery to a handler, in Go or in Rust. A Rust
// delivery's span is recorded when its completion arrives, with the start and end times Rust
// measured, so one trace shows the chain across both runtimes. The envelope carries the W3C
// trace context (traceparent, tracestate: the CloudEvents distributed tracing extension).
//
// With no TracerProvider configured, the tracer is nil and no method is called.

var traceContext propagation.TraceContext

// eventCarrier reads and writes an event's W3C trace context.
type eventCarrier struct{ ev *envelope.Event }

func (c eventCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.ev.TraceParent
	case "tracestate":
		return c.ev.TraceState
	}
	return ""
}

func (c eventCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.ev.TraceParent = value
	case "tracestate":
		c.ev.TraceState = value
	}
}

func (c eventCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

func eventAttributes(ev *envelope.Event, rt *Route, op string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "tandem"),
		attribute.String("messaging.operation.type", op),
		attribute.String("messaging.message.id", ev.ID),
		attribute.String("cloudevents.event_type", ev.Type),
		attribute.String("cloudevents.event_source", ev.Source),
	}
	if rt != nil {
		attrs = append(attrs, attribute.String("messaging.destination.name", rt.Pattern))
	}
	if ev.CorrelationID != "" {
		attrs = append(attrs, attribute.String("messaging.message.conversation_id", ev.CorrelationID))
	}
	return attrs
}

// publish records the producer span of an accepted event and writes its context into out,
// the copy of the event that travels. The parent is the caller's span (a handler emitting),
// else the trace context the event already carries.
func (o *observer) publish(ctx context.Context, rt *Route, ev, out *envelope.Event) trace.SpanContext {
	parent := ctx
	if !trace.SpanContextFromContext(ctx).IsValid() && ev.TraceParent != "" {
		parent = traceContext.Extract(ctx, eventCarrier{ev})
	}
	spanCtx, span := o.tracer.Start(parent, "publish "+ev.Type,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(eventAttributes(ev, rt, "publish")...))
	traceContext.Inject(spanCtx, eventCarrier{out})
	span.End()
	return span.SpanContext()
}

// startProcess starts the consumer span of a Go handler's delivery, child of the event's
// publish span; the returned context carries it to the handler (and to what it emits).
// A shadow's run (shadow.go) is a span of the primary's trace too, marked tandem.shadow.
func (o *observer) startProcess(ctx context.Context, rt *Route, handler string, shadow bool, ev *envelope.Event) (context.Context, trace.Span) {
	parent := traceContext.Extract(ctx, eventCarrier{ev})
	attrs := append(eventAttributes(ev, rt, "process"),
		attribute.String("tandem.runtime", "go"), attribute.String("tandem.handler", handler),
		attribute.Int64("tandem.attempt", int64(ev.Attempt)))
	if shadow {
		attrs = append(attrs, attribute.Bool("tandem.shadow", true))
	}
	return o.tracer.Start(parent, "process "+ev.Type, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// rustProcess records a Rust handler's delivery after the fact, with Rust's own times.
func (o *observer) rustProcess(parent trace.SpanContext, rt *Route, handler string, shadow bool, eventType string, attempt uint32, started time.Time) trace.Span {
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "tandem"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("cloudevents.event_type", eventType),
		attribute.String("tandem.runtime", "rust"),
		attribute.Int64("tandem.attempt", int64(attempt)),
	}
	if rt != nil {
		attrs = append(attrs, attribute.String("messaging.destination.name", rt.Pattern), attribute.String("tandem.handler", handler))
	}
	if shadow {
		attrs = append(attrs, attribute.Bool("tandem.shadow", true))
	}
	_, span := o.tracer.Start(ctx, "process "+eventType, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(started), trace.WithAttributes(attrs...))
	return span
}
