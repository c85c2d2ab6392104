package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"unsafe"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/perp"
	"github.com/tandemrt/tandem/go/internal/unchecked"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Submit accepts ev for the route its type matches and hands it to the route's handler; w
// (nil: nobody waits) learns the final outcome. ev is not retained: a Rust route's event is
// encoded into a request slot, a Go route's is copied.
//
// Errors: ErrClosed, envelope.ErrInvalidEvent, ErrNoRoute, *EventTooLargeError, ErrOverloaded,
// ErrShed (the event was dead-lettered), a policy's refusal, or ctx's error.
func (e *Engine) Submit(ctx context.Context, ev *envelope.Event, w Waiter) error {
	return e.intake(ctx, ev, nil, w, nil)
}

// A Batch submits events whose crossing into Rust waits for the batch's end: when the Rust
// poller is parked, the first event of the batch takes the duty to wake it, and one call
// into the library at Flush runs every event the batch published, instead of one call per
// event. Under load (the poller awake) a batch changes nothing.
//
// A batch holds the wake-up duty until Flush, so every event published meanwhile, by anyone,
// waits for it: submit what is at hand and flush. Before a step that may wait (a slot, a
// policy's admission, a full Go handler) the batch flushes first, so it never waits on
// events it holds back. A Batch belongs to one goroutine.
type Batch struct {
	e    *Engine
	owed bool // the batch holds the wake-up duty
}

// NewBatch returns an empty batch. Flush it before letting it go.
func (e *Engine) NewBatch() *Batch { return &Batch{e: e} }

// Submit is Engine.Submit within the batch.
func (b *Batch) Submit(ctx context.Context, ev *envelope.Event, w Waiter) error {
	return b.e.intake(ctx, ev, nil, w, b)
}

// Flush crosses into Rust for the events the batch published, if it holds the duty to.
func (b *Batch) Flush() {
	if b != nil && b.owed {
		b.owed = false
		b.e.crossToRust(abi.KickBatch)
	}
}

// intake is the one way in for a new event, whatever its origin. raw, when not nil, is ev's
// envelope already encoded (by Rust) and decoded by envelope.DecodeEvent, copied into the
// slot instead of encoded again.
func (e *Engine) intake(ctx context.Context, ev *envelope.Event, raw []byte, w Waiter, bt *Batch) error {
	if !e.gate.enter() {
		return e.closedTo(ev)
	}
	defer e.gate.leave()
	if e.State() != Running {
		return e.closedTo(ev)
	}
	if raw == nil {
		// Before routing: an event without a type is invalid, not unroutable. An envelope
		// that came encoded (raw) was decoded with the same rules.
		if err := envelope.Validate(ev); err != nil {
			return e.refused(ev, "invalid", "tandem: invalid event", err)
		}
	}
	rt := e.route(ev.Type)
	if rt == nil {
		return e.refused(ev, "no_route", "tandem: no route", fmt.Errorf("%w: %q", ErrNoRoute, ev.Type))
	}
	key := ev.PartitionKey
	if key == "" {
		key = ev.ID
	}
	b, tab := e.choose(rt, key)
	if b.target.rust {
		return e.intakeRust(ctx, b, tab.shadow, ev, raw, w, bt)
	}
	bt.Flush() // a full Go handler may wait, and its handler may wait on Rust
	return e.intakeGo(ctx, b, tab.shadow, ev, w)
}

// route is the route of event type typ: the exact route this P matched last when typ is its
// type (events tend to come in runs of one type), else the router's match. The routes never
// change once the runtime starts, and a P's last match is written only when it changes: a
// map lookup and a string hash per event saved.
func (e *Engine) route(typ string) *Route {
	last := &e.ledger.At(perp.Hint()).route
	if i := last.Load(); i != 0 {
		if rt := e.router.all[i-1]; rt.Pattern == typ {
			return rt
		}
	}
	rt := e.router.match(typ)
	if rt != nil && rt.Pattern == typ {
		last.Store(uint32(rt.order) + 1)
	}
	return rt
}

