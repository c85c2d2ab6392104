package engine

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Shadow routing. A route's shadow target receives a copy of each of the route's events once
// the primary's outcome is final, runs it once, and its result is compared with the primary's
// and discarded. The shadow is outside the event's lifecycle: it is not counted as submitted
// or settled, never retried or dead-lettered, and the primary's outcome, retries and latency
// never wait for it. Between the two sits a bounded queue: when it is full the copy is
// dropped and counted.
//
// A shadow delivery takes a worker of its Go target's pool, or a request slot for a Rust
// target, only when one is free at once, and at most a quarter of the request slots at a
// time: it never makes a primary wait for room.

// ShadowResult is one side of a comparison: the outcome and reply of the primary's final
// settlement, or of the shadow's one run. A plain value.
type ShadowResult struct {
	Outcome Outcome
	// Code is the error envelope's code of a failure ("" for an Ack).
	Code string
	// Reply is an Ack's reply (nil when there is none).
	Reply []byte
}

// Comparator reports whether a shadow's result matches the primary's. It must be safe for
// concurrent use.
type Comparator func(primary, shadow ShadowResult) bool

// SameResult is the default Comparator: equal outcomes and byte-equal replies.
func SameResult(primary, shadow ShadowResult) bool {
	return primary.Outcome == shadow.Outcome && bytes.Equal(primary.Reply, shadow.Reply)
}

// ShadowOptions configure a route's shadow.
type ShadowOptions struct {
	// Queue bounds the copies waiting for the shadow (default 256).
	Queue int
	// Compare decides a match (default SameResult).
	Compare Comparator
	// LogEvery and LogBurst rate-limit the mismatches logged (default one a second, a burst
	// of 5); each logged mismatch shows both replies, up to SampleBytes each (default 512).
	LogEvery    time.Duration
	LogBurst    int
	SampleBytes int
}

// Mismatch is one sampled mismatch: the event and both results, replies cut to the
// configured sample size. A plain value.
type Mismatch struct {
	EventID, EventType string
	Target             string
	TargetRust         bool
	Primary, Shadow    ShadowResult
	At                 time.Time
}

// ShadowCounts are a route's shadow counters since it was added. Every copy offered ends as
// exactly one of matched, mismatched or dropped; the difference is in flight.
type ShadowCounts struct {
	Offered, Matched, Mismatched, Dropped uint64
	// Samples are the most recent mismatches, oldest first (at most mismatchSamples).
	Samples []Mismatch
}

// mismatchSamples bounds the mismatches a route keeps for ShadowCounts.
const mismatchSamples = 16

// shadowStats are a route's shadow counters, across the shadows it has had.
type shadowStats struct {
	offered, matched, mismatched, dropped atomic.Uint64
	mu                                    sync.Mutex
	samples                               []Mismatch // a ring, next at len % mismatchSamples
	next                                  int
}

func (s *shadowStats) sample(m Mismatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) < mismatchSamples {
		s.samples = append(s.samples, m)
		return
	}
	s.samples[s.next] = m
	s.next = (s.next + 1) % mismatchSamples
}

func (s *shadowStats) counts() ShadowCounts {
	c := ShadowCounts{Offered: s.offered.Load(), Matched: s.matched.Load(), Mismatched: s.mismatched.Load(), Dropped: s.dropped.Load()}
	s.mu.Lock()
	c.Samples = append(append([]Mismatch(nil), s.samples[s.next:]...), s.samples[:s.next]...)
	s.mu.Unlock()
	return c
}

// shadowRoute is a route's shadow while its table names it: the bound target, the queue and
// the goroutine that dispatches from it.
type shadowRoute struct {
	e       *Engine
	route   *Route
	bound   *binding
	compare Comparator
	limiter *rate.Limiter
	sample  int

	jobs    chan shadowJob
	mu      sync.Mutex
	stopped bool
	quit    chan struct{}
	done    chan struct{}
}

// shadowJob is a copy waiting for the shadow: the envelope's bytes, the primary's result,
// and the primary's publish span, which the shadow's run joins.
type shadowJob struct {
	env     []byte
	primary ShadowResult
	trace   trace.SpanContext
}

