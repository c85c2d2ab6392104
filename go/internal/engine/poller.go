package engine

import (
	"errors"
	"os"
	"runtime"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/ring"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// poll is the completion poller, the completion ring's consumer whenever no publisher holds
// that role (crossing.go). It drains in batches, busy-polls an empty ring for as long as the
// arrivals it sees suggest the next one is near (spinWindow; yielding its P between checks,
// so on a small machine the handlers still run), then parks on the Go eventfd through the
// netpoller.
func (e *Engine) poll() {
	defer close(e.pollDone)
	var d ring.Desc
	var buf [8]byte
	var idleSince int64
	sp := spinner{max: int64(e.cfg.SpinWindow)}
	for {
		if n := e.pollTurn(&d); n > 0 {
			sp.arrived(nanotime())
			idleSince = 0
			continue
		}
		if e.stopPoll.Load() {
			if e.cqOwner.Load() == cqFree && e.cq.Empty() {
				return
			}
			runtime.Gosched() // a publisher is settling the last completions
			continue
		}
		// On a small machine two busy pollers would take both cores from the handlers and
		// the callers: this one spins only while Rust's is parked.
		if w := sp.window(); w > 0 && (e.roomy || e.sq.Parked()) {
			now := nanotime()
			if idleSince == 0 {
				idleSince = now
			}
			if now-idleSince < w {
				runtime.Gosched()
				continue
			}
			idleSince = 0
		}
		if !e.cq.PreparePark() {
			continue
		}
		if e.stopPoll.Load() {
			e.cq.Unpark()
			continue
		}
		e.obs.goParks.Add(1)
		e.sleep(buf[:])
		e.cq.Unpark()
		sp.woken()
	}
}

// complete handles one completion record. An outcome takes the request slot back and
// settles its delivery: acked, or failed (retry, dead letter).
func (e *Engine) complete(c *ring.Desc) { e.completeBy(c, false) }

// completeBy is complete; here says the event's submitter completes it on its own goroutine,
// inside its Submit (runHere from intake), so an acknowledgement settles it there (finishBy).
func (e *Engine) completeBy(c *ring.Desc, here bool) {
	switch c.Kind {
	case abi.OutcomeInProgress:
		return // a progress record extends a deadline; the event is still Rust's
	case abi.CQEEmit:
		e.onEmit(c)
		return
	case abi.CQELog:
		e.onLogs(c)
		return
	case abi.CQECall:
		e.onCall(c)
		return
	case abi.CQECallCancel:
		e.onCallCancel(c.Token)
		return
	}
	idx, gen := uint32(c.Token), uint32(c.Token>>32)
	var d *Delivery
	if int(idx) < len(e.slots.table) {
		// Loaded before gen is read: the publisher's store orders, for the race detector, the
		// slot's last free (gen++), which any goroutine may have made, before this read.
		d = e.slots.table[idx].d.Load()
	}
	if int(idx) >= len(e.slots.table) || c.Slot != idx || e.slots.table[idx].gen != gen {
		e.violation("completion for a slot not in flight", idx)
		if c.ReplySlot != abi.NoSlot && int(c.ReplySlot) < len(e.replies) {
			e.replies[c.ReplySlot].Store(1)
			e.releaseReply(c.ReplySlot)
		}
		return
	}
	sl := &e.slots.table[idx]
	// d, loaded above, orders the submitter's (or redelivery's) writes before the reads below.
	if !sl.owner.CompareAndSwap(slotRust, slotGo) || d == nil {
		e.violation("completion for a slot Rust did not own", idx)
		return
	}
	var reply Reply
	if c.ReplySlot != abi.NoSlot && e.lend(c.ReplySlot, "reply slot lent twice") {
		reply = Reply{e: e, slot: c.ReplySlot, data: e.replyBytes(c.ReplySlot, c.ReplyLen)}
	}
	outcome := OutcomeAck
	switch c.Kind {
	case abi.OutcomeRetry:
		outcome = OutcomeRetry
	case abi.OutcomeTerm:
		outcome = OutcomeTerm
	}
	var span trace.Span
	if c.StartedNs != 0 {
		if span = e.obs.rustDelivered(d, outcome, c.StartedNs, c.FinishedNs); span != nil {
			d.span = span
		}
	}
	switch c.Kind {
	case abi.OutcomeAck:
		e.obs.spanOutcome(d.span, nil)
		e.ackedBy(d, reply, here)
	case abi.OutcomeRetry, abi.OutcomeTerm:
		f := e.rustFailure(c, d, &reply)
		e.obs.spanOutcome(d.span, f)
		e.failed(d, f)
	default:
		e.unknownOutcome(d, idx, reply)
	}
	if span != nil {
		endSpanAt(span, c.FinishedNs)
	}
}

// unknownOutcome dead-letters the delivery of a completion whose kind Go does not know. Apart
// from complete, as is every rare step of it, so that its stack frame stays small (a
// goroutine whose first call is a Call runs it: see intake.go's refused).
//
//go:noinline
func (e *Engine) unknownOutcome(d *Delivery, idx uint32, reply Reply) {
	e.violation("unknown completion kind", idx)
	reply.Release()
	f := &Failure{Outcome: OutcomeTerm, EventType: d.typ,
		Envelope: envelope.ErrorEnvelope{Code: envelope.CodeProtocol, Message: "unknown completion kind", Runtime: "rust"}}
	e.deadLetter(d, f, deadletter.ReasonTerm)
}

// endSpanAt ends a Rust delivery's span when its handler finished (Unix ns), once its
// outcome is handled.
//
//go:noinline
func endSpanAt(span trace.Span, finishedNs uint64) {
	span.End(trace.WithTimestamp(time.Unix(0, int64(finishedNs))))
}

// rustFailure reads a failed delivery's error envelope from its reply slot (copying it)
// and releases the slot.
func (e *Engine) rustFailure(c *ring.Desc, d *Delivery, reply *Reply) *Failure {
	f := &Failure{Outcome: OutcomeTerm, EventType: d.typ}
	if c.Kind == abi.OutcomeRetry {
		f.Outcome = OutcomeRetry
		f.RetryAfter = time.Duration(c.Aux)
	}
	if reply.e == nil {
		f.Envelope = envelope.ErrorEnvelope{Code: envelope.CodeUnknown, Message: "the handler failed without an error envelope", Runtime: "rust"}
	} else if env, err := envelope.DecodeErrorEnvelope(reply.data); err != nil {
		e.log.Error("tandem: malformed error envelope from Rust", zap.Error(err), zap.String("event_type", d.typ))
		f.Envelope = envelope.ErrorEnvelope{Code: envelope.CodeDecode, Message: "malformed error envelope: " + err.Error(), Runtime: "rust"}
	} else {
		f.Envelope = *env
	}
	reply.Release()
	*reply = Reply{}
	switch f.Envelope.Code {
	case envelope.CodeDecode, envelope.CodeNoRoute:
		e.log.Error("tandem: Rust refused an event", zap.String("runtime", "rust"), zap.String("code", f.Envelope.Code),
			zap.String("event_type", d.typ), zap.String("message", f.Envelope.Message))
	case envelope.CodePanic:
		e.log.Error("tandem: Rust handler panicked", zap.String("runtime", "rust"), zap.String("handler", f.Envelope.Handler),
			zap.String("event_type", d.typ), zap.String("message", f.Envelope.Message))
	}
	e.log.Debug("tandem: handler failed", zap.String("runtime", "rust"), zap.String("handler", f.Envelope.Handler),
		zap.String("event_type", d.typ), zap.String("outcome", f.Outcome.String()), zap.String("code", f.Envelope.Code))
	return f
}

// sleep waits on the Go eventfd until it is written. Every parkCheck it looks at the ring
// anyway: completions there with the parked flag still up were stranded by a lost wake-up, a
// bug the counter makes visible, and the look bounds its cost. Otherwise it sleeps on (the
// flag down means whoever took it discharges it: a wake, or a crossing that settles them).
func (e *Engine) sleep(buf []byte) {
	for {
		e.goWake.SetReadDeadline(time.Now().Add(parkCheck))
		_, err := e.goWake.Read(buf)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if e.cq.Parked() && !e.cq.Empty() {
				e.obs.rescues.Add(1)
				return
			}
			if e.stopPoll.Load() {
				return
			}
		case err != nil:
			e.log.Error("tandem: completion poller cannot wait on its eventfd", zap.Error(err))
			time.Sleep(time.Millisecond)
			return
		default:
			return
		}
	}
}

