package engine

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tandemrt/tandem/go/internal/perp"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

// metrics records tandem's instruments through the OpenTelemetry metrics API. With no
// MeterProvider configured every method returns at once. Per-event recordings use attribute
// sets built once per route, so the hot path does not allocate for them.
//
// Instruments (all prefixed "tandem."):
//
//	events.submitted, events.acknowledged, events.retried, events.dead_lettered (+reason),
//	events.rejected (+reason)                          counters, by route, target and runtime
//	handler.duration (+outcome, +role), event.latency   histograms in seconds, the same
//	shadow.results (+result: match, mismatch, dropped)  counter, by route and shadow target
//	events.in_flight, ring.occupancy (+ring), wakeups (+side), buffers.outstanding (+kind),
//	workers (+target), target.in_flight (+target, runtime),
//	breaker.state (+route; 0 closed, 1 half-open, 2 open),
//	crossings, completions.by_caller, runs (crossing.go)
//	                                                     observed at each collection
//
// The target is the handler a delivery went to (a route may have several: routing.go); an
// event's own counters (submitted, acknowledged, dead_lettered, latency) name the target of
// its first or last attempt. A shadow's runs are recorded in handler.duration only, with
// role "shadow", and in shadow.results: never as the route's events.
//
// The two counts every event makes, submitted and acknowledged, are tandem's own, per P
// (package perp), and observed at each collection: an SDK counter's Add looks its attribute
// set up in a map and offers the value to an exemplar reservoir, twice per event, where a P's
// count costs an add (docs/observability.md, "Cost"). The rarer counters, and the histograms
// (the API has no observable histogram), are recorded through the SDK as they happen.
type metrics struct {
	on                  bool
	retried, dead, rejd metric.Int64Counter
	shadows             metric.Int64Counter
	duration, latency   metric.Float64Histogram
	submitted, acked    metric.Int64ObservableCounter
	reg                 metric.Registration

	mu sync.Mutex
	// counted are the per-P counts of each attribute set, one per set (as an SDK counter has
	// one series per set), kept as long as the engine.
	counted map[attribute.Distinct]*eventCounts
}

// eventCounts are one attribute set's events submitted and acknowledged, per P.
type eventCounts struct {
	set   attribute.Set
	cells perp.Cells[eventCount]
}

type eventCount struct{ submitted, acked perp.Count }

