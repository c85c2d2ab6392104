package tandem

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemrt/tandem/go/internal/engine"
)

// Submit hands ev to the handler routed for its type, in either runtime, and returns once
// the event is accepted. The returned Receipt settles when the outcome is final. ev is not
// retained: a Rust route's event is encoded straight into shared memory, a Go route's copied.
//
// Errors: ErrClosed (not running), envelope.ErrInvalidEvent (a required attribute empty,
// text that is not UTF-8: see envelope.Validate), ErrNoRoute (no handler for ev.Type),
// ErrEventTooLarge (an *EventTooLargeError), ErrOverloaded (the route is full
// and its policy is Reject), ErrShed (full, Shed: dead-lettered), a policy's refusal, or
// ctx's error (policy Block).
func (r *Runtime) Submit(ctx context.Context, ev *Event) (*Receipt, error) {
	a := &Receipt{w: receiptWaiter{e: r.e, ch: make(chan struct{})}}
	if err := r.e.Submit(ctx, ev, &a.w); err != nil {
		return nil, err
	}
	return a, nil
}

// Call submits ev and waits for the handler's reply: request/reply over the rings (or a Go
// route). Where it would cross to have a sleeping Rust side run the event, it runs it on its
// own thread with one call into the library and takes the outcome back with that call
// (Stats.Rust.Runs). The Reply of a Rust handler is read in place from shared memory and must be
// released (Reply.Release); an empty reply needs no release but allows it. A failed handler
// returns a *HandlerError. If ctx ends once the event is accepted, Call returns an error
// matching both ErrAbandoned and ctx's error; the event still settles, and its reply is
// released for you. If ctx ends while Submit waits for room (policy Block), Call returns
// ctx's error alone: the event was not accepted.
func (r *Runtime) Call(ctx context.Context, ev *Event) (Reply, error) {
	return call(ctx, r.e, ev)
}

func call(ctx context.Context, e *engine.Engine, ev *Event) (Reply, error) {
	w := callWaiters.Get().(*callWaiter)
	if err := e.Submit(ctx, ev, w); err != nil {
		callWaiters.Put(w)
		return Reply{}, err
	}
	if w.held.Holds() {
		runHeld(w)
	}
	if w.here {
		// Acknowledged during Submit's own call into the library, on this goroutine.
		reply, err := w.reply, w.err
		w.here, w.reply, w.err = false, engine.Reply{}, nil
		callWaiters.Put(w)
		return Reply{r: reply}, err
	}
	// A Call that crossed into an idle runtime has usually settled its own event by now: it
	// then takes the outcome without a channel operation (the load, cheaper than the failing
	// swap, sees it). Otherwise it says it blocks, and the settlement signals it.
	if w.state.Load() != settled && w.state.CompareAndSwap(waiting, blocked) && !w.wait(ctx) {
		return Reply{}, abandonedBy(ctx)
	}
	reply, err := w.reply, w.err
	w.reply, w.err = engine.Reply{}, nil
	w.state.Store(waiting)
	callWaiters.Put(w)
	return Reply{r: reply}, err
}

// wait blocks a Call until its settlement (true), or until ctx ends first (false): the
// waiter is then abandoned, and the settlement releases its reply and recycles it.
func (w *callWaiter) wait(ctx context.Context) bool {
	select {
	case <-w.ch:
		return true
	case <-ctx.Done():
		if w.state.CompareAndSwap(blocked, abandoned) {
			return false
		}
		<-w.ch
		return true
	}
}

// runHeld runs the Go route's delivery the Call holds (WithCallerRuns) on this goroutine;
// it settles through Settle, as on a worker, before Run returns unless it is retried.
//
//go:noinline
func runHeld(w *callWaiter) {
	h := w.held
	w.held = engine.Held{}
	h.Run()
}

// abandonedBy is the error of a Call whose ctx ended after its event was accepted. Apart
// from call, as are the other steps a Call rarely takes, so that call's stack frame stays
// small: a goroutine whose first call is a Call would otherwise grow its stack (a copy of
// every frame) for an error it rarely makes.
//
//go:noinline
func abandonedBy(ctx context.Context) error {
	return fmt.Errorf("%w: %w", ErrAbandoned, ctx.Err())
}

