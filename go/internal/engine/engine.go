// Package engine is tandem's machinery under the go/tandem façade: the request slots and
// rings to the Rust runtime, Go routes' worker pools, the completion poller, the retry
// table and the dead-letter writer, all serving one delivery lifecycle (delivery.go).
//
// Sources of events (Submit and Call, events Rust handlers emit, events routed inside Rust
// that failed) are adapters that make a Delivery and hand it to intake; from there every
// event is acknowledged, retried or dead-lettered by the same code, observed in one place.
package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/perp"
	"github.com/tandemrt/tandem/go/internal/ring"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// State is a runtime's lifecycle state; the façade names each one.
type State int32

const (
	Registered State = iota
	Initialized
	WarmingUp
	Running
	Draining
	Stopped
	Failed
)

// Config is the façade's Config, validated and with its defaults filled in.
type Config struct {
	Workers, MaxInFlight, MaxEventSize, ReplySlots, MaxReplySize int
	SpinWindow                                                   time.Duration
	Overload                                                     Overload
	RustTypes                                                    []string
	Library                                                      string
	Retry                                                        retry.Backoff
	RetryBudget                                                  *retry.Budget
	DeadLetters                                                  deadletter.Sink
	MeterProvider                                                metric.MeterProvider
	TracerProvider                                               trace.TracerProvider
	Logger                                                       *zap.Logger
	// ErrorOf makes the error a submitter and the route's policies see of a final failure.
	ErrorOf func(*Failure) error
}

// Engine is one runtime's machinery. All methods are safe for concurrent use.
// cacheLinePad keeps the fields around it on cache lines of their own: two lines, as x86
// processors fetch lines in adjacent pairs.
type cacheLinePad struct{ _ [128]byte }

type Engine struct {
	cfg    Config
	log    *zap.Logger
	lib    *abi.Library
	h      abi.Handle
	layout abi.Layout
	sq, cq ring.Ring
	router router
	types  []string // the Rust handlers, in the library's index order
	goCtx  context.Context
	// goCancel ends every Go handler's context: past the shutdown grace.
	goCancel context.CancelFunc

	// ctl serializes changes of routes and targets (routing.go, targets.go) and orders them
	// with Start and Shutdown; never held on the event path.
	ctl        sync.Mutex
	targets    map[string]*Target // by targetKey
	targetList atomic.Pointer[[]*Target]
	// lifeCtx ends when Shutdown begins: a Go target opening then stops waiting.
	lifeCtx    context.Context
	lifeCancel context.CancelFunc
	// closers counts the goroutines closing drained targets, which Shutdown waits for.
	closers sync.WaitGroup
	// shadowSlots counts the request slots shadow deliveries hold (shadow.go).
	shadowSlots atomic.Int64

	state    atomic.Int32
	draining atomic.Bool
	drained  chan struct{} // signalled when pending reaches 0 while draining
	closing  chan struct{} // closed when shutdown begins: blocked intake gives up

	// ledger is each P's share of the counts every event makes (ledger.go), which these
	// read and write:
	//   - gate counts the submitters inside intake (gate.go);
	//   - events counts the deliveries accepted and those final (tally.go);
	//   - crossings counts calls into the library on a publisher's thread, and the
	//     completions they settled (observer.crossings).
	ledger    *perp.Cells[ledger]
	gate      gate
	events    tally
	crossings pair
	// deposited is the count of submitted events last deposited into the retry budget
	// (depositSubmitted).
	depositMu sync.Mutex
	deposited uint64
	_         cacheLinePad

	slots    slots
	replies  []atomic.Uint32 // 1 while Go holds reply slot i
	goWake   *os.File        // a dup of the Go eventfd, registered with the netpoller
	pollDone chan struct{}
	// cqOwner is held by whoever consumes the completion ring: the poller, or a publisher
	// settling completions itself (crossing.go).
	_       cacheLinePad
	cqOwner atomic.Uint32
	_       cacheLinePad
	// lastCross is when the last crossing began (nanotime), for the gap between crossings.
	lastCross atomic.Int64
	_         cacheLinePad
	// crossing counts the calls into the library a publisher makes now: those holding a
	// wake-up duty in the low 32 bits, helpers (helpRust) in the high 32. A publisher that
	// wins no duty while a duty crossing is in progress helps (slots.go). It is also what
	// keeps crossings out of tokio's shutdown (stopCrossings), in place of a read lock.
	crossing atomic.Uint64
	_        cacheLinePad
	// roomy: the machine has cores to spare for a spinning poller beside the other
	// (spareCoresForAPoller, as Rust's Config::handover decides by default).
	roomy    bool
	stopPoll atomic.Bool
	// rustStopping is set before tokio stops: a delivery still waiting for a slot is then
	// settled as cancelled rather than published to a runtime that will not run it, and no
	// publisher crosses into the library any more.
	rustStopping atomic.Bool
	freed        atomic.Bool
	_            cacheLinePad

	obs     observer
	retry   retry.Backoff
	budget  *retry.Budget
	retries retries
	queue   dispatchQueue
	dead    deadLetters
	calls   sync.Map // call ID → *rustCall: Rust handlers' calls in flight in Go (calls.go)

	background   sync.WaitGroup
	logLevelDone chan struct{}
	shutdownOnce sync.Once
	shutdownErr  error
	// lifeMu orders FFI reads of a live runtime (Stats) before its free.
	lifeMu sync.RWMutex
	final  abi.Stats
}