// parkCheck is how long the parked poller sleeps before it looks at the completion ring
// anyway: a bound on what a lost wake-up (a bug: Stats.Rescues counts them) could cost, at
// one wake a second at idle (ten cost 0.3% of a core on a small VM). Rust's poller does the same (PARK_CHECK).
const parkCheck = time.Second

// spareCoresForAPoller is the core count from which a poller may spin while the other side's
// is awake too: one core each for the pollers, the rest for Go and the handlers (Rust's
// SPARE_CORES_FOR_A_POLLER decides its side the same way).
const spareCoresForAPoller = 4

// spinner sizes a poller's spin window from the gaps between the arrivals it sees while
// awake (Aeron's idle strategies, fitted to the load): it spins twice the longest recent gap,
// at most max. After a stream of close arrivals stops, the poller parks after a short spin
// rather than a whole window; bursty arrivals (batches, then a pause while the other side
// settles them) keep the whole window, since a pause in the middle of load must not cost a
// park and a wake. The longest gap decays by an eighth per arrival, so a pause is forgotten
// after a few dozen close arrivals; each gap counts as at most max. Not safe for concurrent
// use: one per poller.
type spinner struct {
	max  int64 // the configured spin window, ns; 0 or less: never spin
	peak int64 // the longest recent gap, ns; 0 until two arrivals were seen
	last int64 // the last arrival, nanotime
}

// arrived records an arrival at now (nanotime).
func (s *spinner) arrived(now int64) {
	if s.last != 0 {
		s.peak = max(min(now-s.last, s.max), s.peak-s.peak/8)
	}
	s.last = now
}

// woken forgets what was learnt before a park: a poller is woken because work is arriving
// again (a handover means arrivals closer than the window), so it starts with the whole
// window and learns the new gaps. A park's length is no gap between arrivals.
func (s *spinner) woken() { s.peak, s.last = 0, 0 }

// window is how long to spin on an empty ring before parking, ns.
func (s *spinner) window() int64 {
	switch {
	case s.max <= 0:
		return 0
	case s.peak == 0:
		return s.max // nothing learned yet
	}
	return min(2*s.peak, s.max)
}
