package engine

import (
	"bytes"
	"context"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tandemrt/tandem/go/internal/perp"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// noSlot marks a delivery whose envelope is not in a request slot.
const noSlot = ^uint32(0)

// Delivery is one event on its way to its route's handler, attempt after attempt, until its
// outcome is final. Every event, whatever its origin, is one Delivery with one settle path:
// acked, failed (retry judgement, redelivery, dead letter) and finish.
//
// The envelope is immutable from intake to settlement: it lives in a request slot (a Rust
// route), in Go memory as bytes (a Rust route's event before it has a slot), or as an owned
// Event (a Go route). Per-delivery facts (attempt, deadline) live here and travel beside the
// envelope: in the slot's delivery header for Rust, in the handler's view for Go.
//
// A Delivery is owned by exactly one party at a time (the submitter while it is built, the
// ring and then the completion poller, a Go worker, the retry table, the dispatch queue),
// handed over through channels and the ring's release/acquire, so its fields need no lock.
type Delivery struct {
	route *Route
	// bound is the target of the current (or last) attempt, picked from the route's table
	// at its dispatch; counted is true while that attempt is counted in the target's
	// in-flight count (routing.go).
	bound   *binding
	counted bool
	// key picks a sticky split's target: the partition key, or the event's id.
	key string
	// shadow is the route's shadow when the event was accepted: it gets a copy once the
	// outcome is final. probe marks a shadow's own delivery (shadow.go).
	shadow *shadowRoute
	probe  *probe
	// attempt is this delivery's number, from 1; limit the last one a handler's retry advice
	// allows (0: the route's schedule decides); ceiling the last one its source redelivers
	// (0: none).
	attempt, limit, ceiling uint32
	// firstAttempt is the attempt the event came with (restored in its dead letter).
	firstAttempt uint32
	// eventDeadline is the event's own deadline, deadline this delivery's (Unix ns; 0: none).
	eventDeadline, deadline int64

	id, source, typ string

	slot   uint32 // the request slot holding the envelope, or noSlot
	length uint32 // the envelope's length in the slot
	raw    []byte // the envelope in Go memory while no slot holds it
	event  *envelope.Event

	waiter Waiter
	waited bool // the waiter is Blocking
	done   func(error)

	trace       trace.SpanContext // the publish span, parent of each delivery's span
	span        trace.Span        // the current delivery's span while its outcome is handled
	submittedAt int64             // nanotime at intake, for the latency histogram (0: metrics off)

	// first is the handler's context of a Go delivery's first attempt, allocated with the
	// delivery (goDelivery); nil once taken, or for a delivery made otherwise.
	first *HandlerContext
}

// goDelivery is a Go route's delivery with what its first attempt needs, in one allocation:
// the copied event and the handler's context. A later attempt gets a context of its own: a
// handler may keep the one it was given past its return.
type goDelivery struct {
	Delivery
	event envelope.Event
	hc    HandlerContext
}

// newGoDelivery returns a delivery of ev (copied) for a Go route, readied as reset does.
func newGoDelivery(rt *Route, ev *envelope.Event, w Waiter) *Delivery {
	g := &goDelivery{}
	d := &g.Delivery
	d.reset(rt, ev, w)
	g.event = cloneEvent(ev)
	d.event, d.first = &g.event, &g.hc
	return d
}

// reset readies a delivery for a new event, keeping nothing of the last one.
func (d *Delivery) reset(rt *Route, ev *envelope.Event, w Waiter) {
	*d = Delivery{route: rt, slot: noSlot, waiter: w}
	_, d.waited = w.(Blocking)
	if r, ok := w.(Redelivering); ok {
		d.ceiling = r.LastAttempt()
	}
	d.firstAttempt = ev.Attempt
	d.attempt = max(ev.Attempt, 1)
	d.id, d.source, d.typ = ev.ID, ev.Source, ev.Type
	d.key = ev.PartitionKey
	if d.key == "" {
		d.key = ev.ID
	}
	if !ev.Deadline.IsZero() {
		d.eventDeadline = ev.Deadline.UnixNano()
	}
}

// nextDeadline sets the deadline of the delivery about to start: the event's own, brought
// forward to the route's timeout from now. It reads the clock only for a route with a
// timeout.
func (d *Delivery) nextDeadline() {
	d.deadline = d.eventDeadline
	if d.route != nil && d.route.Timeout > 0 {
		if t := time.Now().Add(d.route.Timeout).UnixNano(); d.deadline == 0 || t < d.deadline {
			d.deadline = t
		}
	}
}

// accepted counts a new delivery in: from here it is pending until final.
func (e *Engine) accepted(d *Delivery) {
	e.obs.accepted(d)
	e.countIn()
}

// countIn counts an event in, pending, and every depositEvery events a P counts in deposits
// those submitted into the retry budget.
func (e *Engine) countIn() {
	if e.events.in()%depositEvery == 0 {
		e.depositSubmitted()
	}
}

// depositEvery is how many events a P submits between two deposits into the retry budget:
// the clock is read, and the budget's words written, once per depositEvery events, not once
// per event.
const depositEvery = 64

// depositSubmitted deposits into the retry budget the events submitted since its last
// deposit, one each: the budget earns retries from first deliveries. They are dated now,
// at most depositEvery events per P late, and every withdrawal deposits first (judge): the
// budget a retry asks has every event submitted before it, each counting for a little
// longer than it would with a deposit of its own.
func (e *Engine) depositSubmitted() {
	e.depositMu.Lock()
	submitted, _, _ := e.events.read()
	if submitted > e.deposited {
		e.budget.DepositN(time.Now(), submitted-e.deposited)
	}
	e.deposited = max(e.deposited, submitted)
	e.depositMu.Unlock()
}

// bind makes b the target of the delivery's attempt, counted in flight there by choose.
func (d *Delivery) bind(b *binding) { d.bound, d.counted = b, true }

// leaveTarget ends the delivery's attempt at its target: every attempt's outcome passes
// here once (acked, failed, settled as retryable or dead-lettered), whatever ends it.
func (e *Engine) leaveTarget(d *Delivery) {
	if d.counted {
		d.counted = false
		d.bound.leave(e, false)
	}
}

// handlerName names the handler of the delivery's last attempt, or its route's now.
func (d *Delivery) handlerName() string {
	if d.bound != nil {
		return d.bound.target.Name
	}
	return d.route.name()
}

// acked settles an acknowledged delivery.
func (e *Engine) acked(d *Delivery, reply Reply) { e.ackedBy(d, reply, false) }

// ackedBy is acked, settled here (finishBy).
func (e *Engine) ackedBy(d *Delivery, reply Reply, here bool) {
	if d.probe != nil {
		e.shadowDone(d, nil, reply)
		return
	}
	if d.counted {
		d.counted = false
		d.bound.leave(e, true)
	}
	e.finishBy(d, nil, reply, here)
}

// failed takes a delivery's failure: a terminal one is dead-lettered; a retryable one is
// judged and redelivered, dead-lettered, or (shutting down) settled as cancelled. A Once
// waiter's failure settles as the handler gave it.
func (e *Engine) failed(d *Delivery, f *Failure) {
	if d.probe != nil {
		e.shadowDone(d, f, Reply{})
		return
	}
	if d.counted {
		if f.Outcome == OutcomeRetry {
			d.bound.retried.Add(1)
		} else {
			d.bound.failed.Add(1)
		}
	}
	e.leaveTarget(d)
	if f.EventType == "" {
		f.EventType = d.typ
	}
	if _, once := d.waiter.(Once); once {
		e.finish(d, f, Reply{})
		return
	}
	if f.Outcome != OutcomeRetry {
		e.deadLetter(d, f, terminalReason(f))
		return
	}
	v := e.judge(d, f)
	switch {
	case v.settle:
		e.settleRetryable(d, cancelledAfter(f))
	case v.reason != "":
		e.deadLetter(d, f, v.reason)
	case e.handBack(d, v.delay, f):
	case !e.retries.schedule(d, v.delay, f):
		e.settleRetryable(d, cancelledAfter(f))
	}
}

// verdict is what a retryable failure becomes.
type verdict struct {
	settle bool              // shutting down: settle as cancelled, no redelivery
	reason deadletter.Reason // dead-letter it for this reason; "" means redeliver after delay
	delay  time.Duration
}

// judge decides a retryable failure the same way whichever runtime ran the handler: the
// shutdown rule, the attempt limit (the route's, or the handler's advice of n more attempts,
// which the delivery remembers), the event's own deadline (no delivery starts past it), the
// retry budget, then the backoff.
func (e *Engine) judge(d *Delivery, f *Failure) verdict {
	if e.State() == Draining || e.goCtx.Err() != nil || callAbandoned(d) {
		return verdict{settle: true}
	}
	if d.route == nil {
		return verdict{reason: deadletter.ReasonNoRoute}
	}
	advice := retry.Advice{After: f.RetryAfter}
	if p := f.Envelope.Retry; p != nil {
		advice.Attempts, advice.Backoff, advice.NotBefore = p.Attempts, p.Backoff, p.NotBefore
	}
	if advice.Attempts > 0 {
		d.limit = d.attempt + advice.Attempts
	}
	b := e.backoff(d.route)
	exhausted := b.Exhausted(d.attempt, retry.Advice{})
	if d.limit > 0 {
		exhausted = d.attempt >= d.limit
	}
	if d.ceiling > 0 && d.attempt >= d.ceiling {
		exhausted = true
	}
	if exhausted {
		return verdict{reason: deadletter.ReasonMaxAttempts}
	}
	now := time.Now()
	delay := b.Delay(d.attempt, advice, now, rand.Float64)
	// The budget is asked last, so an event that is not retried spends none of it.
	switch {
	case d.eventDeadline != 0 && now.Add(delay).UnixNano() >= d.eventDeadline:
		return verdict{reason: deadletter.ReasonExpired}
	case !e.withdraw(now):
		return verdict{reason: deadletter.ReasonRetryBudget}
	}
	return verdict{delay: delay}
}

// withdraw asks the retry budget for one retry at now, with every event submitted so far
// deposited.
func (e *Engine) withdraw(now time.Time) bool {
	e.depositSubmitted()
	return e.budget.Withdraw(now)
}

func (e *Engine) backoff(rt *Route) retry.Backoff {
	if rt != nil && rt.Retry != nil {
		return rt.Retry.WithDefaults()
	}
	return e.retry
}

// handBack ends a delivery whose source redelivers it (a Redelivering waiter), telling
// the source when; it reports false for any other delivery, which is redelivered here.
func (e *Engine) handBack(d *Delivery, after time.Duration, f *Failure) bool {
	r, ok := d.waiter.(Redelivering)
	if !ok {
		return false
	}
	if s := d.shadow; s != nil {
		// The source's next delivery is an event of its own, with a shadow copy of its own:
		// this one compares with this attempt.
		d.shadow = nil
		s.offer(d, primaryResult(f, nil))
	}
	err := e.errorOf(f)
	if d.done != nil {
		d.done(err)
	}
	e.obs.handedBack(d)
	e.releaseDelivery(d)
	e.settled()
	r.Redeliver(after, err)
	return true
}

// terminalReason names why a terminal failure is dead-lettered.
func terminalReason(f *Failure) deadletter.Reason {
	switch f.Envelope.Code {
	case envelope.CodeDecode:
		return deadletter.ReasonDecode
	case envelope.CodeNoRoute:
		return deadletter.ReasonNoRoute
	}
	return deadletter.ReasonTerm
}

// settleRetryable ends a delivery that may succeed later but will not be redelivered here
// (the runtime is stopping), f saying why (code cancelled, or abandoned): its submitter
// learns it may retry. With nobody waiting (an emitted event) it is dead-lettered as
// cancelled instead, so it is never lost. Either way it counts once as cancelled.
func (e *Engine) settleRetryable(d *Delivery, f *Failure) {
	if d.probe != nil {
		e.shadowDone(d, f, Reply{})
		return
	}
	e.leaveTarget(d)
	if d.waiter == nil {
		e.deadLetter(d, f, deadletter.ReasonCancelled)
		return
	}
	e.obs.cancelled()
	e.finish(d, f, Reply{})
}

// cancelledAfter is what a retryable failure becomes when shutdown prevents its next
// attempt: a cancellation (as the submitter is told of every event shutdown cuts short)
// that names the failure in its message. A failure that is a cancellation already stays
// as it is.
func cancelledAfter(f *Failure) *Failure {
	switch f.Envelope.Code {
	case envelope.CodeCancelled, envelope.CodeAbandoned:
		return f
	}
	last := f.Envelope
	c := *f
	c.RetryAfter = 0
	c.Envelope = envelope.ErrorEnvelope{Code: envelope.CodeCancelled, Runtime: last.Runtime, Handler: last.Handler,
		Message: "the runtime shut down before the next attempt; the last one failed: " + last.Code + ": " + last.Message}
	return &c
}

// redeliver sends a delivery back to its route as its next attempt, to the target the
// route names now. The envelope is not touched: a slot is republished with a new delivery
// header, and an envelope moving between runtimes is copied as it was submitted.
func (e *Engine) redeliver(d *Delivery) {
	d.attempt++
	d.nextDeadline()
	b, _ := e.choose(d.route, d.key)
	d.bind(b)
	e.dispatch(d)
}

// dispatch hands a delivery to its target: the ring for a Rust target (through the dispatch
// queue when it still needs a request slot), the worker pool for a Go target. It never
// blocks the caller on a full target except a Go target's queue, and then only until the
// runtime starts stopping.
func (e *Engine) dispatch(d *Delivery) {
	t := d.bound.target
	switch {
	case t.rust && d.slot != noSlot:
		e.publish(d)
	case t.rust:
		if d.raw == nil {
			d.raw = e.envelopeCopy(d) // last handled in Go: the envelope as it was submitted
		}
		if !e.queue.push(queued{d: d}, true) {
			e.settleRetryable(d, failure(OutcomeRetry, d.typ, envelope.CodeCancelled, "the runtime shut down before the next attempt", t.Name))
		}
	default:
		if d.slot != noSlot {
			// Last handled in Rust: the envelope leaves its slot, which a Go handler does not
			// need, and the delivery leaves the slot's own record, which the slot's next
			// submitter reuses.
			moved := new(Delivery)
			*moved = *d
			moved.raw, moved.slot = bytes.Clone(e.slots.envelope(d.slot, d.length)), noSlot
			e.slots.free(d.slot)
			d = moved
		}
		if d.event == nil {
			ev, err := envelope.DecodeEvent(d.raw)
			if err != nil {
				e.deadLetter(d, failure(OutcomeTerm, d.typ, envelope.CodeDecode, "cannot decode the event for a Go route: "+err.Error(), t.Name), deadletter.ReasonDecode)
				return
			}
			d.event = ev
		}
		d.event.Attempt = d.attempt
		d.event.Deadline = unixTime(d.deadline)
		if err := t.pool.Load().enqueue(context.Background(), d, Block); err != nil {
			e.settleRetryable(d, failure(OutcomeRetry, d.typ, envelope.CodeCancelled, "the runtime shut down before the next attempt", t.Name))
		}
	}
}

// finish settles a delivery with its final outcome (f nil: acknowledged) and gives back what
// it held. A dead letter settles through deadLetter instead.
func (e *Engine) finish(d *Delivery, f *Failure, reply Reply) { e.finishBy(d, f, reply, false) }

// finishBy is finish; here says the caller is the event's submitter, inside its Submit: a
// HereSettler waiter is then settled without synchronisation.
func (e *Engine) finishBy(d *Delivery, f *Failure, reply Reply, here bool) {
	if s := d.shadow; s != nil {
		d.shadow = nil
		s.offer(d, primaryResult(f, reply.data))
	}
	err := e.errorOf(f)
	if d.done != nil {
		d.done(err)
	}
	e.obs.settled(d, f == nil)
	w := d.waiter
	e.releaseDelivery(d)
	e.settled()
	if w == nil {
		reply.Release()
		return
	}
	if here {
		if h, ok := w.(HereSettler); ok {
			h.SettleHere(err, reply)
			return
		}
	}
	settleWaiter(w, f, err, reply)
}

// deadLetter records a delivery as dead: the record goes to the sink, and the event settles
// (with f) once the sink has it, so the submitter's acknowledgement follows the record.
func (e *Engine) deadLetter(d *Delivery, f *Failure, reason deadletter.Reason) {
	if d.probe != nil {
		e.shadowDone(d, f, Reply{})
		return
	}
	e.leaveTarget(d)
	f.DeadLetter = reason
	if f.EventType == "" {
		f.EventType = d.typ
	}
	if s := d.shadow; s != nil {
		d.shadow = nil
		s.offer(d, primaryResult(f, nil))
	}
	e.obs.deadLettered(d, reason)
	route := f.Envelope.Handler
	if route == "" {
		route = d.handlerName()
	}
	rec := &deadletter.Record{
		Reason:    reason,
		Error:     &f.Envelope,
		Attempts:  d.attempt,
		EventID:   d.id,
		EventType: d.typ,
		Source:    d.source,
		Route:     route,
		Time:      time.Now(),
		Envelope:  e.envelopeCopy(d),
	}
	err := e.errorOf(f)
	if d.done != nil {
		d.done(err)
	}
	w := d.waiter
	e.releaseDelivery(d)
	e.dead.queue(deadJob{rec: rec, w: w, err: err, f: f})
}

// envelopeCopy is the delivery's envelope as the event was submitted, in Go memory.
func (e *Engine) envelopeCopy(d *Delivery) []byte {
	switch {
	case d.slot != noSlot:
		return bytes.Clone(e.slots.envelope(d.slot, d.length))
	case d.raw != nil:
		return d.raw
	case d.event != nil:
		ev := *d.event
		ev.Attempt, ev.Deadline = d.firstAttempt, unixTime(d.eventDeadline)
		b, err := envelope.MarshalEvent(&ev)
		if err != nil {
			e.log.Error("tandem: cannot encode a dead letter's event")
		}
		return b
	}
	return nil
}

// release gives back what the delivery holds: its request slot, if any.
func (e *Engine) releaseDelivery(d *Delivery) {
	if d.slot != noSlot {
		e.slots.free(d.slot)
	}
}

// settled counts one event out: it is final. The count, then draining; Shutdown sets
// draining, then fences and sums (perp): either this sees draining and signals, or
// Shutdown's sum has this event out.
func (e *Engine) settled() {
	e.events.out()
	perp.LightFence()
	if e.draining.Load() && e.events.pending() == 0 {
		select {
		case e.drained <- struct{}{}:
		default:
		}
	}
}

func (e *Engine) errorOf(f *Failure) error {
	if f == nil {
		return nil
	}
	return e.cfg.ErrorOf(f)
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
