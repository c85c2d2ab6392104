package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/ring"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// A Rust handler's call (cx.call) arrives as a TANDEM_CQE_CALL: the event's envelope in a
// reply slot lent to Go, and the call's ID. Go runs the event's whole delivery like a
// submitted one's (policies, retries, dead letters, a handler in either runtime) with a
// rustCall as its waiter, and keeps the reply slot: the final outcome (the reply, or the
// error envelope) is written into it and the slot handed back with a TANDEM_SQE_REPLY.
// Reusing the call's own slot means an answer never waits for a buffer: a request slot
// would, and with every request slot held by a Rust caller waiting on its answer, none
// would come back. A caller that stops waiting sends a TANDEM_CQE_CALL_CANCEL: a Go callee's
// context ends, a Rust callee is cancelled (TANDEM_SQE_CANCEL), neither is retried, and the
// slot goes back with a plain release.

// rustCall is the waiter of a delivery a Rust handler called. Settled exactly once, by the
// delivery's final outcome; its cancel may come at any time, from the completion poller.
type rustCall struct {
	e    *Engine
	id   uint64
	slot uint32 // the reply slot the call lent: the envelope, then the answer
	// ctx ends when the caller gives up (TANDEM_CQE_CALL_CANCEL), when the answer is sent,
	// or when the runtime stops: the context a Go callee runs in.
	ctx       context.Context
	cancel    context.CancelFunc
	abandoned atomic.Bool // the caller gave up: answer with a plain release
	// rustToken is the ring token of the callee's latest delivery to a Rust handler (0: none
	// yet): what a TANDEM_SQE_CANCEL names.
	rustToken atomic.Uint64
}

// Settle is the plain Waiter's way in, which the engine takes only where there is no Failure
// (a policy that acknowledged the event itself); an error there becomes the message of an
// error envelope with code handler.
func (c *rustCall) Settle(err error, reply Reply) {
	if err == nil {
		c.answer(nil, reply)
		return
	}
	c.answer(failure(OutcomeTerm, "", envelope.CodeHandler, err.Error(), ""), reply)
}

// settleFailure takes the final outcome with the failure itself, so that the caller gets
// the callee's own error envelope (finish and the dead-letter writer call it).
func (c *rustCall) settleFailure(f *Failure, reply Reply) { c.answer(f, reply) }

// failureWaiter is a Waiter that wants a failed delivery's Failure, not the error
// Config.ErrorOf makes of it: a Rust caller reads the error envelope.
type failureWaiter interface {
	Waiter
	settleFailure(f *Failure, reply Reply)
}

// settleWaiter tells w the final outcome: f nil for an ack, err what ErrorOf made of f.
func settleWaiter(w Waiter, f *Failure, err error, reply Reply) {
	if fw, ok := w.(failureWaiter); ok {
		fw.settleFailure(f, reply)
		return
	}
	w.Settle(err, reply)
}

// callAbandoned reports whether d's caller, a Rust handler, stopped waiting: its delivery is
// then not retried.
func callAbandoned(d *Delivery) bool {
	c, ok := d.waiter.(*rustCall)
	return ok && c.abandoned.Load()
}

// callContext is the context d's Go handler runs in: the caller's, for a Rust handler's call,
// so that a caller that gives up ends it.
func (e *Engine) callContext(d *Delivery) context.Context {
	if c, ok := d.waiter.(*rustCall); ok {
		return c.ctx
	}
	return e.goCtx
}

// onCall takes a Rust handler's call: it copies the event out of the call's reply slot (which
// Go keeps for the answer) and queues it for routing, or, for an event that already ran
// inside Rust and failed, takes its delivery over as onLocalFailure does.
func (e *Engine) onCall(c *ring.Desc) {
	if !e.lend(c.ReplySlot, "called event in a reply slot not lent to Go") {
		return
	}
	raw := bytes.Clone(e.replyBytes(c.ReplySlot, c.ReplyLen))
	call := &rustCall{e: e, id: c.Token, slot: c.ReplySlot}
	call.ctx, call.cancel = context.WithCancel(e.goCtx)
	e.calls.Store(c.Token, call)
	if c.Flags != 0 {
		e.takeOverLocal(c, raw, call)
		return
	}
	ev, err := envelope.DecodeEvent(raw)
	if err != nil {
		call.answer(failure(OutcomeTerm, "", envelope.CodeDecode, "a Rust handler called with a malformed envelope: "+err.Error(), ""), Reply{})
		return
	}
	if !e.queue.push(queued{ev: ev, raw: raw, call: call}, false) {
		call.answer(failure(OutcomeTerm, ev.Type, envelope.CodeShed, "too many Rust-emitted events waiting to be routed", ""), Reply{})
	}
}

