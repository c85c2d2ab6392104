package tandem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
)

// waiter receives one event's settlement from the completion poller.
type waiter struct {
	// ch: for a Receipt, closed at settlement; for a pooled Call waiter, receives one value.
	ch     chan struct{}
	pooled bool
	// state: 0 waiting, 1 settled, 2 abandoned by a Call whose context ended (the poller
	// then recycles the waiter and releases its reply).
	state atomic.Uint32
	err   error
	reply Reply  // Call: a view of the reply slot
	data  []byte // Receipt: a copy of the reply
}

// Receipt is the promise of one submitted event's acknowledgement: it settles exactly once,
// when the handler's outcome is final (after retries, or on dead-lettering). Safe for
// concurrent use; Wait may be called any number of times.
type Receipt struct {
	w waiter
}

// Done returns a channel closed when the outcome is final.
func (a *Receipt) Done() <-chan struct{} { return a.w.ch }

// Wait blocks until the outcome is final or ctx ends. It returns nil when the handler acked,
// a *HandlerError when it failed, or ctx's error.
func (a *Receipt) Wait(ctx context.Context) error {
	select {
	case <-a.w.ch:
		return a.w.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reply returns the handler's reply payload (a copy owned by the caller), or nil before the
// outcome is final or when there was none.
func (a *Receipt) Reply() []byte {
	select {
	case <-a.w.ch:
		return a.w.data
	default:
		return nil
	}
}

// Reply is a Rust handler's reply payload, read in place from a reply slot in shared memory.
// The slot is lent to the caller until Release; Data must not be used after Release or after
// the runtime's Shutdown. A Reply is not safe for concurrent Release.
type Reply struct {
	rt   *Runtime
	slot uint32
	data []byte
}

// Data returns the payload, valid until Release. It panics if the runtime was shut down.
func (p *Reply) Data() []byte {
	if p.rt != nil && p.rt.freed.Load() {
		panic("tandem: Reply used after Shutdown")
	}
	return p.data
}

// Release hands the reply slot back to Rust. A second call does nothing.
func (p *Reply) Release() {
	if p.rt == nil {
		return
	}
	p.rt.releaseReply(p.slot)
	p.rt, p.data = nil, nil
}

// Submit hands ev to the Rust handler routed for its type and returns once the event is
// accepted (in a request slot, published to Rust). The returned Receipt settles when the
// outcome is final. The envelope is encoded straight into shared memory: ev is not retained.
//
// Errors: ErrClosed (not running), ErrNoRoute (no handler for ev.Type), ErrEventTooLarge,
// ErrInvalidEvent (a required attribute missing), ErrOverloaded (all slots in flight and the
// policy is Reject), or ctx's error (policy Block).
func (r *Runtime) Submit(ctx context.Context, ev *Event) (*Receipt, error) {
	a := &Receipt{w: waiter{ch: make(chan struct{})}}
	if err := r.submit(ctx, ev, &a.w); err != nil {
		return nil, err
	}
	return a, nil
}

// Call submits ev and waits for the handler's reply: request/reply over the rings. The Reply
// is read in place from shared memory and must be released (Reply.Release); an empty reply
// (the handler acked without one) needs no release but allows it. A failed handler returns a
// *HandlerError. If ctx ends first Call returns ctx's error; the event still settles, and its
// reply is released for you.
func (r *Runtime) Call(ctx context.Context, ev *Event) (Reply, error) {
	w := r.waiters.Get().(*waiter)
	if err := r.submit(ctx, ev, w); err != nil {
		r.waiters.Put(w)
		return Reply{}, err
	}
	select {
	case <-w.ch:
	case <-ctx.Done():
		if w.state.CompareAndSwap(0, 2) {
			return Reply{}, ctx.Err()
		}
		<-w.ch
	}
	reply, err := w.reply, w.err
	w.reply, w.err = Reply{}, nil
	w.state.Store(0)
	r.waiters.Put(w)
	return reply, err
}

func (r *Runtime) submit(ctx context.Context, ev *Event, w *waiter) error {
	r.active.Add(1)
	defer r.active.Add(-1)
	if State(r.state.Load()) != Running {
		r.log.Debug("tandem: submit refused: not running", zap.String("state", r.State().String()),
			zap.String("event_type", ev.Type), zap.String("event_id", ev.ID))
		return ErrClosed
	}
	rt := r.router.match(ev.Type)
	if rt == nil {
		r.met.reject("no_route")
		r.log.Warn("tandem: no route", zap.String("event_type", ev.Type), zap.String("event_id", ev.ID))
		return fmt.Errorf("%w: %q", ErrNoRoute, ev.Type)
	}
	if !rt.isRust() {
		return r.submitGo(ctx, rt, ev, w)
	}
	return r.submitRust(ctx, rt, ev, w)
}

// submitRust encodes ev into a request slot and publishes it to the route's Rust handler.
func (r *Runtime) submitRust(ctx context.Context, rt *route, ev *Event, w *waiter) error {
	if n := EncodedEventSize(ev); n > r.cfg.MaxEventSize {
		r.met.reject("too_large")
		r.log.Warn("tandem: event too large", zap.String("event_type", ev.Type), zap.String("event_id", ev.ID),
			zap.Int("size", n), zap.Int("max", r.cfg.MaxEventSize))
		return fmt.Errorf("%w: %d bytes encoded, MaxEventSize is %d", ErrEventTooLarge, n, r.cfg.MaxEventSize)
	}
	var dones []func(error)
	if len(rt.opts.policies) > 0 {
		var err error
		if dones, err = admit(ctx, rt.opts.policies, ev); err != nil {
			if errors.Is(err, ErrDuplicate) {
				// A duplicate is acknowledged without running its handler.
				r.submitted.Add(1)
				r.completed.Add(1)
				if w != nil {
					w.settle(r, nil, Reply{})
				}
				return nil
			}
			return err
		}
	}
	idx, err := r.acquire(ctx, rt.opts.overload)
	if err != nil {
		r.met.reject("overloaded")
		finishAll(dones, err)
		if errors.Is(err, ErrShed) {
			r.shedRust(rt, ev)
		}
		return err
	}
	s := &r.slots[idx]
	buf := r.requestBuf(idx)
	// attempt counts deliveries: the first carries 1 (or the submitter's own count).
	attempt := max(ev.Attempt, 1)
	deadline := ev.Deadline
	if rt.opts.timeout > 0 {
		if d := time.Now().Add(rt.opts.timeout); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	var out []byte
	var sc trace.SpanContext
	if r.tr.on() {
		e := *ev
		sc = r.tr.publish(ctx, rt, ev, &e)
		out, err = AppendEvent(buf, &e)
	} else {
		out, err = AppendEvent(buf, ev)
	}
	if err != nil || unsafe.SliceData(out) != unsafe.SliceData(buf) {
		r.putSlot(idx)
		finishAll(dones, err)
		r.log.Warn("tandem: invalid event", zap.String("event_type", ev.Type), zap.String("event_id", ev.ID), zap.Error(err))
		if err == nil {
			err = fmt.Errorf("%w: encoder outgrew the request slot", ErrEventTooLarge)
		}
		return err
	}
	s.eventType = ev.Type
	s.route, s.dones, s.trace = rt, dones, sc
	s.attempt, s.limit = attempt, 0
	s.length = uint32(len(out))
	s.submittedAt = 0
	if r.met.on {
		s.submittedAt = nanotime()
		r.met.submit(rt)
	}
	token := uint64(s.gen)<<32 | uint64(idx)
	r.writeDelivery(idx, attempt, deadline)
	s.owner.Store(slotRust)
	s.w.Store(w) // last write before publishing: the poller's load orders everything above
	r.pending.Add(1)
	r.submitted.Add(1)
	r.budget.Deposit(time.Now())
	r.publish(idx, uint32(len(out)), rt.rustIndex, token)
	return nil
}

// admit runs each policy's admission in order; on a refusal the policies that had admitted
// the event learn the refusal (which is not a handler outcome).
func admit(ctx context.Context, policies []Policy, ev *Event) ([]func(error), error) {
	dones := make([]func(error), 0, len(policies))
	for _, p := range policies {
		done, err := p.Admit(ctx, ev)
		if err != nil {
			finishAll(dones, err)
			return nil, err
		}
		if done != nil {
			dones = append(dones, done)
		}
	}
	return dones, nil
}

func finishAll(dones []func(error), err error) {
	for _, d := range dones {
		d(err)
	}
}

// shedRust dead-letters an event a full Rust route shed.
func (r *Runtime) shedRust(rt *route, ev *Event) {
	r.deadLetterEvent(ev, nil, ReasonShed, &HandlerError{Outcome: OutcomeTerm, EventType: ev.Type, Envelope: ErrorEnvelope{
		Code: "shed", Message: "every request slot was in flight", Runtime: "go", Handler: rt.name}})
}

// acquire takes a free request slot, applying the overload policy when there is none.
func (r *Runtime) acquire(ctx context.Context, policy OverloadPolicy) (uint32, error) {
	var idx uint32
	select {
	case idx = <-r.free:
	default:
		switch policy {
		case Reject:
			return 0, ErrOverloaded
		case Shed:
			return 0, ErrShed
		}
		select {
		case idx = <-r.free:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-r.closing:
			return 0, ErrClosed
		}
	}
	if !r.slots[idx].owner.CompareAndSwap(slotFree, slotGo) {
		r.violation("request slot taken from the free list was not free", idx)
	}
	return idx, nil
}

func (r *Runtime) putSlot(idx uint32) {
	r.slots[idx].owner.Store(slotFree)
	r.free <- idx
}

// requestBuf is the envelope of request slot idx (after its delivery header) as an empty
// slice over shared memory, capacity MaxEventSize.
func (r *Runtime) requestBuf(idx uint32) []byte {
	p := unsafe.Add(r.requestSlot(idx), abi.DeliverySize)
	return unsafe.Slice((*byte)(p), r.layout.ReqSlotSize)[:0]
}

func (r *Runtime) requestSlot(idx uint32) unsafe.Pointer {
	l := &r.layout
	return unsafe.Add(l.Base, l.ReqArena+uint64(idx)*l.ReqStride)
}

// writeDelivery writes the delivery header of request slot idx: this delivery's number and
// deadline (zero: none), which Rust reads instead of the envelope's. Go owns the slot.
func (r *Runtime) writeDelivery(idx uint32, attempt uint32, deadline time.Time) {
	p := r.requestSlot(idx)
	var ns uint64
	if !deadline.IsZero() {
		ns = uint64(max(deadline.UnixNano(), 1))
	}
	*(*uint64)(unsafe.Add(p, abi.DeliveryDeadlineNs)) = ns
	*(*uint32)(unsafe.Add(p, abi.DeliveryAttempt)) = attempt
	*(*uint32)(unsafe.Add(p, abi.DeliveryFlags)) = 0
}

// deliveryDeadline reads back the deadline of the delivery header of request slot idx.
func (r *Runtime) deliveryDeadline(idx uint32) time.Time {
	ns := *(*uint64)(unsafe.Add(r.requestSlot(idx), abi.DeliveryDeadlineNs))
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}

func (r *Runtime) replyBytes(slot, n uint32) []byte {
	l := &r.layout
	p := unsafe.Add(l.Base, l.RepArena+uint64(slot)*l.RepStride)
	return unsafe.Slice((*byte)(p), n)
}

func (r *Runtime) releaseReply(slot uint32) {
	if r.freed.Load() {
		return // taken back at Shutdown
	}
	if !r.replies[slot].CompareAndSwap(1, 0) {
		r.violation("reply released twice", slot)
		return
	}
	r.pushRelease(slot)
}

func (r *Runtime) pushRelease(slot uint32) {
	for !r.sq.Push(abi.SQERelease, slot, 0, 0, 0) {
		runtimeGosched()
	}
	if r.sq.TakeWakeup() {
		r.wakeRust()
	}
}

func (r *Runtime) violation(what string, slot uint32) {
	r.violations.Add(1)
	r.log.Error("tandem: ownership violation", zap.String("what", what), zap.Uint32("slot", slot))
}

// settle delivers an outcome to its waiter.
func (w *waiter) settle(r *Runtime, err error, reply Reply) {
	if w.pooled {
		w.err, w.reply = err, reply
		if !w.state.CompareAndSwap(0, 1) {
			// The Call gave up waiting: release for it and recycle the waiter.
			reply.Release()
			w.err, w.reply = nil, Reply{}
			w.state.Store(0)
			r.waiters.Put(w)
			return
		}
		w.ch <- struct{}{}
		return
	}
	if !w.state.CompareAndSwap(0, 1) {
		// An event settles once: a second settle is a bug, counted, never a double count.
		reply.Release()
		r.violation("an event settled twice", 0)
		return
	}
	if reply.rt != nil {
		w.data = bytes.Clone(reply.data)
		reply.Release()
	} else {
		w.data = reply.data // a Go handler's reply, already in Go memory
	}
	w.err = err
	close(w.ch)
}

// submitRaw publishes already-encoded bytes as an event of eventType, bypassing the encoder.
// Tests use it to prove that Rust refuses malformed envelopes.
func (r *Runtime) submitRaw(raw []byte, eventType string, w *waiter) error {
	if State(r.state.Load()) != Running {
		return ErrClosed
	}
	idx, err := r.acquire(context.Background(), Block)
	if err != nil {
		return err
	}
	n := copy(r.requestBuf(idx)[:len(raw)], raw)
	r.writeDelivery(idx, 1, time.Time{})
	s := &r.slots[idx]
	s.eventType = eventType
	s.route, s.dones = nil, nil
	s.attempt, s.limit = 1, 0
	s.length = uint32(n)
	token := uint64(s.gen)<<32 | uint64(idx)
	s.owner.Store(slotRust)
	s.w.Store(w)
	r.pending.Add(1)
	r.submitted.Add(1)
	r.publish(idx, uint32(n), 0, token)
	return nil
}

var runtimeGosched = runtime.Gosched
