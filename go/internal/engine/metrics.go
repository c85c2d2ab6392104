package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

// metrics records tandem's instruments through the OpenTelemetry metrics API. With no
// MeterProvider configured every method returns at once. Per-event recordings use attribute
// sets built once per route, so the hot path does not allocate for them.
//
// Instruments (all prefixed "tandem."):
//
//	events.submitted, events.acknowledged, events.retried, events.dead_lettered (+reason),
//	events.rejected (+reason)                          counters, by route and runtime
//	handler.duration, event.latency (submit → settle)   histograms in seconds
//	events.in_flight, ring.occupancy (+ring), wakeups (+side), buffers.outstanding (+kind),
//	workers (+route), breaker.state (+route; 0 closed, 1 half-open, 2 open),
//	crossings, completions.by_caller (crossing.go)
//	                                                     observed at each collection
type metrics struct {
	on                                           bool
	submitted, acknowledged, retried, dead, rejd metric.Int64Counter
	duration, latency                            metric.Float64Histogram
	reg                                          metric.Registration
}

// routeMetrics are a route's attribute sets, built once, held as option slices so that a
// recording passes them on without allocating.
type routeMetrics struct {
	add                       []metric.AddOption
	rec                       []metric.RecordOption
	ackRec, retryRec, termRec []metric.RecordOption
	deadReasons               map[deadletter.Reason][]metric.AddOption
}

func (o *observer) initMetrics(mp metric.MeterProvider) error {
	e := o.e
	m := mp.Meter(instrumentationName)
	var err error
	c := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var ctr metric.Int64Counter
		ctr, err = m.Int64Counter("tandem."+name, metric.WithDescription(desc), metric.WithUnit("{event}"))
		return ctr
	}
	o.metrics.submitted = c("events.submitted", "Events accepted for a route.")
	o.metrics.acknowledged = c("events.acknowledged", "Events whose handler acknowledged them (final).")
	o.metrics.retried = c("events.retried", "Redeliveries scheduled.")
	o.metrics.dead = c("events.dead_lettered", "Events dead-lettered.")
	o.metrics.rejd = c("events.rejected", "Events refused at submit.")
	if err != nil {
		return err
	}
	buckets := metric.WithExplicitBucketBoundaries(1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
		1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
	if o.metrics.duration, err = m.Float64Histogram("tandem.handler.duration", metric.WithUnit("s"),
		metric.WithDescription("One delivery's handler run, in either runtime."), buckets); err != nil {
		return err
	}
	if o.metrics.latency, err = m.Float64Histogram("tandem.event.latency", metric.WithUnit("s"),
		metric.WithDescription("From submit to the final outcome, retries included."), buckets); err != nil {
		return err
	}
	inflight, err1 := m.Int64ObservableGauge("tandem.events.in_flight", metric.WithDescription("Events accepted and not yet settled."))
	occupancy, err2 := m.Int64ObservableGauge("tandem.ring.occupancy", metric.WithDescription("Descriptors waiting in a ring."))
	wakeups, err3 := m.Int64ObservableCounter("tandem.wakeups",
		metric.WithDescription("Wake-ups of a parked thread: a poller by its eventfd (side go or rust), or a tokio worker for a task a crossing started (side tokio)."))
	outstanding, err4 := m.Int64ObservableGauge("tandem.buffers.outstanding", metric.WithDescription("Slots lent across the boundary."))
	workers, err5 := m.Int64ObservableGauge("tandem.workers", metric.WithDescription("Worker goroutines of a Go route."))
	breakers, err6 := m.Int64ObservableGauge("tandem.breaker.state", metric.WithDescription("Circuit breaker state: 0 closed, 1 half-open, 2 open."))
	crossings, err7 := m.Int64ObservableCounter("tandem.crossings",
		metric.WithDescription("Submission steps a submitter ran on its own thread instead of waking the parked Rust poller."))
	byCaller, err8 := m.Int64ObservableCounter("tandem.completions.by_caller",
		metric.WithDescription("Completions a submitter settled itself instead of waking the parked Go poller."))
	for _, e := range []error{err1, err2, err3, err4, err5, err6, err7, err8} {
		if e != nil {
			return e
		}
	}
	o.metrics.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := e.Stats()
		o.ObserveInt64(inflight, s.InFlight)
		o.ObserveInt64(occupancy, int64(s.Rust.SQDepth), metric.WithAttributes(attribute.String("ring", "submission")))
		o.ObserveInt64(occupancy, int64(s.Rust.CQDepth), metric.WithAttributes(attribute.String("ring", "completion")))
		o.ObserveInt64(wakeups, int64(s.RustWakeups), metric.WithAttributes(attribute.String("side", "rust")))
		o.ObserveInt64(wakeups, int64(s.Rust.GoWakeups), metric.WithAttributes(attribute.String("side", "go")))
		o.ObserveInt64(wakeups, int64(s.Rust.TaskWakes), metric.WithAttributes(attribute.String("side", "tokio")))
		o.ObserveInt64(crossings, int64(s.Crossings))
		o.ObserveInt64(byCaller, int64(s.CompletionsByCaller))
		o.ObserveInt64(outstanding, int64(s.Rust.RequestsHeld), metric.WithAttributes(attribute.String("kind", "request")))
		o.ObserveInt64(outstanding, int64(s.Rust.RepliesLent), metric.WithAttributes(attribute.String("kind", "reply")))
		for _, rt := range e.router.all {
			if rt.pool != nil {
				o.ObserveInt64(workers, int64(rt.pool.size()), metric.WithAttributes(attribute.String("route", rt.Pattern)))
			}
			if state, ok := rt.Gauges["breaker.state"]; ok {
				o.ObserveInt64(breakers, state(), metric.WithAttributes(attribute.String("route", rt.Pattern)))
			}
		}
		return nil
	}, inflight, occupancy, wakeups, outstanding, workers, breakers, crossings, byCaller)
	if err != nil {
		return err
	}
	o.metrics.on = true
	for _, rt := range e.router.all {
		rt.met = newRouteMetrics(rt)
	}
	return nil
}

