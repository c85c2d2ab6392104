package tandem

import (
	"bytes"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/ring"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// emitQueueMax bounds the events Rust handlers emitted that wait for Go to route them. The
// completion poller never waits (Rust may be waiting on it), so past the bound an emitted
// event is shed to the dead-letter sink, never dropped silently.
const emitQueueMax = 1 << 16

// emitQueue holds events emitted by Rust handlers between the completion poller, which must
// not block, and the goroutine that routes them, which may (a full route blocks it).
type emitQueue struct {
	mu     sync.Mutex
	items  []*Event
	closed bool
	signal chan struct{}
	done   chan struct{}
}

func (q *emitQueue) init() {
	q.signal = make(chan struct{}, 1)
	q.done = make(chan struct{})
}

func (q *emitQueue) push(ev *Event) bool {
	q.mu.Lock()
	if len(q.items) >= emitQueueMax || q.closed {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, ev)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	return true
}

// pop waits for the next event; false once the queue is closed and empty.
func (q *emitQueue) pop() (*Event, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			ev := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.mu.Unlock()
			return ev, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		<-q.signal
	}
}

func (q *emitQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	<-q.done
}

// onEmit takes an event a Rust handler emitted: it copies it out of its reply slot, gives the
// slot back, and queues the event for routing.
func (r *Runtime) onEmit(d *ring.Desc) {
	if d.ReplySlot == abi.NoSlot || int(d.ReplySlot) >= len(r.replies) || !r.replies[d.ReplySlot].CompareAndSwap(0, 1) {
		r.violation("emitted event in a reply slot not lent to Go", d.ReplySlot)
		return
	}
	raw := r.replyBytes(d.ReplySlot, d.ReplyLen)
	if d.Flags != 0 {
		r.onLocalFailure(d, raw)
		return
	}
	ev, err := envelope.DecodeEvent(raw)
	var env []byte
	if err != nil {
		env = bytes.Clone(raw)
	}
	r.releaseReply(d.ReplySlot)
	r.emitted.Add(1)
	if err != nil {
		r.deadLetterEvent(&Event{}, env, deadletter.ReasonDecode, &HandlerError{Outcome: OutcomeTerm, Envelope: ErrorEnvelope{
			Code: envelope.CodeDecode, Message: "a Rust handler emitted a malformed envelope: " + err.Error(), Runtime: "rust"}})
		return
	}
	if !r.emits.push(ev) {
		r.deadLetterEvent(ev, nil, deadletter.ReasonShed, &HandlerError{Outcome: OutcomeTerm, EventType: ev.Type, Envelope: ErrorEnvelope{
			Code: envelope.CodeShed, Message: "too many emitted events waiting to be routed", Runtime: "go"}})
	}
}

// routeEmitted routes the events Rust handlers emitted, like submitted ones. One that cannot
// be routed (no route, shutting down) is dead-lettered: nobody waits for it to say so.
func (r *Runtime) routeEmitted() {
	defer close(r.emits.done)
	for {
		ev, ok := r.emits.pop()
		if !ok {
			return
		}
		err := r.submit(r.goCtx, ev, nil)
		if err == nil || errors.Is(err, ErrShed) {
			continue // accepted, or already dead-lettered by the shed
		}
		reason := deadletter.ReasonNoRoute
		code := envelope.CodeNoRoute
		switch {
		case errors.Is(err, ErrClosed) || r.goCtx.Err() != nil:
			reason, code = deadletter.ReasonCancelled, envelope.CodeCancelled
		case errors.Is(err, ErrOverloaded):
			reason, code = deadletter.ReasonShed, envelope.CodeShed
		case !errors.Is(err, ErrNoRoute):
			reason, code = deadletter.ReasonTerm, envelope.CodeInvalid
		}
		r.deadLetterEvent(ev, nil, reason, &HandlerError{Outcome: OutcomeTerm, EventType: ev.Type, Envelope: ErrorEnvelope{
			Code: code, Message: "routing an event a Rust handler emitted: " + err.Error(), Runtime: "go"}})
	}
}

