package tandem

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
)

// ReasonRetryBudget: the retry budget refused a retry (a failing dependency, most likely).
const ReasonRetryBudget DeadLetterReason = "retry_budget"

// deadLetterQueue bounds the dead letters waiting for the sink; a full queue holds up the
// completion poller until the sink catches up (backpressure, never a drop).
const deadLetterQueue = 1024

// retryTable holds the events waiting for a redelivery: their slots stay Go's, their waiters
// attached, and a timer (not a goroutine, not a worker) brings each back.
type retryTable struct {
	mu          sync.Mutex
	closed      bool                    // set at shutdown: no more redeliveries
	waiting     map[uint32]*time.Timer  // Rust routes, by request slot
	goWaiting   map[*goJob]*time.Timer  // Go routes
	emitWaiting map[*emitRetry]struct{} // failed events routed inside Rust
}

// retryVerdict is what a retryable failure becomes.
type retryVerdict struct {
	settle bool             // shutting down: settle as retryable, no redelivery
	reason DeadLetterReason // dead-letter it for this reason; "" means redeliver after delay
	delay  time.Duration
}

// judgeRetry decides a retryable failure the same way whichever runtime ran the handler: the
// shutdown rule, the attempt limit (the route's, or the handler's advice of n more attempts,
// which *limit remembers for the event), the retry budget, then the backoff.
func (r *Runtime) judgeRetry(rt *route, attempt uint32, limit *uint32, he *HandlerError) retryVerdict {
	if State(r.state.Load()) == Draining || r.goCtx.Err() != nil {
		return retryVerdict{settle: true}
	}
	if advice := he.Envelope.Retry; advice != nil && advice.Attempts > 0 {
		*limit = attempt + advice.Attempts
	}
	b := rt.backoff(r)
	exhausted := b.Exhausted(attempt, nil)
	if *limit > 0 {
		exhausted = attempt >= *limit
	}
	now := time.Now()
	switch {
	case exhausted:
		return retryVerdict{reason: ReasonMaxAttempts}
	case !r.budget.Withdraw(now):
		return retryVerdict{reason: ReasonRetryBudget}
	}
	return retryVerdict{delay: b.Delay(attempt, he.Envelope.Retry, he.RetryAfter, now, rand.Float64)}
}

// terminalReason names why a terminal failure is dead-lettered.
func terminalReason(he *HandlerError) DeadLetterReason {
	switch he.Envelope.Code {
	case "decode":
		return ReasonDecode
	case "no_route":
		return ReasonNoRoute
	}
	return ReasonTerm
}

// failed handles a Rust route's failure (the slot is Go's on entry): a redelivery from the
// same slot, a dead letter, or at shutdown a retryable outcome for the submitter.
func (r *Runtime) failed(idx uint32, he *HandlerError) {
	s := &r.slots[idx]
	if he.Outcome != OutcomeRetry {
		r.deadLetter(idx, he, terminalReason(he))
		return
	}
	v := r.judgeRetry(s.route, s.attempt, &s.limit, he)
	switch {
	case v.settle:
		r.finish(idx, he, Reply{}) // never lost: the submitter learns it may retry
	case v.reason != "":
		r.deadLetter(idx, he, v.reason)
	case !r.scheduleRetry(idx, v.delay):
		r.finish(idx, he, Reply{}) // shutting down
	}
}

func (r *Runtime) scheduleRetry(idx uint32, delay time.Duration) bool {
	r.retries.mu.Lock()
	defer r.retries.mu.Unlock()
	if r.retries.closed {
		return false
	}
	r.retries.waiting[idx] = time.AfterFunc(delay, func() { r.redeliver(idx) })
	r.retried.Add(1)
	r.met.retry(r.slots[idx].route)
	return true
}

// redeliver publishes the event in slot idx again as the next attempt.
func (r *Runtime) redeliver(idx uint32) {
	r.retries.mu.Lock()
	defer r.retries.mu.Unlock()
	if _, ok := r.retries.waiting[idx]; !ok {
		return // settled by cancelRetries
	}
	delete(r.retries.waiting, idx)
	s := &r.slots[idx]
	w := s.w.Load() // orders the poller's writes to the slot before ours
	// The envelope stays as it is; only the delivery header changes.
	deadline := r.deliveryDeadline(idx)
	if s.route != nil && s.route.opts.timeout > 0 {
		deadline = time.Now().Add(s.route.opts.timeout)
	}
	s.attempt++
	r.writeDelivery(idx, s.attempt, deadline)
	token := uint64(s.gen)<<32 | uint64(idx)
	var flags uint32
	if s.route != nil {
		flags = s.route.rustIndex
	}
	// Nothing of the slot is read after it is handed to Rust: its completion may free it.
	s.owner.Store(slotRust)
	s.w.Store(w)
	r.publish(idx, s.length, flags, token)
}

