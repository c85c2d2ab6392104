package tandem

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

// tracing follows each event through both runtimes with OpenTelemetry spans named after the
// messaging semantic conventions: "publish {type}" (producer) when an event is accepted, and
// "process {type}" (consumer) around each delivery to a handler, in Go or in Rust. A Rust
// delivery's span is recorded when its completion arrives, with the start and end times Rust
// measured, so one trace shows the chain across both runtimes. The envelope carries the W3C
// trace context (traceparent, tracestate: the CloudEvents distributed tracing extension).
//
// With no TracerProvider configured, tracer is nil and every method returns at once.
type tracing struct {
	tracer trace.Tracer
}

var traceContext propagation.TraceContext

const tracerName = "github.com/tandemrt/tandem"

func (t *tracing) on() bool { return t.tracer != nil }

// eventCarrier reads and writes an event's W3C trace context.
type eventCarrier struct{ ev *Event }

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

func eventAttributes(ev *Event, rt *route, op string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "tandem"),
		attribute.String("messaging.operation.type", op),
		attribute.String("messaging.message.id", ev.ID),
		attribute.String("cloudevents.event_type", ev.Type),
		attribute.String("cloudevents.event_source", ev.Source),
	}
	if rt != nil {
		attrs = append(attrs, attribute.String("messaging.destination.name", rt.pattern))
	}
	if ev.CorrelationID != "" {
		attrs = append(attrs, attribute.String("messaging.message.conversation_id", ev.CorrelationID))
	}
	return attrs
}

// publish records the producer span of an accepted event and writes its context into out,
// the copy of the event that travels. The parent is the caller's span (a handler emitting),
// else the trace context the event already carries.
func (t *tracing) publish(ctx context.Context, rt *route, ev, out *Event) trace.SpanContext {
	parent := ctx
	if !trace.SpanContextFromContext(ctx).IsValid() && ev.TraceParent != "" {
		parent = traceContext.Extract(ctx, eventCarrier{ev})
	}
	spanCtx, span := t.tracer.Start(parent, "publish "+ev.Type,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(eventAttributes(ev, rt, "publish")...))
	traceContext.Inject(spanCtx, eventCarrier{out})
	span.End()
	return span.SpanContext()
}

// startProcess starts the consumer span of a Go handler's delivery, child of the event's
// publish span; the returned context carries it to the handler (and to what it emits).
func (t *tracing) startProcess(ctx context.Context, rt *route, ev *Event) (context.Context, trace.Span) {
	parent := traceContext.Extract(ctx, eventCarrier{ev})
	attrs := append(eventAttributes(ev, rt, "process"),
		attribute.String("tandem.runtime", "go"), attribute.String("tandem.handler", rt.name),
		attribute.Int64("tandem.attempt", int64(ev.Attempt)))
	return t.tracer.Start(parent, "process "+ev.Type, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// rustProcess records a Rust handler's delivery after the fact, with Rust's own times.
func (t *tracing) rustProcess(parent trace.SpanContext, rt *route, eventType string, attempt uint32, started time.Time) trace.Span {
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "tandem"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("cloudevents.event_type", eventType),
		attribute.String("tandem.runtime", "rust"),
		attribute.Int64("tandem.attempt", int64(attempt)),
	}
	if rt != nil {
		attrs = append(attrs, attribute.String("messaging.destination.name", rt.pattern), attribute.String("tandem.handler", rt.name))
	}
	_, span := t.tracer.Start(ctx, "process "+eventType, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(started), trace.WithAttributes(attrs...))
	return span
}

// outcome sets a delivery span's status from its outcome.
func spanOutcome(span trace.Span, he *HandlerError) {
	if he == nil {
		span.SetAttributes(attribute.String("tandem.outcome", "ack"))
		return
	}
	span.SetAttributes(attribute.String("tandem.outcome", he.Outcome.String()), attribute.String("error.type", he.Envelope.Code))
	span.SetStatus(codes.Error, he.Envelope.Code+": "+he.Envelope.Message)
}

// spanDeadLettered marks the delivery span of an event that was dead-lettered.
func spanDeadLettered(span trace.Span, reason deadletter.Reason) {
	if span != nil {
		span.AddEvent("tandem.dead_lettered", trace.WithAttributes(attribute.String("tandem.dead_letter.reason", string(reason))))
	}
}
