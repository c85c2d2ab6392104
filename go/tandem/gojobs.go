package tandem

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// goJob is one event on its way through a Go route: an owned copy of the event, its waiter,
// and its delivery count.
type goJob struct {
	span    trace.Span // the current delivery's span while its outcome is handled
	route   *route
	ev      Event
	w       *waiter
	attempt uint32
	limit   uint32 // the last delivery a handler's retry advice allows; 0: the route's
	// submittedAt is nanotime at submit, for the latency histogram (0: metrics off).
	submittedAt int64
}

// cloneEvent copies ev so the submitter may reuse its buffers once Submit returns.
func cloneEvent(ev *Event) Event {
	c := *ev
	c.Data = append([]byte(nil), ev.Data...)
	c.Extensions = maps.Clone(ev.Extensions)
	return c
}

// workerPool runs one Go route's handler: a bounded queue and between min and max worker
// goroutines, grown when no worker is idle and shrunk when one idles for the route's idle
// time. Safe for concurrent use.
type workerPool struct {
	r     *Runtime
	route *route
	queue chan *goJob

	mu      sync.Mutex
	workers int
	stopped bool
	idle    atomic.Int32
	wg      sync.WaitGroup
}

func newWorkerPool(r *Runtime, rt *route) *workerPool {
	return &workerPool{r: r, route: rt, queue: make(chan *goJob, rt.opts.queue)}
}

func (p *workerPool) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.workers < p.route.opts.minWorkers {
		p.spawnLocked()
	}
}

func (p *workerPool) spawnLocked() {
	p.workers++
	p.wg.Add(1)
	go p.work()
}

// Size returns the number of workers (for stats).
func (p *workerPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers
}

// enqueue hands a job to the pool under the route's overload policy.
func (p *workerPool) enqueue(ctx context.Context, job *goJob, policy OverloadPolicy) error {
	select {
	case p.queue <- job:
	default:
		switch policy {
		case Reject:
			return ErrOverloaded
		case Shed:
			return ErrShed
		}
		select {
		case p.queue <- job:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.r.closing:
			return ErrClosed
		}
	}
	// Grow while more events wait than workers idle, up to the maximum.
	if int(p.idle.Load()) < len(p.queue) {
		p.mu.Lock()
		if !p.stopped && p.workers < p.route.opts.maxWorkers {
			p.spawnLocked()
		}
		p.mu.Unlock()
	}
	return nil
}

func (p *workerPool) work() {
	defer p.wg.Done()
	timer := time.NewTimer(p.route.opts.idle)
	defer timer.Stop()
	for {
		p.idle.Add(1)
		select {
		case job, ok := <-p.queue:
			p.idle.Add(-1)
			if !ok {
				p.exit()
				return
			}
			p.r.runGo(job)
			timer.Reset(p.route.opts.idle)
		case <-timer.C:
			p.idle.Add(-1)
			p.mu.Lock()
			if p.workers > p.route.opts.minWorkers {
				p.workers--
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			timer.Reset(p.route.opts.idle)
		}
	}
}

func (p *workerPool) exit() {
	p.mu.Lock()
	p.workers--
	p.mu.Unlock()
}

// stop closes the queue once no one can send to it (intake closed, redeliveries cancelled)
// and waits for the workers, which settle what is left as retryable.
func (p *workerPool) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	close(p.queue)
	p.wg.Wait()
}

// submitGo accepts ev for a Go route.
func (r *Runtime) submitGo(ctx context.Context, rt *route, ev *Event, w *waiter) error {
	if err := validateEvent(ev); err != nil {
		r.log.Warn("tandem: invalid event", zap.String("event_type", ev.Type), zap.String("event_id", ev.ID), zap.Error(err))
		return err
	}
	job := &goJob{route: rt, ev: cloneEvent(ev), w: w, attempt: max(ev.Attempt, 1)}
	if r.met.on {
		job.submittedAt = nanotime()
	}
	job.ev.Attempt = job.attempt
	if r.tr.on() {
		r.tr.publish(ctx, rt, ev, &job.ev)
	}
	if rt.opts.timeout > 0 {
		if d := time.Now().Add(rt.opts.timeout); job.ev.Deadline.IsZero() || d.Before(job.ev.Deadline) {
			job.ev.Deadline = d
		}
	}
	r.pending.Add(1)
	err := rt.pool.enqueue(ctx, job, rt.opts.overload)
	switch err {
	case nil:
		r.submitted.Add(1)
		r.budget.Deposit(time.Now())
		r.met.submit(rt)
		return nil
	case ErrShed:
		r.submitted.Add(1)
		he := &HandlerError{Outcome: OutcomeTerm, EventType: ev.Type, Envelope: ErrorEnvelope{
			Code: envelope.CodeShed, Message: fmt.Sprintf("route %q was full", rt.pattern), Runtime: "go", Handler: rt.name}}
		job.w = nil // the submitter learns it from Submit's error
		r.goDeadLetter(job, he, deadletter.ReasonShed)
		return err
	default:
		r.pending.Add(-1)
		r.met.reject(envelope.CodeOverloaded)
		return err
	}
}