// cancelRetries stops every pending redelivery and settles its event as retryable.
func (r *Runtime) cancelRetries() {
	r.retries.mu.Lock()
	r.retries.closed = true
	waiting, goWaiting, emitWaiting := r.retries.waiting, r.retries.goWaiting, r.retries.emitWaiting
	r.retries.waiting, r.retries.goWaiting = map[uint32]*time.Timer{}, map[*goJob]*time.Timer{}
	r.retries.emitWaiting = map[*emitRetry]struct{}{}
	r.retries.mu.Unlock()
	for e := range emitWaiting {
		e.timer.Stop()
		r.deadLetterEvent(e.ev, e.env, ReasonCancelled, e.he) // nobody to hand a retryable outcome to
	}
	for job, t := range goWaiting {
		t.Stop()
		r.cancelled.Add(1)
		r.goFinish(job, &HandlerError{Outcome: OutcomeRetry, EventType: job.ev.Type, Envelope: ErrorEnvelope{
			Code: "cancelled", Message: "the runtime shut down before the next attempt", Runtime: "go", Handler: job.route.name}}, nil)
	}
	for idx, t := range waiting {
		t.Stop()
		s := &r.slots[idx]
		_ = s.w.Load()
		r.cancelled.Add(1)
		r.finish(idx, &HandlerError{Outcome: OutcomeRetry, EventType: s.eventType, Envelope: ErrorEnvelope{
			Code: "cancelled", Message: "the runtime shut down before the next attempt", Runtime: "go"}}, Reply{})
	}
}

// deadLetterJob is a dead letter on its way to the sink, with the waiter to settle after it is
// written: the submitter's acknowledgement fires once the dead letter is recorded.
type deadLetterJob struct {
	dl  *DeadLetter
	w   *waiter
	err error
}

// deadLetter copies the event out of slot idx, frees the slot, and queues the dead letter;
// the event settles (with he) once the sink has it.
func (r *Runtime) deadLetter(idx uint32, he *HandlerError, reason DeadLetterReason) {
	s := &r.slots[idx]
	spanDeadLettered(s.span, reason)
	r.met.deadLetter(s.route, reason)
	r.met.settled(s.route, false, s.submittedAt)
	he.DeadLetter = reason
	env := append([]byte(nil), r.requestBuf(idx)[:s.length]...)
	dl := &DeadLetter{
		Reason:    reason,
		Error:     &he.Envelope,
		Attempts:  s.attempt,
		EventType: s.eventType,
		Route:     he.Envelope.Handler,
		Time:      time.Now(),
		Envelope:  env,
	}
	if ev, err := DecodeEvent(env); err == nil {
		dl.EventID, dl.Source = ev.ID, ev.Source
	}
	finishAll(s.dones, he)
	w := r.freeSlot(idx)
	r.deadLettered.Add(1)
	r.dead <- deadLetterJob{dl: dl, w: w, err: he}
}

// writeDeadLetters hands queued dead letters to the sink, then settles their events.
func (r *Runtime) writeDeadLetters() {
	defer r.deadWG.Done()
	for job := range r.dead {
		dl := job.dl
		fields := []zap.Field{zap.String("reason", string(dl.Reason)), zap.String("event_type", dl.EventType),
			zap.String("event_id", dl.EventID), zap.Uint32("attempt", dl.Attempts)}
		if dl.Error != nil {
			fields = append(fields, zap.String("code", dl.Error.Code), zap.String("message", dl.Error.Message))
		}
		if r.cfg.DeadLetters == nil {
			r.log.Error("tandem: dead letter (no sink configured)", fields...)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := r.cfg.DeadLetters.WriteDeadLetter(ctx, dl); err != nil {
				r.log.Error("tandem: dead-letter sink failed; the dead letter is only in this log line",
					append(fields, zap.Error(err), zap.Binary("envelope", dl.Envelope))...)
			} else {
				r.log.Warn("tandem: dead-lettered", fields...)
			}
			cancel()
		}
		r.pending.Add(-1)
		r.completed.Add(1)
		if job.w != nil {
			job.w.settle(r, job.err, Reply{})
		}
	}
}

// publish puts an event descriptor on the submission ring and wakes Rust if it is parked.
func (r *Runtime) publish(idx, length, route uint32, token uint64) {
	r.toRust.Add(1)
	for !r.sq.Push(abi.SQEEvent, idx, length, route, token) {
		// Unreachable: the ring holds every slot's descriptor at once. Stay correct anyway.
		runtimeGosched()
	}
	if r.sq.TakeWakeup() {
		r.wakeRust()
	}
}
