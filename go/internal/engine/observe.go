package engine

import (
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

// instrumentationName names tandem's meter and tracer.
const instrumentationName = "github.com/tandemrt/tandem"

// observer is the one place the lifecycle is observed: the counters of Stats, the
// OpenTelemetry instruments (metrics.go) and the spans (tracing.go). Every lifecycle step
// calls one of its methods; none bumps a counter or an instrument by itself.
type observer struct {
	e *Engine

	cancels, retries, handBacks, emitted                   atomic.Uint64
	deadLetters, violations, rustWakeups, goParks, rescues atomic.Uint64
	// crossings counts submission steps run on a publisher's thread, and completions a
	// publisher settled itself (crossing.go): the engine's, counted per P. The process's count of calls into the library reads it until the runtime is
	// freed (fficalls.go).
	crossings *pair
	_         cacheLinePad // every event reads what follows

	metrics
	tracer trace.Tracer
}

func (o *observer) init(e *Engine) { o.e, o.crossings = e, &e.crossings }

// accepted: a new delivery entered intake (from any origin).
func (o *observer) accepted(d *Delivery) {
	o.stamp(d)
	o.count(d.metrics())
}

// stamp marks the delivery's intake time, for the latency histogram; before the delivery is
// handed on, since its handler may settle it at once.
func (o *observer) stamp(d *Delivery) {
	if o.metrics.on {
		d.submittedAt = nanotime()
	}
}

// count counts an event in on its route and target (met: the delivery's metrics, read
// before it was handed on); it reads nothing of the delivery, which a worker may own now.
// Stats' Submitted is the engine's tally.
func (o *observer) count(met *routeMetrics) { o.metrics.submit(met) }

// rejected: intake refused an event before it became a delivery.
func (o *observer) rejected(reason string) { o.metrics.reject(reason) }

// retried: a redelivery was scheduled.
func (o *observer) retried(d *Delivery) {
	o.retries.Add(1)
	o.metrics.retry(d.metrics())
}

// handedBack: a retry went back to the event's source, which redelivers it.
func (o *observer) handedBack(d *Delivery) {
	o.handBacks.Add(1)
	o.metrics.retry(d.metrics())
}

// cancelled: shutdown settled an event without an outcome of its own, as retryable. An
// event dead-lettered as cancelled counts in deadLettered instead, so each counts once.
func (o *observer) cancelled() { o.cancels.Add(1) }

// deadLettered: a delivery's outcome is a dead letter.
func (o *observer) deadLettered(d *Delivery, reason deadletter.Reason) {
	o.deadLetters.Add(1)
	if reason == deadletter.ReasonCancelled {
		o.cancelled()
	}
	if d.span != nil {
		d.span.AddEvent("tandem.dead_lettered", trace.WithAttributes(attribute.String("tandem.dead_letter.reason", string(reason))))
	}
	o.metrics.deadLetter(d.metrics(), reason)
	o.metrics.settled(d.metrics(), false, d.submittedAt)
}

// settled: a delivery's outcome is final and not a dead letter.
func (o *observer) settled(d *Delivery, acked bool) {
	o.metrics.settled(d.metrics(), acked, d.submittedAt)
}

// clock is the start of a Go handler's run, for delivered (nanotime; zero when metrics are
// off).
func (o *observer) clock() int64 {
	if o.metrics.on {
		return nanotime()
	}
	return 0
}

// delivered: a Go handler ran once, from start (clock).
func (o *observer) delivered(d *Delivery, outcome Outcome, start int64) {
	if o.metrics.on {
		o.metrics.delivered(d.metrics(), outcome, time.Duration(nanotime()-start))
	}
}

// rustDelivered: a Rust handler ran once, from started to finished (Unix ns); the span of
// that delivery is returned for the caller to end once its outcome is handled.
func (o *observer) rustDelivered(d *Delivery, outcome Outcome, started, finished uint64) trace.Span {
	if o.metrics.on {
		o.metrics.delivered(d.metrics(), outcome, time.Duration(finished-started))
	}
	if o.tracer == nil {
		return nil
	}
	return o.rustProcess(d.trace, d.route, d.handlerName(), d.probe != nil, d.typ, d.attempt, time.Unix(0, int64(started)))
}

// spanOutcome sets a delivery span's status from its outcome (f nil: acknowledged).
func (o *observer) spanOutcome(span trace.Span, f *Failure) {
	if span == nil || !span.IsRecording() {
		return
	}
	if f == nil {
		span.SetAttributes(attribute.String("tandem.outcome", "ack"))
		return
	}
	span.SetAttributes(attribute.String("tandem.outcome", f.Outcome.String()), attribute.String("error.type", f.Envelope.Code))
	span.SetStatus(codes.Error, f.Envelope.Code+": "+f.Envelope.Message)
}

func (o *observer) tracing() bool { return o.tracer != nil }

// timesRust says whether a Rust handler's start and end times are read: for the metrics'
// handler duration and the tracing spans. Without either Rust reads no clock for an event.
func (o *observer) timesRust() bool { return o.metrics.on || o.tracer != nil }

// close unregisters the metrics callback.
func (o *observer) close() {
	if o.metrics.reg != nil {
		o.metrics.reg.Unregister()
	}
}

// metrics are the attribute sets a delivery's recordings use: its target's on its route
// (route, target, runtime), or its route's when it reached no target.
func (d *Delivery) metrics() *routeMetrics {
	if d.bound != nil && d.bound.met != nil {
		return d.bound.met
	}
	if d.route != nil {
		return d.route.met
	}
	return nil
}

// nanotime is a monotonic clock reading in nanoseconds since monoBase, for the crossing's
// gap and the latency histogram. It reads the monotonic clock alone: time.Now reads the
// wall clock as well, a second vDSO call.
func nanotime() int64 { return runtimeNanotime() - monoBase }

// runtimeNanotime is the runtime's monotonic clock, the one time.Now's monotonic reading
// comes from. The runtime keeps this name and signature for packages that link to it
// (go.dev/issue/67401).
//
//go:linkname runtimeNanotime runtime.nanotime
func runtimeNanotime() int64

// monoBase is the process's first monotonic reading: nanotime counts from it.
var monoBase = runtimeNanotime()
