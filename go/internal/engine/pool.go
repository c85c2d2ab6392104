package engine

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// pool runs one Go target's deliveries, from any route: a bounded queue and between
// MinWorkers and MaxWorkers goroutines, grown when no worker is idle and shrunk when one
// idles for the target's Idle time. Safe for concurrent use.
type pool struct {
	e      *Engine
	target *Target
	queue  chan *Delivery

	stopOnce sync.Once
	mu       sync.Mutex
	workers  int
	// held counts the deliveries callers run themselves (hold): with the workers, at most
	// the target's MaxWorkers handlers run at once.
	held    int
	stopped bool
	idle    atomic.Int32
	// wg counts the workers and the held runs: stop waits for both.
	wg sync.WaitGroup
}

func newPool(e *Engine, t *Target) *pool {
	return &pool{e: e, target: t, queue: make(chan *Delivery, t.Queue)}
}

func (p *pool) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.workers < p.target.MinWorkers {
		p.spawnLocked()
	}
}

// spawnLocked starts a worker, idle from the start: a worker on its way to its first
// receive counts as idle, so one event does not grow the pool by a second worker.
func (p *pool) spawnLocked() {
	p.workers++
	p.idle.Add(1)
	p.wg.Add(1)
	go p.work()
}

// size is the number of workers.
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers
}

// enqueue hands a delivery to the pool under the overload policy; a blocked enqueue gives up
// when ctx ends or the runtime starts stopping.
func (p *pool) enqueue(ctx context.Context, d *Delivery, policy Overload) error {
	select {
	case p.queue <- d:
	default:
		switch policy {
		case Reject:
			return ErrOverloaded
		case Shed:
			return ErrShed
		}
		select {
		case p.queue <- d:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.e.closing:
			return ErrClosed
		}
	}
	// Grow while more events wait than workers idle, up to the maximum.
	if int(p.idle.Load()) < len(p.queue) {
		p.mu.Lock()
		if !p.stopped && p.workers+p.held < p.target.MaxWorkers {
			p.spawnLocked()
		}
		p.mu.Unlock()
	}
	return nil
}

// hold counts in a delivery its caller will run (Held.Run) as one more worker, if the pool
// has room for one and is not stopping. Called inside intake, so the count is in before
// Shutdown's stop waits for it.
func (p *pool) hold() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.workers+p.held >= p.target.MaxWorkers {
		return false
	}
	p.held++
	p.wg.Add(1)
	return true
}

// runHeld runs a held delivery on the caller's goroutine and counts it out, also when its
// handler calls runtime.Goexit (which then ends the caller's goroutine: runGo has settled
// the delivery by then).
func (p *pool) runHeld(d *Delivery) {
	defer func() {
		p.mu.Lock()
		p.held--
		p.mu.Unlock()
		p.wg.Done()
	}()
	p.e.runGo(d)
}

func (p *pool) work() {
	defer p.wg.Done()
	timer := time.NewTimer(p.target.Idle)
	defer timer.Stop()
	for {
		select {
		case d, ok := <-p.queue:
			p.idle.Add(-1)
			if !ok {
				p.exit()
				return
			}
			p.run(d)
			p.idle.Add(1)
			timer.Reset(p.target.Idle)
		case <-timer.C:
			p.mu.Lock()
			if p.workers > p.target.MinWorkers {
				p.workers--
				p.idle.Add(-1)
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			timer.Reset(p.target.Idle)
		}
	}
}

// run runs one delivery on this worker. A handler that calls runtime.Goexit ends the
// worker's goroutine with it (runGo has settled the delivery by then): a new worker takes
// its place, so the route keeps its workers and what is queued is still served, even when
// the pool is stopping.
func (p *pool) run(d *Delivery) {
	exited := true
	defer func() {
		if exited {
			p.mu.Lock()
			p.workers--
			p.spawnLocked()
			p.mu.Unlock()
		}
	}()
	p.e.runGo(d)
	exited = false
}

func (p *pool) exit() {
	p.mu.Lock()
	p.workers--
	p.mu.Unlock()
}

// stop closes the queue once no one can send to it (intake closed and redeliveries
// cancelled, or the target drained and named by no route) and waits for the workers, which
// settle what is left as retryable. A second call waits for the first.
func (p *pool) stop() {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		close(p.queue)
		p.wg.Wait()
	})
}

