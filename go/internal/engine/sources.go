package engine

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/ring"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Events that do not come from Submit enter here: adapters from a completion record to a
// Delivery. The completion poller must never block (Rust may be waiting on it), so what
// needs a request slot or a policy's admission waits in the dispatch queue, drained by one
// goroutine that may block.

// queueMax bounds the emitted events waiting for routing; past it an emitted event is shed
// to the dead-letter sink, never dropped silently. Redeliveries are not bounded by it: they
// are already counted against MaxInFlight and the retry table.
const queueMax = 1 << 16

// queued is one item of the dispatch queue: a new emitted event (ev, and raw, its envelope
// as Rust encoded it), or a delivery that needs a request slot for its next attempt (d).
type queued struct {
	ev   *envelope.Event
	raw  []byte
	d    *Delivery
	call *rustCall // a Rust handler's call: ev is the called event
}

// dispatchQueue holds work between the completion poller, which must not block, and the
// goroutine that routes it, which may.
type dispatchQueue struct {
	mu     sync.Mutex
	items  []queued
	closed bool
	signal chan struct{}
	done   chan struct{}
}

func (q *dispatchQueue) init() {
	q.signal = make(chan struct{}, 1)
	q.done = make(chan struct{})
}

// push queues an item; false when the queue is closed, or full and the item is new.
func (q *dispatchQueue) push(it queued, redelivery bool) bool {
	q.mu.Lock()
	if q.closed || (!redelivery && len(q.items) >= queueMax) {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	return true
}

// pop waits for the next item; false once the queue is closed and empty.
func (q *dispatchQueue) pop() (queued, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			it := q.items[0]
			q.items[0] = queued{}
			q.items = q.items[1:]
			q.mu.Unlock()
			return it, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return queued{}, false
		}
		<-q.signal
	}
}

// close stops intake and waits for the routing goroutine to settle what is left.
func (q *dispatchQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	<-q.done
}

// routeQueued drains the dispatch queue: new emitted events go through intake like submitted
// ones; redeliveries get a request slot and are published.
func (e *Engine) routeQueued() {
	defer e.background.Done()
	defer close(e.queue.done)
	for {
		it, ok := e.queue.pop()
		if !ok {
			return
		}
		if it.d != nil {
			e.redeliverFromQueue(it.d)
			continue
		}
		if it.call != nil {
			e.routeCall(it.ev, it.raw, it.call)
			continue
		}
		e.routeEmitted(it.ev, it.raw)
	}
}

// redeliverFromQueue gives a delivery whose envelope is in Go memory a request slot, copies
// the envelope in and publishes it.
func (e *Engine) redeliverFromQueue(d *Delivery) {
	idx, err := e.slots.acquire(context.Background(), Block, e.closing)
	if err == nil && e.rustStopping.Load() {
		e.slots.free(idx)
		err = ErrClosed
	}
	if err != nil {
		e.settleRetryable(d, failure(OutcomeRetry, d.typ, envelope.CodeCancelled, "the runtime shut down before the next attempt", d.handlerName()))
		return
	}
	if len(d.raw) > e.cfg.MaxEventSize {
		e.slots.free(idx)
		e.deadLetter(d, failure(OutcomeTerm, d.typ, envelope.CodeInvalid, "the event outgrew MaxEventSize", d.handlerName()), deadletter.ReasonTerm)
		return
	}
	d.slot, d.length = idx, uint32(len(append(e.slots.buffer(idx), d.raw...)))
	d.raw = nil // the slot holds the envelope now
	e.publish(d)
}