// refused counts intake's refusal of ev under reason, logs it as msg, and returns err. Apart
// from intake, as are all of intake's logs: a log call's fields take room in its caller's
// stack frame whether it runs or not, and a goroutine whose first call is a submit would
// otherwise grow its stack, a copy of every frame, for logs that never run.
//
//go:noinline
func (e *Engine) refused(ev *envelope.Event, reason, msg string, err error) error {
	e.obs.rejected(reason)
	e.log.Warn(msg, zap.String("event_type", ev.Type), zap.String("event_id", ev.ID), zap.Error(err))
	return err
}

// closedTo refuses ev at a runtime not running (see refused).
//
//go:noinline
func (e *Engine) closedTo(ev *envelope.Event) error {
	e.log.Debug("tandem: submit refused: not running", zap.String("event_type", ev.Type), zap.String("event_id", ev.ID))
	return ErrClosed
}

// intakeRust encodes ev (or copies raw) into a request slot and publishes it to b's Rust
// handler, which choose counted the event in at: every way out before the delivery exists
// counts it out.
func (e *Engine) intakeRust(ctx context.Context, b *binding, shadow *shadowRoute, ev *envelope.Event, raw []byte, w Waiter, bt *Batch) (err error) {
	rt := b.route
	defer func() {
		if err != nil {
			b.leave(e, false)
		}
	}()
	// An event too large for a request slot is refused before it waits for anything. When
	// nothing waits (no admission, a slot free), the encoding into the slot is the check.
	sizedFirst := raw != nil || rt.Admit != nil
	if sizedFirst {
		if err := e.checkSize(ev, raw); err != nil {
			return err
		}
	}
	var done func(error)
	if rt.Admit != nil {
		bt.Flush() // admission may wait for events in flight to end
		var err error
		if done, err = rt.Admit(ctx, ev); err != nil {
			if errors.Is(err, ErrAcked) {
				e.events.settledAtOnce()
				b.leave(e, false)
				if w != nil {
					w.Settle(nil, Reply{})
				}
				return nil
			}
			return err
		}
	}
	idx, ok := e.slots.tryAcquire()
	if !ok {
		if !sizedFirst {
			if err := e.checkSize(ev, nil); err != nil {
				return err
			}
		}
		bt.Flush() // the slots the batch holds back free only once Rust runs them
		if _, callee := w.(*rustCall); callee && rt.Overload == Block {
			idx, err = e.slots.acquireFirstWaiting(ctx, e.closing) // see calls.go
		} else {
			idx, err = e.slots.acquireWaiting(ctx, rt.Overload, e.closing)
		}
	}
	if err != nil {
		e.obs.rejected("overloaded")
		if done != nil {
			done(err)
		}
		if errors.Is(err, ErrShed) {
			e.shed(rt, ev, raw)
		}
		return err
	}
	d := &e.slots.table[idx].own
	d.reset(rt, ev, w)
	d.done = done
	d.shadow = shadow
	buf, fields := e.slots.buffer(idx), e.slots.fields(idx)
	out, traced := buf, false
	if e.obs.tracing() {
		out, traced = e.encodeTraced(ctx, d, ev, buf, fields)
	}
	if !traced {
		out = encodeEvent(buf, ev, raw, fields)
	}
	if unsafe.SliceData(out) != unsafe.SliceData(buf) {
		// Outgrew the slot: an event not sized before (or a caller that changed ev while
		// Submit read it).
		e.slots.free(idx)
		err = e.tooLarge(ev, len(out))
		if done != nil {
			done(err)
		}
		return err
	}
	d.slot, d.length = idx, uint32(len(out))
	d.bind(b)
	d.nextDeadline()
	e.accepted(d)
	e.publishIn(d, bt, true)
	return nil
}