// probe marks a shadow delivery: the shadow it runs for, and the primary's result.
type probe struct {
	s       *shadowRoute
	primary ShadowResult
	rust    bool // holds one of the shadows' request slots
}

func newShadowRoute(e *Engine, rt *Route, b *binding, o ShadowOptions) *shadowRoute {
	if o.Queue <= 0 {
		o.Queue = 256
	}
	if o.Compare == nil {
		o.Compare = SameResult
	}
	if o.LogEvery <= 0 {
		o.LogEvery = time.Second
	}
	if o.LogBurst <= 0 {
		o.LogBurst = 5
	}
	if o.SampleBytes <= 0 {
		o.SampleBytes = 512
	}
	return &shadowRoute{e: e, route: rt, bound: b, compare: o.Compare, sample: o.SampleBytes,
		limiter: rate.NewLimiter(rate.Every(o.LogEvery), o.LogBurst),
		jobs:    make(chan shadowJob, o.Queue), quit: make(chan struct{}), done: make(chan struct{})}
}

// SetShadow gives the route a shadow target (nil removes it), in place of the one it has.
// Targets as Swap; the primary targets stay.
func (e *Engine) SetShadow(pattern string, t *Target, o ShadowOptions) error {
	return e.change(pattern, func(rt *Route, old *routing) (*routing, error) {
		next := *old
		next.shadow = nil
		if t != nil {
			if err := e.registered(t); err != nil {
				return nil, err
			}
			next.shadow = newShadowRoute(e, rt, rt.bindingOf(e, t, true), o)
		}
		return &next, nil
	})
}

// ShadowCounts are the route's shadow counters.
func (rt *Route) ShadowCounts() ShadowCounts { return rt.shadows.counts() }

func (s *shadowRoute) start() { go s.run() }

// stop ends the dispatcher; the copies still queued are dropped and counted.
func (s *shadowRoute) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	close(s.quit)
	s.mu.Unlock()
	<-s.done
	for {
		select {
		case <-s.jobs:
			s.drop()
		default:
			return
		}
	}
}

// drop counts a copy that will not run.
func (s *shadowRoute) drop() {
	s.route.shadows.dropped.Add(1)
	s.e.obs.metrics.shadowResult(s.bound.met, "dropped")
}

// offer queues a copy of a primary that settled with result p; d still holds its envelope.
func (s *shadowRoute) offer(d *Delivery, p ShadowResult) {
	s.route.shadows.offered.Add(1)
	if s.e.State() != Running {
		s.drop()
		return
	}
	job := shadowJob{env: s.e.envelopeCopy(d), primary: p, trace: d.trace}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		s.drop()
		return
	}
	select {
	case s.jobs <- job:
	default:
		s.drop()
	}
}

func (s *shadowRoute) run() {
	defer close(s.done)
	for {
		select {
		case job := <-s.jobs:
			if !s.dispatch(job) {
				s.drop()
			}
		case <-s.quit:
			return
		}
	}
}

// dispatch hands a copy to the shadow target if it has room now; false if not.
func (s *shadowRoute) dispatch(job shadowJob) bool {
	e := s.e
	if e.State() != Running {
		return false
	}
	ev, err := envelope.DecodeEvent(job.env)
	if err != nil {
		return false
	}
	t := s.bound.target
	s.bound.dispatch() // the shadow holds a reference to t until this goroutine ends: t is open
	if !t.rust {
		d := &Delivery{}
		d.reset(s.route, ev, nil)
		d.bound, d.counted = s.bound, true
		d.probe = &probe{s: s, primary: job.primary}
		d.event = ev
		d.nextDeadline()
		d.event.Attempt, d.event.Deadline = d.attempt, unixTime(d.deadline)
		if t.pool.Load().enqueue(context.Background(), d, Reject) != nil {
			s.bound.leave(e, false)
			return false
		}
		return true
	}
	if len(job.env) > e.cfg.MaxEventSize || e.shadowSlots.Add(1) > int64(max(1, e.cfg.MaxInFlight/4)) {
		e.shadowSlots.Add(-1)
		s.bound.leave(e, false)
		return false
	}
	idx, err := e.slots.acquire(context.Background(), Reject, e.closing)
	if err == nil && e.rustStopping.Load() {
		e.slots.free(idx)
		err = ErrClosed
	}
	if err != nil {
		e.shadowSlots.Add(-1)
		s.bound.leave(e, false)
		return false
	}
	d := &e.slots.table[idx].own
	d.reset(s.route, ev, nil)
	d.bound, d.counted = s.bound, true
	d.probe = &probe{s: s, primary: job.primary, rust: true}
	d.trace = job.trace
	d.slot, d.length = idx, uint32(len(append(e.slots.buffer(idx), job.env...)))
	d.nextDeadline()
	e.publish(d)
	return true
}