// routeEmitted routes an event a Rust handler emitted. One that cannot be routed (no route,
// shutting down) is dead-lettered: nobody waits for it to say so.
func (e *Engine) routeEmitted(ev *envelope.Event, raw []byte) {
	err := e.intake(e.goCtx, ev, raw, nil, nil)
	if err == nil || errors.Is(err, ErrShed) {
		return // accepted, or already dead-lettered by the shed
	}
	reason, code := deadletter.ReasonNoRoute, envelope.CodeNoRoute
	switch {
	case errors.Is(err, ErrClosed) || e.goCtx.Err() != nil:
		reason, code = deadletter.ReasonCancelled, envelope.CodeCancelled
	case errors.Is(err, ErrOverloaded):
		reason, code = deadletter.ReasonShed, envelope.CodeShed
	case !errors.Is(err, ErrNoRoute):
		reason, code = deadletter.ReasonTerm, envelope.CodeInvalid
	}
	f := failure(OutcomeTerm, ev.Type, code, "routing an event a Rust handler emitted: "+err.Error(), "")
	e.deadLetterUnaccepted(ev, raw, reason, f)
}

// onEmit takes an event a Rust handler emitted: it decodes it (to route it), copies its
// envelope out of the reply slot, gives the slot back and queues the event for routing.
func (e *Engine) onEmit(c *ring.Desc) {
	if !e.lend(c.ReplySlot, "emitted event in a reply slot not lent to Go") {
		return
	}
	raw := bytes.Clone(e.replyBytes(c.ReplySlot, c.ReplyLen))
	if c.Flags != 0 {
		e.onLocalFailure(c, raw)
		return
	}
	e.releaseReply(c.ReplySlot)
	e.obs.emitted.Add(1)
	ev, err := envelope.DecodeEvent(raw)
	if err != nil {
		f := &Failure{Outcome: OutcomeTerm, Envelope: envelope.ErrorEnvelope{Code: envelope.CodeDecode,
			Message: "a Rust handler emitted a malformed envelope: " + err.Error(), Runtime: "rust"}}
		e.deadLetterUnaccepted(&envelope.Event{}, raw, deadletter.ReasonDecode, f)
		return
	}
	if !e.queue.push(queued{ev: ev, raw: raw}, false) {
		f := failure(OutcomeTerm, ev.Type, envelope.CodeShed, "too many emitted events waiting to be routed", "")
		e.deadLetterUnaccepted(ev, raw, deadletter.ReasonShed, f)
	}
}

// onLocalFailure takes over an event that was routed inside Rust and failed: a delivery
// like any other from here, retried (through the rings this time) or dead-lettered.
func (e *Engine) onLocalFailure(c *ring.Desc, raw []byte) {
	e.releaseReply(c.ReplySlot)
	e.takeOverLocal(c, raw, nil)
}

// takeOverLocal makes a delivery of an event that ran inside Rust and failed, with w (nil,
// or a Rust handler's call) as its waiter, and settles its failure.
func (e *Engine) takeOverLocal(c *ring.Desc, raw []byte, w Waiter) {
	n := min(int(c.Len), len(raw))
	env := raw[:n:n]
	f := &Failure{Outcome: OutcomeTerm, RetryAfter: time.Duration(c.Aux)}
	if c.Flags == abi.OutcomeRetry {
		f.Outcome = OutcomeRetry
	}
	if ee, err := envelope.DecodeErrorEnvelope(raw[n:]); err == nil {
		f.Envelope = *ee
	} else {
		f.Envelope = envelope.ErrorEnvelope{Code: envelope.CodeDecode, Message: "malformed error envelope: " + err.Error(), Runtime: "rust"}
	}
	ev, err := envelope.DecodeEvent(env)
	if err != nil {
		if call, ok := w.(*rustCall); ok {
			call.answer(failure(OutcomeTerm, "", envelope.CodeDecode, "a Rust handler called with a malformed envelope: "+err.Error(), ""), Reply{})
			return
		}
		e.deadLetterUnaccepted(&envelope.Event{}, env, deadletter.ReasonDecode, f)
		return
	}
	f.EventType = ev.Type
	d := &Delivery{}
	d.reset(e.router.match(ev.Type), ev, w)
	d.raw = env
	e.accepted(d)
	e.failed(d, f)
}