// onCallCancel takes a caller's TANDEM_CQE_CALL_CANCEL: the callee's context ends (a Go
// callee's), Rust is asked to cancel it (a Rust callee's latest delivery, if it still runs:
// TANDEM_SQE_CANCEL), and its delivery settles at its next step without a retry. A callee
// that already ran keeps its effects; its outcome goes nowhere.
func (e *Engine) onCallCancel(id uint64) {
	v, ok := e.calls.Load(id)
	if !ok {
		return
	}
	c := v.(*rustCall)
	c.abandoned.Store(true)
	c.cancel()
	if token := c.rustToken.Load(); token != 0 {
		for !e.sq.Push(abi.SQECancel, 0, 0, 0, token) {
			gosched()
		}
		if e.sq.TakeWakeup() {
			e.crossToRust(0)
		}
	}
}

// routeCall routes a called event from the dispatch queue. A refusal (no route, a policy's,
// shutting down) answers the caller at once: nothing was accepted, so nothing is
// dead-lettered, as for a Go caller's Call.
func (e *Engine) routeCall(ev *envelope.Event, raw []byte, call *rustCall) {
	err := e.intake(call.ctx, ev, raw, call, nil)
	if err == nil || errors.Is(err, ErrShed) {
		return // accepted, or dead-lettered by the shed, which settles the call
	}
	code := envelope.CodeInvalid
	switch {
	case errors.Is(err, ErrNoRoute):
		code = envelope.CodeNoRoute
	case errors.Is(err, ErrClosed) || e.goCtx.Err() != nil:
		code = envelope.CodeCancelled
	case errors.Is(err, ErrOverloaded):
		code = envelope.CodeOverloaded
	case errors.Is(err, context.Canceled):
		code = envelope.CodeCancelled
	}
	call.answer(failure(OutcomeTerm, ev.Type, code, "routing a Rust handler's call: "+err.Error(), ""), Reply{})
}

// answer hands the call's reply slot back to Rust with the final outcome: the reply (f nil)
// or f's error envelope. To a caller that gave up, or a runtime that is stopping, the slot
// goes back with a plain release instead.
func (c *rustCall) answer(f *Failure, reply Reply) {
	e := c.e
	e.calls.Delete(c.id)
	defer c.cancel()
	e.lifeMu.RLock() // the region stays mapped while the answer is written
	if c.abandoned.Load() || e.rustStopping.Load() {
		e.lifeMu.RUnlock()
		reply.Release()
		e.releaseReply(c.slot)
		return
	}
	buf := e.replyBuffer(c.slot)
	outcome, n := abi.OutcomeAck, 0
	if f == nil {
		data := reply.Data()
		if len(data) > len(buf) {
			f = failure(OutcomeTerm, "", envelope.CodeReplyTooLarge,
				fmt.Sprintf("the reply of %d bytes exceeds the %d-byte reply slot", len(data), len(buf)), "")
		} else {
			n = copy(buf, data)
		}
	}
	reply.Release()
	if f != nil {
		outcome = abi.OutcomeTerm
		if f.Outcome == OutcomeRetry {
			outcome = abi.OutcomeRetry
		}
		n = appendErrorInto(buf, &f.Envelope)
	}
	if !e.replies[c.slot].CompareAndSwap(1, 0) {
		e.lifeMu.RUnlock()
		e.violation("call answered with a reply slot Go does not hold", c.slot)
		return
	}
	for !e.sq.Push(abi.SQEReply, c.slot, uint32(n), outcome, c.id) {
		gosched()
	}
	e.lifeMu.RUnlock()
	// A caller waits on it: wake or cross like an event.
	if e.sq.TakeWakeup() {
		e.crossToRust(0)
	}
}

// appendErrorInto writes env into buf, shortening its message until it fits, and returns
// the length.
func appendErrorInto(buf []byte, env *envelope.ErrorEnvelope) int {
	ee := *env
	if ee.Code == "" {
		ee.Code = envelope.CodeUnknown
	}
	for {
		out, err := envelope.AppendErrorEnvelope(buf[:0], &ee)
		if err == nil && len(out) <= len(buf) && unsafe.SliceData(out) == unsafe.SliceData(buf) {
			return len(out)
		}
		if ee.Message == "" {
			return 0
		}
		ee.Message = ee.Message[:len(ee.Message)/2]
	}
}

// replyBuffer is the whole of reply slot slot, for an answer Go writes while it holds it.
func (e *Engine) replyBuffer(slot uint32) []byte {
	l := &e.layout
	p := unsafe.Add(l.Base, l.RepArena+uint64(slot)*l.RepStride)
	return unsafe.Slice((*byte)(p), l.RepSlotSize)
}