// shadowDone ends a shadow delivery's one run (f nil: acknowledged with reply): the result
// is compared with the primary's, counted, sampled, and everything it held is released.
func (e *Engine) shadowDone(d *Delivery, f *Failure, reply Reply) {
	// Everything is read before the slot is freed: the delivery may be a slot's own, which
	// the next submitter takes at once.
	p, b, id, typ := d.probe, d.bound, d.id, d.typ
	d.probe = nil
	if f == nil && d.counted {
		d.counted = false
		b.leave(e, true)
	}
	e.leaveTarget(d)
	got := ShadowResult{Reply: bytes.Clone(reply.data)}
	reply.Release()
	switch {
	case f == nil:
	case f.Outcome == OutcomeRetry:
		b.retried.Add(1)
	default:
		b.failed.Add(1)
	}
	if f != nil {
		got = ShadowResult{Outcome: f.Outcome, Code: f.Envelope.Code}
	}
	e.releaseDelivery(d)
	if p.rust {
		e.shadowSlots.Add(-1)
	}
	st := &p.s.route.shadows
	cut := f != nil && (f.Envelope.Code == envelope.CodeCancelled || f.Envelope.Code == envelope.CodeAbandoned) && e.State() != Running
	switch {
	case cut:
		// Shutdown cut the run short: no result to compare.
		st.dropped.Add(1)
		e.obs.metrics.shadowResult(b.met, "dropped")
	case p.s.compare(p.primary, got):
		st.matched.Add(1)
		e.obs.metrics.shadowResult(b.met, "match")
	default:
		st.mismatched.Add(1)
		e.obs.metrics.shadowResult(b.met, "mismatch")
		m := Mismatch{EventID: id, EventType: typ, Target: b.name(), TargetRust: b.target.rust,
			Primary: cutReply(p.primary, p.s.sample), Shadow: cutReply(got, p.s.sample), At: time.Now()}
		st.sample(m)
		if p.s.limiter.Allow() {
			e.log.Warn("tandem: shadow mismatch", zap.String("route", p.s.route.Pattern), zap.String("shadow", m.Target),
				zap.String("event_type", m.EventType), zap.String("event_id", m.EventID),
				zap.Stringer("primary_outcome", m.Primary.Outcome), zap.String("primary_code", m.Primary.Code),
				zap.ByteString("primary_reply", m.Primary.Reply),
				zap.Stringer("shadow_outcome", m.Shadow.Outcome), zap.String("shadow_code", m.Shadow.Code),
				zap.ByteString("shadow_reply", m.Shadow.Reply))
		}
	}
}

// cutReply bounds a sampled reply to n bytes.
func cutReply(r ShadowResult, n int) ShadowResult {
	if len(r.Reply) > n {
		r.Reply = r.Reply[:n:n]
	}
	return r
}

// primaryResult is what the primary's submitter learns, as a shadow is compared with it.
func primaryResult(f *Failure, reply []byte) ShadowResult {
	if f == nil {
		return ShadowResult{Outcome: OutcomeAck, Reply: bytes.Clone(reply)}
	}
	return ShadowResult{Outcome: f.Outcome, Code: f.Envelope.Code}
}