// New loads the library, checks its ABI version, maps the shared region and learns which
// event types the Rust library handles. No thread starts until Start.
func New(cfg Config) (*Engine, error) {
	lib, err := abi.Load(abi.LibraryPath(cfg.Library))
	if err != nil {
		cfg.Logger.Error("tandem: cannot load the Rust library", zap.Error(err))
		if errors.Is(err, abi.ErrABIMismatch) {
			return nil, fmt.Errorf("%w: %w", ErrABIMismatch, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrLibrary, err)
	}
	if err := lib.CheckVersion(); err != nil {
		cfg.Logger.Error("tandem: refusing library", zap.Error(err))
		return nil, fmt.Errorf("%w: %v", ErrABIMismatch, err)
	}
	acfg := abi.Config{
		Workers:     uint32(cfg.Workers),
		SQCapacity:  nextPow2(cfg.MaxInFlight + cfg.ReplySlots),
		CQCapacity:  nextPow2(cfg.MaxInFlight),
		ReqSlotSize: uint32(cfg.MaxEventSize),
		ReqSlots:    uint32(cfg.MaxInFlight),
		RepSlotSize: uint32(cfg.MaxReplySize),
		RepSlots:    uint32(cfg.ReplySlots),
		SpinNs:      uint64(cfg.SpinWindow),
	}
	h, layout, err := abi.Create(lib, &acfg)
	switch {
	case errors.Is(err, abi.ErrABIMismatch):
		return nil, fmt.Errorf("%w: %v", ErrABIMismatch, err)
	case errors.Is(err, abi.ErrInvalidArg):
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	case err != nil:
		return nil, fmt.Errorf("tandem: creating the Rust runtime: %w", err)
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, lib: lib, h: h, layout: layout, roomy: runtime.NumCPU() >= spareCoresForAPoller}
	e.initCounts()
	if err := e.init(); err != nil {
		abi.Free(h)
		return nil, err
	}
	return e, nil
}

func (e *Engine) init() error {
	types, err := abi.EventTypes(e.h)
	if err != nil {
		return fmt.Errorf("tandem: listing Rust handlers: %w", err)
	}
	e.types = types
	e.lifeCtx, e.lifeCancel = context.WithCancel(context.Background())
	e.targets = map[string]*Target{}
	for i, t := range types {
		// Every Rust handler is a target, routed or not: a route may be moved to any of them.
		tg := &Target{Name: t, RustIndex: uint32(i) + 1, rust: true, state: targetOpen}
		e.targets[targetKey(true, t)] = tg
		e.addTargetLocked(tg)
	}
	exposed := e.cfg.RustTypes
	if len(exposed) == 0 {
		exposed = types
	}
	for _, t := range exposed {
		idx := e.RustIndex(t)
		if idx == 0 {
			return fmt.Errorf("%w: %q: the Rust library registers no handler for it (it has %v)", ErrNoRoute, t, types)
		}
		if err := e.addRoute(&Route{Pattern: t, Name: t, RustIndex: idx, Overload: e.cfg.Overload}); err != nil {
			return err
		}
	}
	e.goCtx, e.goCancel = context.WithCancel(context.Background())
	l := &e.layout
	e.sq = ring.New(unsafe.Add(l.Base, l.SQHeader), unsafe.Add(l.Base, l.SQCells), l.SQCapacity)
	e.cq = ring.New(unsafe.Add(l.Base, l.CQHeader), unsafe.Add(l.Base, l.CQCells), l.CQCapacity)
	e.slots.init(e, l)
	e.replies = make([]atomic.Uint32, l.RepSlots)
	e.closing = make(chan struct{})
	e.drained = make(chan struct{}, 1)
	e.pollDone = make(chan struct{})
	e.retry = e.cfg.Retry.WithDefaults()
	e.budget = e.cfg.RetryBudget
	if e.budget == nil {
		e.budget = retry.NewBudget(10*time.Second, 10, 0.2)
	}
	e.retries.init(e)
	e.queue.init()
	e.dead.init(e)
	e.obs.init(e)

	fd, err := syscall.Dup(int(l.WakeGoFd))
	if err != nil {
		return fmt.Errorf("tandem: dup of the wake eventfd: %w", err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("tandem: wake eventfd: %w", err)
	}
	// A non-blocking fd handed to os.NewFile joins the netpoller: a parked poller goroutine
	// costs no OS thread.
	e.goWake = os.NewFile(uintptr(fd), "tandem-wake-go")
	e.state.Store(int32(Registered))
	return nil
}

// State returns the lifecycle state.
func (e *Engine) State() State { return State(e.state.Load()) }

// Transition moves the state from one value to another; false if it was not from.
func (e *Engine) Transition(from, to State) bool {
	return e.state.CompareAndSwap(int32(from), int32(to))
}

// SetState sets the lifecycle state (the façade's steps of Start).
func (e *Engine) SetState(s State) { e.state.Store(int32(s)) }

// Logger is the runtime's logger.
func (e *Engine) Logger() *zap.Logger { return e.log }

// RustTypes are the event types the library registers handlers for, in its index order.
func (e *Engine) RustTypes() []string { return e.types }

// RustIndex is 1 + the index of the Rust handler registered for typ, or 0.
func (e *Engine) RustIndex(typ string) uint32 {
	for i, t := range e.types {
		if t == typ {
			return uint32(i) + 1
		}
	}
	return 0
}

// AddRoute adds a route, its one target the handler its fields describe: a Rust handler by
// index, or a Go handler, registered as a target under rt.Name. Routes are added before
// Start.
func (e *Engine) AddRoute(rt *Route) error {
	if st := e.State(); st != Registered {
		return fmt.Errorf("%w: routes are added before Start (state %d)", ErrInvalidRoute, st)
	}
	return e.addRoute(rt)
}

func (e *Engine) addRoute(rt *Route) error {
	var t *Target
	if rt.IsRust() {
		if int(rt.RustIndex) > len(e.types) {
			return fmt.Errorf("%w: Rust handler index %d", ErrUnknownTarget, rt.RustIndex)
		}
		t = e.targets[targetKey(true, e.types[rt.RustIndex-1])]
	} else {
		t = &Target{Name: rt.Name, Handler: rt.Handler, MinWorkers: rt.MinWorkers, MaxWorkers: rt.MaxWorkers,
			Queue: rt.Queue, Idle: rt.Idle}
		if err := e.RegisterTarget(t); err != nil {
			return err
		}
	}
	return e.addRouteTo(rt, t)
}

// AddRouteTo adds a route whose one target is t, a registered target; the route's fields
// that describe a handler (Name, RustIndex, Handler, the pool's) are ignored. Routes are
// added before Start.
func (e *Engine) AddRouteTo(rt *Route, t *Target) error {
	if st := e.State(); st != Registered {
		return fmt.Errorf("%w: routes are added before Start (state %d)", ErrInvalidRoute, st)
	}
	rt.Name, rt.RustIndex = t.Name, t.RustIndex
	return e.addRouteTo(rt, t)
}

func (e *Engine) addRouteTo(rt *Route, t *Target) error {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	if err := e.registered(t); err != nil {
		return err
	}
	if err := e.router.add(rt); err != nil {
		return err
	}
	rt.table.Store(&routing{targets: []*binding{rt.bindingOf(e, t, false)}, weights: []uint32{1}, cum: []uint64{1}})
	return t.acquire(e.lifeCtx, e)
}

// registered checks that t is this engine's target. Called with e.ctl held.
func (e *Engine) registered(t *Target) error {
	if t == nil {
		return fmt.Errorf("%w: a nil target", ErrUnknownTarget)
	}
	if e.targets[targetKey(t.rust, t.Name)] != t {
		return fmt.Errorf("%w: %s handler %q is not registered with this runtime", ErrUnknownTarget, t.runtimeName(), t.Name)
	}
	return nil
}

// Routes are every route, in the order they were added.
func (e *Engine) Routes() []*Route { return e.router.all }

// Start starts tokio and the Rust handlers, then the Go side: the completion poller, the
// dispatch queue, the dead-letter writer and the worker pools. The façade has run the Go
// handlers' Init and WarmUp already; the state becomes Running. On an error nothing of the
// Go side was started: the library has undone its own part (closed the Rust handlers it
// initialised, stopped tokio).
func (e *Engine) Start() error {
	// Events Rust handlers emit for an exact route to a Rust handler with no policy of Go's
	// own stay in Rust; their failures come back to Go, where retries live.
	var local []string
	for _, rt := range e.router.all {
		if rt.IsRust() && rt.Exact() && !rt.Policies && rt.Timeout == 0 && e.types[rt.RustIndex-1] == rt.Pattern {
			local = append(local, rt.Pattern)
		}
	}
	if e.cfg.MeterProvider != nil {
		if err := e.obs.initMetrics(e.cfg.MeterProvider); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	if e.cfg.TracerProvider != nil {
		e.obs.tracer = e.cfg.TracerProvider.Tracer(instrumentationName)
	}
	e.lib.SetLogLevel(rustLogLevel(e.log)) // before any handler runs; followLogLevel keeps it in step
	// Events Rust handlers emit for an exact route to one Rust handler with no policy of Go's
	// own stay in Rust; their failures come back to Go, where retries live. Every change of
	// a route's targets sets them again (routing.go).
	e.setLocalRoutes()
	if err := abi.Start(e.h); err != nil {
		e.obs.close()
		return err
	}
	e.logLevelDone = make(chan struct{})
	e.background.Add(3)
	go func() {
		defer e.background.Done()
		e.followLogLevel(e.logLevelDone)
	}()
	go e.dead.run()
	go e.routeQueued()
	go e.poll()
	for _, t := range e.Targets() {
		if !t.rust {
			// Every Go target registered before Start opens now: the façade has run its Init
			// and WarmUp with the others'.
			t.mu.Lock()
			t.startLocked(e)
			t.mu.Unlock()
		}
	}
	countKicks(e.obs.crossings)
	e.SetState(Running)
	e.log.Info("tandem: running", zap.String("link", abi.Mode), zap.Strings("rust_types", e.types),
		zap.Int("routes", len(e.router.all)), zap.Int("max_in_flight", e.cfg.MaxInFlight), zap.Int("workers", e.cfg.Workers))
	return nil
}

var eventfdOne = [8]byte{1}

// wakeRust writes the Rust poller's eventfd: a plain syscall, no FFI call.
func (e *Engine) wakeRust() {
	e.obs.rustWakeups.Add(1)
	for {
		_, err := syscall.Write(int(e.layout.WakeRustFd), eventfdOne[:])
		if err != syscall.EINTR {
			return
		}
	}
}

func (e *Engine) wakeGo() {
	for {
		_, err := syscall.Write(int(e.layout.WakeGoFd), eventfdOne[:])
		if err != syscall.EINTR {
			return
		}
	}
}

func (e *Engine) violation(what string, slot uint32) {
	e.obs.violations.Add(1)
	e.log.Error("tandem: ownership violation", zap.String("what", what), zap.Uint32("slot", slot))
}

// Shutdown stops intake, lets in-flight events finish until ctx ends, then has Rust cancel
// the rest: each settles as retryable (or is dead-lettered as cancelled when nobody waits
// for it), none is lost. It then takes back every buffer, stops tokio and frees the shared
// region. Calling it again returns the first call's result.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.shutdownOnce.Do(func() { e.shutdownErr = e.shutdown(ctx) })
	return e.shutdownErr
}

func (e *Engine) shutdown(ctx context.Context) error {
	e.lifeCancel() // a Go handler opening for a route change stops waiting
	e.ctl.Lock()   // no route changes from here: they see Draining
	prev := State(e.state.Swap(int32(Draining)))
	e.ctl.Unlock()
	if prev != Running {
		e.goCancel()
		e.stopShadows()
		e.release()
		e.closeTargets()
		e.SetState(Stopped)
		return nil
	}
	close(e.closing)
	e.gate.close() // every submitter has left intake; later ones find it closed
	e.draining.Store(true)
	perp.Fence() // a settlement that missed draining was counted out before it (settled)
	for e.events.pending() > 0 && ctx.Err() == nil {
		select {
		case <-e.drained:
		case <-ctx.Done():
		}
	}
	var grace time.Duration
	if d, ok := ctx.Deadline(); ok && ctx.Err() == nil {
		grace = max(time.Until(d), 0)
	}
	left := e.events.pending()
	// Deliveries waiting for a redelivery will not get one: they settle as retryable now. Go
	// handlers still running see their context end; deliveries queued for a Go worker settle
	// as retryable without running.
	e.retries.cancel()
	e.goCancel()
	// Shadows stop before the pools they hand copies to; the primaries still settling drop
	// theirs.
	e.stopShadows()
	for _, t := range e.Targets() {
		if !t.rust {
			t.stopPool()
		}
	}
	e.stopCrossings() // no crossing is in flight from here (crossing.go)
	if err := abi.Shutdown(e.h, uint64(grace)); err != nil {
		e.log.Error("tandem: Rust shutdown", zap.Error(err))
	}
	// Every completion is published now; let the poller settle them and exit.
	e.stopPoll.Store(true)
	e.wakeGo()
	<-e.pollDone
	e.queue.close() // the poller was its last producer; what is left is settled as cancelled
	if n := e.inRust(); n != 0 {
		// Only a Rust handler stuck in synchronous code, past cancellation, gets here. Its
		// event is settled as retryable rather than lost; its slot stays with the stopped
		// runtime, which is freed below.
		e.log.Error("tandem: Rust handlers did not stop; settling their events as retryable", zap.Int("events", n))
		e.abandonInFlight()
	}
	close(e.logLevelDone)
	e.dead.close() // the poller, the workers, the queue and the retry table are gone
	// A sink that stalls does not hold Shutdown past its context: from its deadline on, the
	// letters still queued fail at once and go to the log in full.
	stopWaiting := context.AfterFunc(ctx, e.dead.abort)
	e.background.Wait()
	stopWaiting()
	e.dead.abort()
	e.obs.close()
	e.release()
	e.closeTargets()
	e.SetState(Stopped)
	submitted, _, _ := e.events.read()
	e.log.Info("tandem: stopped", zap.Uint64("submitted", submitted),
		zap.Uint64("cancelled", e.obs.cancels.Load()), zap.Uint64("violations", e.obs.violations.Load()+e.final.Violations))
	if left > 0 && ctx.Err() != nil {
		return fmt.Errorf("tandem: shutdown: %d events still in flight at the deadline were cancelled (retryable): %w", left, ctx.Err())
	}
	return nil
}

// stopShadows stops every route's shadow dispatcher. Route changes are over (Draining).
func (e *Engine) stopShadows() {
	for _, rt := range e.router.all {
		if s := rt.table.Load().shadow; s != nil {
			s.stop()
		}
	}
}

// closeTargets runs Close for every open Go target no drain has closed, once, in the reverse
// order of their registration, then waits for the drains' goroutines. From here none
// starts: every target is closed.
func (e *Engine) closeTargets() {
	ts := e.Targets()
	for i := len(ts) - 1; i >= 0; i-- {
		if !ts[i].rust {
			ts[i].finalClose(e)
		}
	}
	e.closers.Wait()
}

// inRust counts the request slots Rust still holds.
func (e *Engine) inRust() int {
	n := 0
	for i := range e.slots.table {
		if e.slots.table[i].owner.Load() == slotRust {
			n++
		}
	}
	return n
}

// abandonInFlight settles every delivery Rust still holds with a retryable "abandoned" error.
func (e *Engine) abandonInFlight() {
	for i := range e.slots.table {
		sl := &e.slots.table[i]
		if sl.owner.Load() != slotRust {
			continue
		}
		if d := sl.d.Swap(nil); d != nil {
			f := &Failure{Outcome: OutcomeRetry, EventType: d.typ, Envelope: envelope.ErrorEnvelope{
				Code: envelope.CodeAbandoned, Message: "the Rust handler did not stop at shutdown", Runtime: "rust"}}
			d.raw = bytes.Clone(e.slots.envelope(d.slot, d.length)) // for a dead letter
			d.slot = noSlot                                         // the slot stays with the stopped runtime
			e.settleRetryable(d, f)
		}
	}
}

// release takes back reply slots the application still holds, reads the final counters and
// frees the Rust runtime.
func (e *Engine) release() {
	e.stopCrossings() // Rust is stopped or never started: nobody crosses into it
	retireKicks(e.obs.crossings)
	for i := range e.replies {
		if e.replies[i].CompareAndSwap(1, 0) {
			e.pushRelease(uint32(i))
		}
	}
	if st, err := abi.ReadStats(e.h); err == nil {
		e.final = st
	}
	e.lifeMu.Lock()
	e.freed.Store(true)
	abi.Free(e.h)
	e.lifeMu.Unlock()
	e.goWake.Close()
}

// nextPow2 rounds n up to a power of two.
func nextPow2(n int) uint32 {
	if n <= 1 {
		return 1
	}
	v := uint32(1)
	for v < uint32(n) {
		v <<= 1
	}
	return v
}

var gosched = runtime.Gosched

// Violation counts and logs a breach of the settlement protocol found outside the engine.
func (e *Engine) Violation(what string) { e.violation(what, abi.NoSlot) }