// routeMetrics are the attribute sets of a route (with the side of the handler it was added
// with) or of a target on a route, built once, held as option slices so that a recording
// passes them on without allocating.
type routeMetrics struct {
	counts                    *eventCounts
	add                       []metric.AddOption
	shadowResults             map[string][]metric.AddOption
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
	o.metrics.retried = c("events.retried", "Redeliveries scheduled.")
	o.metrics.dead = c("events.dead_lettered", "Events dead-lettered.")
	o.metrics.rejd = c("events.rejected", "Events refused at submit.")
	o.metrics.shadows = c("shadow.results", "Shadow runs compared with their primary (match, mismatch), or dropped.")
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
	var err11, err12 error
	o.metrics.submitted, err11 = m.Int64ObservableCounter("tandem.events.submitted",
		metric.WithDescription("Events accepted for a route."), metric.WithUnit("{event}"))
	o.metrics.acked, err12 = m.Int64ObservableCounter("tandem.events.acknowledged",
		metric.WithDescription("Events whose handler acknowledged them (final)."), metric.WithUnit("{event}"))
	inflight, err1 := m.Int64ObservableGauge("tandem.events.in_flight", metric.WithDescription("Events accepted and not yet settled."))
	occupancy, err2 := m.Int64ObservableGauge("tandem.ring.occupancy", metric.WithDescription("Descriptors waiting in a ring."))
	wakeups, err3 := m.Int64ObservableCounter("tandem.wakeups",
		metric.WithDescription("Wake-ups of a parked thread: a poller by its eventfd (side go or rust), or a tokio worker for a task a crossing started (side tokio)."))
	outstanding, err4 := m.Int64ObservableGauge("tandem.buffers.outstanding", metric.WithDescription("Slots lent across the boundary."))
	workers, err5 := m.Int64ObservableGauge("tandem.workers", metric.WithDescription("Worker goroutines of a Go route."))
	breakers, err6 := m.Int64ObservableGauge("tandem.breaker.state", metric.WithDescription("Circuit breaker state: 0 closed, 1 half-open, 2 open."))
	targetInFlight, err9 := m.Int64ObservableGauge("tandem.target.in_flight",
		metric.WithDescription("Deliveries dispatched to a handler whose attempt has not ended (a removed handler drains to 0)."))
	crossings, err7 := m.Int64ObservableCounter("tandem.crossings",
		metric.WithDescription("Submission steps a submitter ran on its own thread instead of waking the parked Rust poller."))
	byCaller, err8 := m.Int64ObservableCounter("tandem.completions.by_caller",
		metric.WithDescription("Completions a submitter settled itself instead of waking the parked Go poller."))
	runs, err10 := m.Int64ObservableCounter("tandem.runs",
		metric.WithDescription("Crossings in which a Call ran its own event on its thread, past both rings."))
	for _, e := range []error{err1, err2, err3, err4, err5, err6, err7, err8, err9, err10, err11, err12} {
		if e != nil {
			return e
		}
	}
	met := &o.metrics
	met.counted = map[attribute.Distinct]*eventCounts{}
	o.metrics.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		met.observeCounts(o)
		s := e.Stats()
		o.ObserveInt64(inflight, s.InFlight)
		o.ObserveInt64(occupancy, int64(s.Rust.SQDepth), metric.WithAttributes(attribute.String("ring", "submission")))
		o.ObserveInt64(occupancy, int64(s.Rust.CQDepth), metric.WithAttributes(attribute.String("ring", "completion")))
		o.ObserveInt64(wakeups, int64(s.RustWakeups), metric.WithAttributes(attribute.String("side", "rust")))
		o.ObserveInt64(wakeups, int64(s.Rust.GoWakeups), metric.WithAttributes(attribute.String("side", "go")))
		o.ObserveInt64(wakeups, int64(s.Rust.TaskWakes), metric.WithAttributes(attribute.String("side", "tokio")))
		o.ObserveInt64(crossings, int64(s.Crossings))
		o.ObserveInt64(byCaller, int64(s.CompletionsByCaller))
		o.ObserveInt64(runs, int64(s.Rust.Runs))
		o.ObserveInt64(outstanding, int64(s.Rust.RequestsHeld), metric.WithAttributes(attribute.String("kind", "request")))
		o.ObserveInt64(outstanding, int64(s.Rust.RepliesLent), metric.WithAttributes(attribute.String("kind", "reply")))
		for _, t := range e.Targets() {
			attrs := metric.WithAttributes(attribute.String("target", t.Name), attribute.String("runtime", t.runtimeName()))
			if !t.rust {
				o.ObserveInt64(workers, int64(t.workers()), attrs)
			}
			o.ObserveInt64(targetInFlight, t.InFlight(), attrs)
		}
		for _, rt := range e.router.all {
			if state, ok := rt.Gauges["breaker.state"]; ok {
				o.ObserveInt64(breakers, state(), metric.WithAttributes(attribute.String("route", rt.Pattern)))
			}
		}
		return nil
	}, met.submitted, met.acked, inflight, occupancy, wakeups, outstanding, workers, breakers, crossings, byCaller, runs, targetInFlight)
	if err != nil {
		return err
	}
	o.metrics.on = true
	for _, rt := range e.router.all {
		rt.met = o.metrics.forRoute(rt, nil)
		for _, b := range rt.bindings {
			b.met = o.metrics.forRoute(rt, b)
		}
	}
	return nil
}

// observeCounts observes every attribute set's events submitted and acknowledged: a series
// from its first event on, as an SDK counter's.
func (m *metrics) observeCounts(o metric.Observer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.counted {
		opt := metric.WithAttributeSet(c.set)
		if n := perp.Sum(&c.cells, func(n *eventCount) *perp.Count { return &n.submitted }); n != 0 {
			o.ObserveInt64(m.submitted, n, opt)
		}
		if n := perp.Sum(&c.cells, func(n *eventCount) *perp.Count { return &n.acked }); n != 0 {
			o.ObserveInt64(m.acked, n, opt)
		}
	}
}

