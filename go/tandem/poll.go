package tandem

import (
	"runtime"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/ring"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// poll is the completion poller, the completion ring's single consumer. It drains in batches,
// busy-polls an empty ring for SpinWindow (yielding its P between checks, so on a small
// machine the handlers still run), then parks on the Go eventfd through the netpoller.
func (r *Runtime) poll() {
	defer close(r.pollDone)
	const batch = 256
	var d ring.Desc
	var buf [8]byte
	var idleSince time.Time
	for {
		n := 0
		for n < batch && r.cq.Pop(&d) {
			r.complete(&d)
			n++
		}
		if n > 0 {
			idleSince = time.Time{}
			continue
		}
		if r.stopPoll.Load() {
			return
		}
		if r.cfg.SpinWindow > 0 {
			now := time.Now()
			if idleSince.IsZero() {
				idleSince = now
			}
			if now.Sub(idleSince) < r.cfg.SpinWindow {
				runtime.Gosched()
				continue
			}
			idleSince = time.Time{}
		}
		if !r.cq.PreparePark() {
			continue
		}
		if r.stopPoll.Load() {
			r.cq.Unpark()
			continue
		}
		r.goParks.Add(1)
		if _, err := r.goWake.Read(buf[:]); err != nil {
			r.log.Error("tandem: completion poller cannot wait on its eventfd", zap.Error(err))
			time.Sleep(time.Millisecond)
		}
		r.cq.Unpark()
	}
}

// complete handles one completion record: it takes the request slot back, reads the reply or
// error envelope, and then settles the event, schedules its redelivery, or dead-letters it.
func (r *Runtime) complete(d *ring.Desc) {
	switch d.Kind {
	case abi.OutcomeInProgress:
		return // a progress record extends a deadline; the event is still Rust's
	case abi.CQEEmit:
		r.onEmit(d)
		return
	case abi.CQELog:
		r.onLogs(d)
		return
	}
	idx, gen := uint32(d.Token), uint32(d.Token>>32)
	if int(idx) >= len(r.slots) || d.Slot != idx || r.slots[idx].gen != gen {
		r.violation("completion for a slot not in flight", idx)
		if d.ReplySlot != abi.NoSlot && int(d.ReplySlot) < len(r.replies) {
			r.replies[d.ReplySlot].Store(1)
			r.releaseReply(d.ReplySlot)
		}
		return
	}
	s := &r.slots[idx]
	_ = s.w.Load() // orders the submitter's (or redelivery's) writes before the reads below
	if !s.owner.CompareAndSwap(slotRust, slotGo) {
		r.violation("completion for a slot Rust did not own", idx)
	}
	var reply Reply
	if d.ReplySlot != abi.NoSlot {
		if int(d.ReplySlot) >= len(r.replies) || !r.replies[d.ReplySlot].CompareAndSwap(0, 1) {
			r.violation("reply slot lent twice", d.ReplySlot)
		} else {
			reply = Reply{rt: r, slot: d.ReplySlot, data: r.replyBytes(d.ReplySlot, d.ReplyLen)}
		}
	}
	if r.met.on && d.StartedNs != 0 {
		outcome := OutcomeAck
		switch d.Kind {
		case abi.OutcomeRetry:
			outcome = OutcomeRetry
		case abi.OutcomeTerm:
			outcome = OutcomeTerm
		}
		r.met.delivered(s.route, outcome, time.Duration(d.FinishedNs-d.StartedNs))
	}
	var span trace.Span
	if r.tr.on() && d.StartedNs != 0 {
		span = r.tr.rustProcess(s.trace, s.route, s.eventType, s.attempt, time.Unix(0, int64(d.StartedNs)))
		s.span = span
		defer span.End(trace.WithTimestamp(time.Unix(0, int64(d.FinishedNs))))
	}
	switch d.Kind {
	case abi.OutcomeAck:
		if span != nil {
			spanOutcome(span, nil)
		}
		r.finish(idx, nil, reply)
	case abi.OutcomeRetry, abi.OutcomeTerm:
		he := r.handlerError(d, s.eventType, &reply)
		if span != nil {
			spanOutcome(span, he)
		}
		r.failed(idx, he)
	default:
		r.violation("unknown completion kind", idx)
		reply.Release()
		r.finish(idx, &HandlerError{Outcome: OutcomeTerm, EventType: s.eventType,
			Envelope: ErrorEnvelope{Code: envelope.CodeProtocol, Message: "unknown completion kind", Runtime: "rust"}}, Reply{})
	}
}

// finish settles the event in slot idx with its final outcome and frees the slot.
func (r *Runtime) finish(idx uint32, err error, reply Reply) {
	s := &r.slots[idx]
	finishAll(s.dones, err)
	r.met.settled(s.route, err == nil, s.submittedAt)
	w := r.freeSlot(idx)
	r.pending.Add(-1)
	r.completed.Add(1)
	if w == nil {
		reply.Release()
		return
	}
	w.settle(r, err, reply)
}

// freeSlot returns slot idx to the free list and hands back its waiter. Its policies learn
// the outcome from finish or deadLetter, which call settleDones first.
func (r *Runtime) freeSlot(idx uint32) *waiter {
	s := &r.slots[idx]
	w := s.w.Swap(nil)
	s.route, s.dones, s.span = nil, nil, nil
	s.eventType = ""
	s.gen++
	s.owner.Store(slotFree)
	r.free <- idx
	return w
}

// handlerError decodes the error envelope in reply (copying it) and releases the slot.
func (r *Runtime) handlerError(d *ring.Desc, eventType string, reply *Reply) *HandlerError {
	he := &HandlerError{Outcome: OutcomeTerm, EventType: eventType}
	if d.Kind == abi.OutcomeRetry {
		he.Outcome = OutcomeRetry
		he.RetryAfter = time.Duration(d.Aux)
	}
	if reply.rt == nil {
		he.Envelope = ErrorEnvelope{Code: envelope.CodeUnknown, Message: "the handler failed without an error envelope", Runtime: "rust"}
	} else if env, err := envelope.DecodeErrorEnvelope(reply.data); err != nil {
		r.log.Error("tandem: malformed error envelope from Rust", zap.Error(err), zap.String("event_type", eventType))
		he.Envelope = ErrorEnvelope{Code: envelope.CodeDecode, Message: "malformed error envelope: " + err.Error(), Runtime: "rust"}
	} else {
		he.Envelope = *env
	}
	reply.Release()
	*reply = Reply{}
	switch he.Envelope.Code {
	case envelope.CodeCancelled:
		r.cancelled.Add(1)
	case envelope.CodeDecode, envelope.CodeNoRoute:
		r.log.Error("tandem: Rust refused an event", zap.String("runtime", "rust"), zap.String("code", he.Envelope.Code),
			zap.String("event_type", eventType), zap.String("message", he.Envelope.Message))
	case envelope.CodePanic:
		r.log.Error("tandem: Rust handler panicked", zap.String("runtime", "rust"), zap.String("handler", he.Envelope.Handler),
			zap.String("event_type", eventType), zap.String("message", he.Envelope.Message))
	}
	r.log.Debug("tandem: handler failed", zap.String("runtime", "rust"), zap.String("handler", he.Envelope.Handler),
		zap.String("event_type", eventType), zap.String("outcome", he.Outcome.String()), zap.String("code", he.Envelope.Code))
	return he
}