// encodeTraced starts d's publish span and encodes ev into buf with the span's trace
// context; traced is false, and nothing encoded, when that does not fit the slot. Apart from
// intakeRust for its frame: a copy of the event (see refused).
//
//go:noinline
func (e *Engine) encodeTraced(ctx context.Context, d *Delivery, ev *envelope.Event, buf []byte, f *unchecked.Fields) (out []byte, traced bool) {
	withTrace := tracedCopies.Get().(*envelope.Event)
	defer func() {
		*withTrace = envelope.Event{}
		tracedCopies.Put(withTrace)
	}()
	*withTrace = *ev
	d.trace = e.obs.publish(ctx, d.route, ev, withTrace)
	// Checked again: the trace context comes from the span, not from ev.
	err := envelope.Validate(withTrace)
	if err == nil {
		out = appendValidEvent(buf, withTrace, f)
		if unsafe.SliceData(out) == unsafe.SliceData(buf) {
			return out, true
		}
		err = &EventTooLargeError{Size: len(out), Max: e.cfg.MaxEventSize}
	}
	// The size limit is the caller's event, which fits: the trace context tandem adds must
	// not refuse it. Rust's process span still joins the trace, through d.trace; only what
	// the Rust handler reads of the trace context is ev's own.
	e.log.Debug("tandem: the trace context does not fit the request slot; sending the event without it",
		zap.String("event_type", ev.Type), zap.String("event_id", ev.ID), zap.Error(err))
	return buf, false
}

// checkSize refuses an event whose envelope (raw, or ev's encoding) outgrows a request slot.
func (e *Engine) checkSize(ev *envelope.Event, raw []byte) error {
	size := len(raw)
	if raw == nil {
		size = envelope.EncodedEventSize(ev)
	}
	if size > e.cfg.MaxEventSize {
		return e.tooLarge(ev, size)
	}
	return nil
}

// tooLarge counts, logs and returns the refusal of an event of size bytes.
//
//go:noinline
func (e *Engine) tooLarge(ev *envelope.Event, size int) error {
	e.obs.rejected("too_large")
	e.log.Warn("tandem: event too large", zap.String("event_type", ev.Type), zap.String("event_id", ev.ID),
		zap.Int("size", size), zap.Int("max", e.cfg.MaxEventSize))
	return &EventTooLargeError{Size: size, Max: e.cfg.MaxEventSize}
}

// tracedCopies are the copies of events encodeTraced adds a trace context to: a copy made
// for each event would go to the heap (appendValidEvent is called through a variable).
var tracedCopies = sync.Pool{New: func() any { return new(envelope.Event) }}

// appendValidEvent is envelope.AppendEvent without the checks intake has made, which also
// indexes the envelope's fields in f (unchecked.AppendEvent).
var appendValidEvent = unchecked.AppendEvent.(func([]byte, *envelope.Event, *unchecked.Fields) []byte)

// encodeEvent writes ev's envelope into buf: raw when the event came encoded (f, the slot's
// index, left empty), else ev, which intake validated, encoded and indexed in f.
func encodeEvent(buf []byte, ev *envelope.Event, raw []byte, f *unchecked.Fields) []byte {
	if raw != nil {
		return append(buf, raw...)
	}
	return appendValidEvent(buf, ev, f)
}

