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
//
// Most events of a service that samples are not sampled, and their spans record nothing:
// such an event pays for the sampler's decision and for the trace context it carries, not
// for the attributes. A span is started with its name (which names the event type) and kind,
// which is what the sampler sees, and gets its attributes only once it records; a Rust
// delivery's span that does not record is dropped at once. The span's name is made once per
// route and event type, not per event.

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

// spanNames are the names of an event type's spans.
type spanNames struct{ ty, publish, process string }

// namesOf returns the span names of event type ty, kept on rt (if any) for its next event of
// the same type: a route's events are mostly of one type.
func namesOf(rt *Route, ty string) *spanNames {
	if rt != nil {
		if n := rt.spanNames.Load(); n != nil && n.ty == ty {
			return n
		}
	}
	n := &spanNames{ty: ty, publish: "publish " + ty, process: "process " + ty}
	if rt != nil {
		rt.spanNames.Store(n)
	}
	return n
}

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
	spanCtx, span := o.tracer.Start(parent, namesOf(rt, ev.Type).publish, producer)
	if span.IsRecording() {
		span.SetAttributes(eventAttributes(ev, rt, "publish")...)
	}
	traceContext.Inject(spanCtx, eventCarrier{out})
	span.End()
	return span.SpanContext()
}

// The span kinds' options, made once.
var (
	producer = trace.WithSpanKind(trace.SpanKindProducer)
	consumer = trace.WithSpanKind(trace.SpanKindConsumer)
)

// startProcess starts the consumer span of a Go handler's delivery, child of the event's
// publish span; the returned context carries it to the handler (and to what it emits).
// A shadow's run (shadow.go) is a span of the primary's trace too, marked tandem.shadow.
func (o *observer) startProcess(ctx context.Context, rt *Route, handler string, shadow bool, ev *envelope.Event) (context.Context, trace.Span) {
	parent := traceContext.Extract(ctx, eventCarrier{ev})
	ctx, span := o.tracer.Start(parent, namesOf(rt, ev.Type).process, consumer)
	if span.IsRecording() {
		attrs := append(eventAttributes(ev, rt, "process"),
			attribute.String("tandem.runtime", "go"), attribute.String("tandem.handler", handler),
			attribute.Int64("tandem.attempt", int64(ev.Attempt)))
		if shadow {
			attrs = append(attrs, attribute.Bool("tandem.shadow", true))
		}
		span.SetAttributes(attrs...)
	}
	return ctx, span
}

// rustProcess records a Rust handler's delivery after the fact, with Rust's own times; nil
// when the span does not record.
func (o *observer) rustProcess(parent trace.SpanContext, rt *Route, handler string, shadow bool, eventType string, attempt uint32, started time.Time) trace.Span {
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	_, span := o.tracer.Start(ctx, namesOf(rt, eventType).process, consumer, trace.WithTimestamp(started))
	if !span.IsRecording() {
		return nil // its End would do nothing
	}
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
	span.SetAttributes(attrs...)
	return span
}