// Receipt is the promise of one submitted event's acknowledgement: it settles exactly once,
// when the handler's outcome is final (after retries, or on dead-lettering). Safe for
// concurrent use; Wait may be called any number of times.
type Receipt struct {
	w receiptWaiter
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

// Reply is a handler's reply payload; a Rust handler's is read in place from a reply slot in
// shared memory, lent to the caller until Release. Data must not be used after Release or
// after the runtime's Shutdown. A Reply is not safe for concurrent Release.
type Reply struct {
	r engine.Reply
}

// Data returns the payload, valid until Release. It panics if the runtime was shut down.
func (p *Reply) Data() []byte { return p.r.Data() }

// Release hands the reply slot back to Rust. A second call does nothing.
func (p *Reply) Release() { p.r.Release() }

// Waiter states: a Call's waiter is blocked once its Call waits for the signal, and
// abandoned when its context ends first; the settlement then releases the reply and recycles
// the waiter.
const (
	waiting uint32 = iota
	settled
	abandoned
	blocked
)

// receiptWaiter is a Receipt's side of the settlement: it copies the reply out.
type receiptWaiter struct {
	e     *engine.Engine
	ch    chan struct{} // closed at settlement
	state atomic.Uint32
	err   error
	data  []byte
}

func (w *receiptWaiter) Settle(err error, reply engine.Reply) {
	if !w.state.CompareAndSwap(waiting, settled) {
		// An event settles once: a second settle is a bug, counted, never a double count.
		reply.Release()
		w.e.Violation("an event settled twice")
		return
	}
	w.data = reply.Detach()
	w.err = err
	close(w.ch)
}

// callWaiter is a Call's side of the settlement, pooled: a Call allocates nothing.
type callWaiter struct {
	ch    chan struct{} // receives one value per settlement the Call blocked for
	state atomic.Uint32
	err   error
	reply engine.Reply
	here  bool // settled by SettleHere, inside the Call's own Submit
	// held is a Go route's delivery the Call runs itself once its Submit returns
	// (WithCallerRuns).
	held engine.Held
}

// Hold takes a Go route's delivery for the Call to run on its own goroutine
// (engine.CallerRunner), inside its Submit.
func (w *callWaiter) Hold(h engine.Held) { w.held = h }

// Blocks marks the waiter engine.Blocking: its Call blocks until Settle.
func (w *callWaiter) Blocks() {}

var callWaiters = sync.Pool{New: func() any { return &callWaiter{ch: make(chan struct{}, 1)} }}

// SettleHere settles the Call on its own goroutine, inside its Submit (engine.HereSettler):
// the Call finds here set once Submit returns, with no atomic operation either side.
func (w *callWaiter) SettleHere(err error, reply engine.Reply) {
	w.err, w.reply, w.here = err, reply, true
}

func (w *callWaiter) Settle(err error, reply engine.Reply) {
	w.err, w.reply = err, reply
	switch {
	case w.state.CompareAndSwap(waiting, settled):
		// The Call has not begun to wait: it finds the outcome without a signal.
	case w.state.CompareAndSwap(blocked, settled):
		w.ch <- struct{}{}
	default:
		// The Call gave up waiting: release for it and recycle the waiter.
		reply.Release()
		w.err, w.reply = nil, engine.Reply{}
		w.state.Store(waiting)
		callWaiters.Put(w)
	}
}

// Redelivery is a source that redelivers its events itself: a broker, such as JetStream,
// that keeps each message until it is told the outcome. For each event SubmitFrom
// accepted, the runtime calls exactly one of Settled and Redeliver, once, from any
// goroutine; both must return promptly (an acknowledgement to the broker, not a wait).
type Redelivery interface {
	// Settled says the outcome is final: nil for an acknowledgement, or the error Call
	// would return: a *HandlerError whose DeadLetter names why the event was
	// dead-lettered (it is in the dead-letter sink), or, with no DeadLetter, a retryable
	// one with code "cancelled" when Shutdown cut the event short (deliver it again
	// elsewhere).
	Settled(err error)
	// Redeliver says the handler failed (err, a *HandlerError) and the route's retry
	// schedule, the retry budget and the event's deadline allow another delivery after
	// after: the source delivers the event again then, with its Attempt counted on.
	Redeliver(after time.Duration, err error)
	// LastAttempt is the last delivery the source makes (JetStream's MaxDeliver), or 0 for
	// no bound of its own: a retryable failure of that delivery is dead-lettered as
	// max_attempts rather than handed back to a source that would not deliver it again.
	LastAttempt() uint32
}

// SubmitFrom hands ev to its route as Submit does, for a source that redelivers the
// event itself (see Redelivery): the route's handler, middleware, policies, timeout and
// dead letters apply as to any event, and a retry goes back to src with its delay rather
// than being scheduled in this process. ev.Attempt is the delivery number the source
// counts (its first delivery 1). A reply is dropped. Errors are Submit's: src is then
// never called.
func (r *Runtime) SubmitFrom(ctx context.Context, ev *Event, src Redelivery) error {
	if src == nil {
		return errors.New("tandem: SubmitFrom: the Redelivery is nil")
	}
	return r.e.Submit(ctx, ev, redeliveryWaiter{src})
}

// redeliveryWaiter adapts a Redelivery to the engine's Redelivering.
type redeliveryWaiter struct{ src Redelivery }

func (w redeliveryWaiter) Settle(err error, reply engine.Reply) {
	reply.Release()
	w.src.Settled(err)
}

func (w redeliveryWaiter) Redeliver(after time.Duration, err error) { w.src.Redeliver(after, err) }
func (w redeliveryWaiter) LastAttempt() uint32                      { return w.src.LastAttempt() }

// CallOnce submits ev and waits for the outcome of its first delivery: the reply (a copy
// the caller owns) when the handler acknowledged, else a *HandlerError carrying the outcome,
// retryable or terminal, and the error envelope exactly as the handler gave them. The event
// is neither redelivered nor dead-lettered, whatever its route's retry schedule: CallOnce is
// for judging a handler's verdict on one delivery (package conform), not for traffic.
//
// Errors are Submit's; if ctx ends once the event is accepted, CallOnce returns an error
// matching both ErrAbandoned and ctx's error, and the event still settles. Safe for
// concurrent use.
func (r *Runtime) CallOnce(ctx context.Context, ev *Event) ([]byte, error) {
	w := &onceWaiter{receiptWaiter{e: r.e, ch: make(chan struct{})}}
	if err := r.e.Submit(ctx, ev, w); err != nil {
		return nil, err
	}
	select {
	case <-w.ch:
		return w.data, w.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrAbandoned, ctx.Err())
	}
}

// onceWaiter is CallOnce's side of the settlement: a receipt's, marked engine.Once.
type onceWaiter struct{ receiptWaiter }

// OneDelivery marks the waiter engine.Once.
func (*onceWaiter) OneDelivery() {}