// deadLetterEvent dead-letters an event that never got a slot or a worker; env is its
// original encoding when known (else it is encoded from ev).
func (r *Runtime) deadLetterEvent(ev *Event, env []byte, reason deadletter.Reason, he *HandlerError) {
	if env == nil {
		env, _ = envelope.MarshalEvent(ev)
	}
	he.DeadLetter = reason
	r.met.deadLetter(r.router.match(ev.Type), reason)
	r.submitted.Add(1)
	r.pending.Add(1)
	r.deadLettered.Add(1)
	r.log.Debug("tandem: dead-lettering an unrouted event", zap.String("event_type", ev.Type), zap.String("reason", string(reason)))
	r.dead <- deadLetterJob{dl: &deadletter.Record{Reason: reason, Error: &he.Envelope, Attempts: ev.Attempt, EventID: ev.ID,
		EventType: ev.Type, Source: ev.Source, Route: he.Envelope.Handler, Time: time.Now(), Envelope: env}, err: he}
}

// onLocalFailure takes an event that was routed inside Rust and failed: Go retries it (through
// the rings this time) or dead-letters it, as it would any event.
func (r *Runtime) onLocalFailure(d *ring.Desc, raw []byte) {
	n := min(int(d.Len), len(raw))
	env := bytes.Clone(raw[:n])
	he := &HandlerError{Outcome: OutcomeTerm, RetryAfter: time.Duration(d.Aux)}
	if d.Flags == abi.OutcomeRetry {
		he.Outcome = OutcomeRetry
	}
	if e, err := envelope.DecodeErrorEnvelope(raw[n:]); err == nil {
		he.Envelope = *e
	} else {
		he.Envelope = ErrorEnvelope{Code: envelope.CodeDecode, Message: "malformed error envelope: " + err.Error(), Runtime: "rust"}
	}
	r.releaseReply(d.ReplySlot)
	ev, err := envelope.DecodeEvent(env)
	if err != nil {
		r.deadLetterEvent(&Event{}, env, deadletter.ReasonDecode, he)
		return
	}
	he.EventType = ev.Type
	if he.Outcome != OutcomeRetry {
		r.deadLetterEvent(ev, env, deadletter.ReasonTerm, he)
		return
	}
	var limit uint32 // a local event's advice cannot be remembered past this failure
	v := r.judgeRetry(r.router.match(ev.Type), max(ev.Attempt, 1), &limit, he)
	switch {
	case v.settle:
		r.deadLetterEvent(ev, env, deadletter.ReasonCancelled, he) // nobody to hand a retryable outcome to
	case v.reason != "":
		r.deadLetterEvent(ev, env, v.reason, he)
	case !r.scheduleEmitRetry(ev, env, he, v.delay):
		r.deadLetterEvent(ev, env, deadletter.ReasonCancelled, he)
	}
}

// scheduleEmitRetry redelivers a failed local event after delay, as its next attempt, through
// Go's routing (and so the rings).
func (r *Runtime) scheduleEmitRetry(ev *Event, env []byte, he *HandlerError, delay time.Duration) bool {
	r.retries.mu.Lock()
	defer r.retries.mu.Unlock()
	if r.retries.closed {
		return false
	}
	retry := &emitRetry{ev: ev, env: env, he: he}
	retry.timer = time.AfterFunc(delay, func() {
		// Under the table's lock, so shutdown's cancelRetries orders after the push (the emit
		// router then dead-letters what it cannot route) and never races it.
		r.retries.mu.Lock()
		defer r.retries.mu.Unlock()
		if _, ok := r.retries.emitWaiting[retry]; !ok {
			return
		}
		delete(r.retries.emitWaiting, retry)
		ev.Attempt = max(ev.Attempt, 1) + 1
		if !r.emits.push(ev) {
			r.deadLetterEvent(ev, env, deadletter.ReasonCancelled, he)
		}
	})
	r.retries.emitWaiting[retry] = struct{}{}
	r.retried.Add(1)
	r.met.retry(r.router.match(ev.Type))
	return true
}

// emitRetry is a failed local event waiting for its redelivery.
type emitRetry struct {
	ev    *Event
	env   []byte
	he    *HandlerError
	timer *time.Timer
}