// runGo delivers one job to its route's handler and acts on the result.
func (r *Runtime) runGo(job *goJob) {
	rt := job.route
	if r.goCtx.Err() != nil {
		// Shutting down past its grace: the event settles as retryable without running.
		r.cancelled.Add(1)
		r.goFinish(job, &HandlerError{Outcome: OutcomeRetry, EventType: job.ev.Type, Envelope: ErrorEnvelope{
			Code: envelope.CodeCancelled, Message: "the runtime shut down before the handler ran", Runtime: "go", Handler: rt.name}}, nil)
		return
	}
	hc := &handlerContext{Context: r.goCtx, r: r, ev: &job.ev, route: rt}
	if r.tr.on() {
		var span trace.Span
		hc.Context, span = r.tr.startProcess(r.goCtx, rt, &job.ev)
		job.span = span
		defer func() {
			job.span = nil
			span.End()
		}()
	}
	if !job.ev.Deadline.IsZero() {
		stop := hc.setDeadline(job.ev.Deadline)
		defer stop()
	}
	ctx := context.Context(hc)
	var t0 time.Time
	if r.met.on {
		t0 = time.Now()
	}
	res := r.invokeGo(hc, rt, &job.ev)
	if r.met.on {
		r.met.delivered(rt, res.outcome, time.Since(t0))
	}
	switch res.outcome {
	case OutcomeAck:
		if job.span != nil {
			spanOutcome(job.span, nil)
		}
		r.goFinish(job, nil, res.reply)
	case OutcomeRetry, OutcomeTerm:
		he := &HandlerError{Outcome: res.outcome, RetryAfter: res.after, EventType: job.ev.Type,
			Envelope: errorEnvelope(res.err, rt.name)}
		if res.outcome == OutcomeRetry && ctx.Err() != nil && r.goCtx.Err() == nil {
			he.Envelope.Code = envelope.CodeTimeout
		}
		if job.span != nil {
			spanOutcome(job.span, he)
		}
		r.goFailed(job, he)
	default:
		r.goFailed(job, &HandlerError{Outcome: OutcomeTerm, EventType: job.ev.Type, Envelope: ErrorEnvelope{
			Code: envelope.CodeHandler, Message: fmt.Sprintf("unknown outcome %d", res.outcome), Runtime: "go", Handler: rt.name}})
	}
}

// invokeGo calls the handler, turning a panic into a Term with code "panic".
func (r *Runtime) invokeGo(ctx context.Context, rt *route, ev *Event) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("tandem: Go handler panicked", zap.String("runtime", "go"), zap.String("handler", rt.name),
				zap.String("event_type", ev.Type), zap.String("event_id", ev.ID), zap.Any("panic", p),
				zap.ByteString("stack", debug.Stack()))
			res = Term(&CodedError{Code: envelope.CodePanic, Message: fmt.Sprint("handler panicked: ", p)})
		}
	}()
	return rt.goHandler.Handle(ctx, ev)
}

// goFinish settles a Go route's event.
func (r *Runtime) goFinish(job *goJob, err error, reply []byte) {
	r.met.settled(job.route, err == nil, job.submittedAt)
	r.pending.Add(-1)
	r.completed.Add(1)
	if job.w != nil {
		job.w.settle(r, err, Reply{data: reply})
	}
}

// goFailed handles a Go route's failure as failed does a Rust route's.
func (r *Runtime) goFailed(job *goJob, he *HandlerError) {
	if he.Outcome != OutcomeRetry {
		r.goDeadLetter(job, he, deadletter.ReasonTerm)
		return
	}
	v := r.judgeRetry(job.route, job.attempt, &job.limit, he)
	switch {
	case v.settle:
		r.goFinish(job, he, nil)
	case v.reason != "":
		r.goDeadLetter(job, he, v.reason)
	case !r.scheduleGoRetry(job, he, v.delay):
		r.goFinish(job, he, nil)
	}
}

func (r *Runtime) scheduleGoRetry(job *goJob, he *HandlerError, delay time.Duration) bool {
	r.retries.mu.Lock()
	defer r.retries.mu.Unlock()
	if r.retries.closed {
		return false
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		// The redelivery happens under the table's lock, so shutdown's cancelRetries (which
		// comes before the pools stop) either settles the job or finds it already queued.
		r.retries.mu.Lock()
		defer r.retries.mu.Unlock()
		if _, ok := r.retries.goWaiting[job]; !ok {
			return // settled by cancelRetries
		}
		delete(r.retries.goWaiting, job)
		job.attempt++
		job.ev.Attempt = job.attempt
		if rt := job.route; rt.opts.timeout > 0 {
			job.ev.Deadline = time.Now().Add(rt.opts.timeout)
		}
		// Block: a redelivery waits for room rather than being lost; shutdown (which closes
		// r.closing first) unblocks it.
		if err := job.route.pool.enqueue(context.Background(), job, Block); err != nil {
			r.cancelled.Add(1)
			r.goFinish(job, he, nil)
		}
	})
	r.retries.goWaiting[job] = t
	r.retried.Add(1)
	r.met.retry(job.route)
	return true
}

// goDeadLetter records a Go route's event as dead and settles it once the sink has it.
func (r *Runtime) goDeadLetter(job *goJob, he *HandlerError, reason deadletter.Reason) {
	spanDeadLettered(job.span, reason)
	r.met.deadLetter(job.route, reason)
	r.met.settled(job.route, false, job.submittedAt)
	he.DeadLetter = reason
	env, err := envelope.MarshalEvent(&job.ev)
	if err != nil {
		env = nil
	}
	dl := &deadletter.Record{
		Reason:    reason,
		Error:     &he.Envelope,
		Attempts:  job.attempt,
		EventID:   job.ev.ID,
		EventType: job.ev.Type,
		Source:    job.ev.Source,
		Route:     job.route.name,
		Time:      time.Now(),
		Envelope:  env,
	}
	r.deadLettered.Add(1)
	r.dead <- deadLetterJob{dl: dl, w: job.w, err: he}
}