// runGo delivers one Go delivery to its target's handler, as its route runs it, and settles
// the outcome.
func (e *Engine) runGo(d *Delivery) {
	rt, name := d.route, d.bound.target.Name
	if e.goCtx.Err() != nil {
		// Stopping past its grace: the event settles as cancelled without running.
		e.settleRetryable(d, failure(OutcomeRetry, d.typ, envelope.CodeCancelled, "the runtime shut down before the handler ran", name))
		return
	}
	if d.deadline != 0 && d.deadline <= time.Now().UnixNano() {
		// Past its deadline before it starts (the event's own, waiting in the queue): it
		// times out without running, as in Rust.
		e.failed(d, failure(OutcomeRetry, d.typ, envelope.CodeTimeout, "the event's deadline passed before the handler ran", name))
		return
	}
	base := e.callContext(d)
	hc := d.first
	if hc != nil {
		d.first = nil
	} else {
		hc = new(HandlerContext)
	}
	hc.Context, hc.e, hc.d = base, e, d
	if e.obs.tracing() {
		ctx, span := e.obs.startProcess(base, rt, name, d.probe != nil, d.event)
		hc.Context, d.span = ctx, span
		defer func() {
			d.span = nil
			span.End()
		}()
	}
	if d.deadline != 0 {
		stop := hc.setDeadline(unixTime(d.deadline))
		defer stop()
	}
	start := e.obs.clock()
	returned := false
	defer func() {
		if !returned {
			// The handler called runtime.Goexit: the goroutine ends once the deferred calls
			// have run, so the delivery is settled here or never (pool.run replaces the
			// worker). recover sees no panic then: invokeGo has recovered every panic.
			e.log.Error("tandem: Go handler called runtime.Goexit", zap.String("runtime", "go"), zap.String("handler", name),
				zap.String("event_type", d.typ), zap.String("event_id", d.id))
			e.goOutcome(d, hc, Result{Outcome: OutcomeRetry, Error: envelope.ErrorEnvelope{Code: envelope.CodeGoexit,
				Message: "the handler's goroutine exited (runtime.Goexit) before it returned", Runtime: "go", Handler: name}}, start)
		}
	}()
	res := e.invokeGo(hc, d.bound, d.event)
	returned = true
	e.goOutcome(d, hc, res, start)
}

// goOutcome settles a Go delivery with its handler's result. A result that comes after the
// delivery's deadline is a retryable timeout whatever it says, as for a Rust handler, whose
// task is no longer polled past its deadline.
func (e *Engine) goOutcome(d *Delivery, hc *HandlerContext, res Result, start int64) {
	name := d.bound.target.Name
	if hc.expired.Load() {
		env := res.Error
		if res.Outcome != OutcomeRetry {
			env = envelope.ErrorEnvelope{Message: "the event's deadline passed before the handler returned", Runtime: "go", Handler: name}
		}
		env.Code = envelope.CodeTimeout
		res = Result{Outcome: OutcomeRetry, Error: env}
	}
	e.obs.delivered(d, res.Outcome, start)
	switch res.Outcome {
	case OutcomeAck:
		e.obs.spanOutcome(d.span, nil)
		e.acked(d, Reply{data: res.Reply})
	case OutcomeRetry, OutcomeTerm:
		f := &Failure{Outcome: res.Outcome, RetryAfter: res.After, EventType: d.typ, Envelope: res.Error}
		e.obs.spanOutcome(d.span, f)
		e.failed(d, f)
	default:
		e.failed(d, failure(OutcomeTerm, d.typ, envelope.CodeHandler, fmt.Sprintf("unknown outcome %d", res.Outcome), name))
	}
}

// invokeGo calls the handler, turning a panic into a Term with code "panic".
func (e *Engine) invokeGo(ctx context.Context, b *binding, ev *envelope.Event) (res Result) {
	name := b.target.Name
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("tandem: Go handler panicked", zap.String("runtime", "go"), zap.String("handler", name),
				zap.String("event_type", ev.Type), zap.String("event_id", ev.ID), zap.Any("panic", p),
				zap.ByteString("stack", debug.Stack()))
			res = Result{Outcome: OutcomeTerm, Error: envelope.ErrorEnvelope{Code: envelope.CodePanic,
				Message: fmt.Sprint("handler panicked: ", p), Runtime: "go", Handler: name}}
		}
	}()
	return b.run(ctx, ev)
}