// countsOf returns the counts of set, made at its first use.
func (m *metrics) countsOf(set attribute.Set) *eventCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.counted[set.Equivalent()]
	if !ok {
		c = &eventCounts{set: set, cells: perp.Make[eventCount]()}
		m.counted[set.Equivalent()] = c
	}
	return c
}

// forRoute builds the sets of rt's target b, or of rt itself when b is nil.
func (m *metrics) forRoute(rt *Route, b *binding) *routeMetrics {
	base := []attribute.KeyValue{attribute.String("route", rt.Pattern), attribute.String("runtime", rt.runtimeName())}
	if b != nil {
		base = []attribute.KeyValue{attribute.String("route", rt.Pattern), attribute.String("runtime", b.target.runtimeName()),
			attribute.String("target", b.target.Name)}
		if b.shadow {
			base = append(base, attribute.String("role", "shadow"))
		}
	}
	set := func(kv ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(append([]attribute.KeyValue(nil), base...), kv...)...))
	}
	plainSet := attribute.NewSet(base...)
	plain := metric.WithAttributeSet(plainSet)
	r := &routeMetrics{
		counts:        m.countsOf(plainSet),
		add:           []metric.AddOption{plain},
		rec:           []metric.RecordOption{plain},
		ackRec:        []metric.RecordOption{set(attribute.String("outcome", "ack"))},
		retryRec:      []metric.RecordOption{set(attribute.String("outcome", "retry"))},
		termRec:       []metric.RecordOption{set(attribute.String("outcome", "term"))},
		deadReasons:   map[deadletter.Reason][]metric.AddOption{},
		shadowResults: map[string][]metric.AddOption{},
	}
	for _, res := range []string{"match", "mismatch", "dropped"} {
		r.shadowResults[res] = []metric.AddOption{set(attribute.String("result", res))}
	}
	for _, reason := range []deadletter.Reason{deadletter.ReasonTerm, deadletter.ReasonMaxAttempts, deadletter.ReasonDecode, deadletter.ReasonNoRoute, deadletter.ReasonShed, deadletter.ReasonCancelled, deadletter.ReasonRetryBudget, deadletter.ReasonExpired} {
		r.deadReasons[reason] = []metric.AddOption{set(attribute.String("reason", string(reason)))}
	}
	return r
}

func (m *metrics) submit(met *routeMetrics) {
	if m.on && met != nil {
		p := perp.Pin()
		met.counts.cells.At(p).submitted.Add(1)
		perp.Unpin(p)
	}
}

func (m *metrics) retry(met *routeMetrics) {
	if m.on && met != nil {
		m.retried.Add(context.Background(), 1, met.add...)
	}
}

// shadowResult counts a shadow's copy as matched, mismatched or dropped.
func (m *metrics) shadowResult(met *routeMetrics, result string) {
	if m.on && met != nil {
		m.shadows.Add(context.Background(), 1, met.shadowResults[result]...)
	}
}

func (m *metrics) deadLetter(met *routeMetrics, reason deadletter.Reason) {
	if !m.on {
		return
	}
	if met != nil {
		if opts, ok := met.deadReasons[reason]; ok {
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
func (m *metrics) delivered(met *routeMetrics, outcome Outcome, d time.Duration) {
	if !m.on || met == nil {
		return
	}
	opts := met.ackRec
	switch outcome {
	case OutcomeRetry:
		opts = met.retryRec
	case OutcomeTerm:
		opts = met.termRec
	}
	m.duration.Record(context.Background(), d.Seconds(), opts...)
}

// settled records an event's final outcome and its latency since submit (nanotime).
func (m *metrics) settled(met *routeMetrics, acked bool, submittedAt int64) {
	if !m.on || met == nil {
		return
	}
	if acked {
		p := perp.Pin()
		met.counts.cells.At(p).acked.Add(1)
		perp.Unpin(p)
	}
	if submittedAt != 0 {
		m.latency.Record(context.Background(), time.Duration(nanotime()-submittedAt).Seconds(), met.rec...)
	}
}