func newRouteMetrics(rt *Route) *routeMetrics {
	runtime := rt.runtimeName()
	set := func(kv ...attribute.KeyValue) metric.MeasurementOption {
		base := []attribute.KeyValue{attribute.String("route", rt.Pattern), attribute.String("runtime", runtime)}
		return metric.WithAttributeSet(attribute.NewSet(append(base, kv...)...))
	}
	base := set()
	m := &routeMetrics{
		add:         []metric.AddOption{base},
		rec:         []metric.RecordOption{base},
		ackRec:      []metric.RecordOption{set(attribute.String("outcome", "ack"))},
		retryRec:    []metric.RecordOption{set(attribute.String("outcome", "retry"))},
		termRec:     []metric.RecordOption{set(attribute.String("outcome", "term"))},
		deadReasons: map[deadletter.Reason][]metric.AddOption{},
	}
	for _, reason := range []deadletter.Reason{deadletter.ReasonTerm, deadletter.ReasonMaxAttempts, deadletter.ReasonDecode, deadletter.ReasonNoRoute, deadletter.ReasonShed, deadletter.ReasonCancelled, deadletter.ReasonRetryBudget, deadletter.ReasonExpired} {
		m.deadReasons[reason] = []metric.AddOption{set(attribute.String("reason", string(reason)))}
	}
	return m
}

func (m *metrics) submit(rt *Route) {
	if m.on && rt != nil && rt.met != nil {
		m.submitted.Add(context.Background(), 1, rt.met.add...)
	}
}

func (m *metrics) retry(rt *Route) {
	if m.on && rt != nil && rt.met != nil {
		m.retried.Add(context.Background(), 1, rt.met.add...)
	}
}

func (m *metrics) deadLetter(rt *Route, reason deadletter.Reason) {
	if !m.on {
		return
	}
	if rt != nil && rt.met != nil {
		if opts, ok := rt.met.deadReasons[reason]; ok {
			m.dead.Add(context.Background(), 1, opts...)
			return
		}
	}
	m.dead.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", string(reason))))
}

func (m *metrics) reject(reason string) {
	if m.on {
		m.rejd.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
	}
}

// delivered records one handler run.
func (m *metrics) delivered(rt *Route, outcome Outcome, d time.Duration) {
	if !m.on || rt == nil || rt.met == nil {
		return
	}
	opts := rt.met.ackRec
	switch outcome {
	case OutcomeRetry:
		opts = rt.met.retryRec
	case OutcomeTerm:
		opts = rt.met.termRec
	}
	m.duration.Record(context.Background(), d.Seconds(), opts...)
}

// settled records an event's final outcome and its latency since submit (nanotime).
func (m *metrics) settled(rt *Route, acked bool, submittedAt int64) {
	if !m.on || rt == nil || rt.met == nil {
		return
	}
	if acked {
		m.acknowledged.Add(context.Background(), 1, rt.met.add...)
	}
	if submittedAt != 0 {
		m.latency.Record(context.Background(), time.Duration(nanotime()-submittedAt).Seconds(), rt.met.rec...)
	}
}