// intakeGo copies ev and queues it for the workers of b's Go handler, which choose counted
// the event in at.
func (e *Engine) intakeGo(ctx context.Context, b *binding, shadow *shadowRoute, ev *envelope.Event, w Waiter) error {
	rt := b.route
	d := newGoDelivery(rt, ev, w)
	d.bind(b)
	d.shadow = shadow
	if e.obs.tracing() {
		d.trace = e.obs.publish(ctx, rt, ev, d.event)
	}
	d.nextDeadline()
	d.event.Attempt, d.event.Deadline = d.attempt, unixTime(d.deadline)
	// Counted in before the enqueue: a worker may settle it at once.
	e.obs.stamp(d)
	e.countIn()
	met := d.metrics()
	p := b.target.pool.Load()
	if rt.CallerRuns {
		if cr, ok := w.(CallerRunner); ok && p.hold() {
			cr.Hold(Held{p: p, d: d})
			e.obs.count(met)
			return nil
		}
	}
	err := p.enqueue(ctx, d, rt.Overload)
	switch {
	case err == nil:
		e.obs.count(met)
		return nil
	case errors.Is(err, ErrShed):
		e.obs.count(met)
		d.waiter = nil // the submitter learns it from the error
		d.shadow = nil // nothing ran: nothing to compare
		e.deadLetter(d, failure(OutcomeTerm, ev.Type, envelope.CodeShed, fmt.Sprintf("route %q was full", rt.Pattern), b.target.Name), deadletter.ReasonShed)
		return err
	default:
		e.leaveTarget(d)
		e.events.undo() // not submitted after all: counted out of Submitted too
		e.obs.rejected("overloaded")
		return err
	}
}

// shed dead-letters an event a full Rust route shed. Its submitter learns it from ErrShed.
func (e *Engine) shed(rt *Route, ev *envelope.Event, raw []byte) {
	d := &Delivery{}
	d.reset(rt, ev, nil)
	if raw == nil {
		raw, _ = envelope.MarshalEvent(ev)
	}
	d.raw = raw
	e.accepted(d)
	e.deadLetter(d, failure(OutcomeTerm, ev.Type, envelope.CodeShed, "every request slot was in flight", rt.name()), deadletter.ReasonShed)
}

// deadLetterUnaccepted dead-letters an event no route took (an emitted one: nobody waits
// to be told). raw is its envelope when known.
func (e *Engine) deadLetterUnaccepted(ev *envelope.Event, raw []byte, reason deadletter.Reason, f *Failure) {
	d := &Delivery{}
	d.reset(e.router.match(ev.Type), ev, nil)
	if raw == nil {
		raw, _ = envelope.MarshalEvent(ev)
	}
	d.raw = raw
	e.accepted(d)
	e.log.Debug("tandem: dead-lettering an event no route took", zap.String("event_type", ev.Type), zap.String("reason", string(reason)))
	e.deadLetter(d, f, reason)
}

// SubmitRaw publishes already-encoded bytes to the Rust handler of eventType, bypassing the
// encoder and the router: tests prove with it that Rust refuses malformed envelopes.
func (e *Engine) SubmitRaw(raw []byte, eventType string, w Waiter) error {
	if !e.gate.enter() {
		return ErrClosed
	}
	defer e.gate.leave()
	if e.State() != Running {
		return ErrClosed
	}
	rt := e.router.match(eventType)
	if rt == nil || !rt.table.Load().targets[0].target.rust {
		return fmt.Errorf("%w: %q", ErrNoRoute, eventType)
	}
	idx, err := e.slots.acquire(context.Background(), Block, e.closing)
	if err != nil {
		return err
	}
	d := &e.slots.table[idx].own
	d.reset(rt, &envelope.Event{Type: eventType}, w)
	d.slot, d.length = idx, uint32(len(append(e.slots.buffer(idx), raw...)))
	// Index 0: Rust routes it by the envelope's own type, as a raw submission says nothing
	// else. Not counted in flight anywhere: no route names this target.
	d.bound = &binding{route: rt, target: &Target{Name: rt.name(), rust: true}}
	e.accepted(d)
	e.publish(d)
	return nil
}

// cloneEvent copies ev so the submitter may reuse its buffers once intake returns.
func cloneEvent(ev *envelope.Event) envelope.Event {
	c := *ev
	c.Data = append([]byte(nil), ev.Data...)
	c.Extensions = maps.Clone(ev.Extensions)
	return c
}
