package tandem

import (
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

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/ring"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// State is a runtime's lifecycle state.
type State int32

const (
	// Registered: New returned; routes may be added; nothing runs yet.
	Registered State = iota
	// Initialized: every handler's Init succeeded (Start in progress).
	Initialized
	// WarmingUp: handlers are priming caches and connections (Start in progress).
	WarmingUp
	// Running: accepting events.
	Running
	// Draining: Shutdown has stopped intake and is finishing in-flight events.
	Draining
	// Stopped: every event is settled and every buffer released.
	Stopped
	// Failed: Start failed; Shutdown still releases what was allocated.
	Failed
)

func (s State) String() string {
	switch s {
	case Registered:
		return "registered"
	case Initialized:
		return "initialized"
	case WarmingUp:
		return "warming-up"
	case Running:
		return "running"
	case Draining:
		return "draining"
	case Stopped:
		return "stopped"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Request slot owners; every hand-over is a compare-and-swap, so a double release is caught.
const (
	slotFree uint32 = iota // in the free list
	slotGo                 // taken by a submitter, being encoded
	slotRust               // published to Rust
)

// reqSlot is Go's bookkeeping for one request slot.
type reqSlot struct {
	owner atomic.Uint32
	// w is the waiter to settle; the atomic store by the submitter and swap by the poller
	// also order the plain fields below for the race detector, which cannot see the ring's
	// atomics in non-Go memory.
	w atomic.Pointer[waiter]
	// gen tells a live completion from a stale one; written by the slot's owner only.
	gen       uint32
	eventType string
	route     *route            // nil for raw test submissions
	trace     trace.SpanContext // the publish span, parent of each delivery's span
	span      trace.Span        // the current delivery's span while its outcome is handled
	dones     []func(error)     // the route's policies, told the final outcome
	attempt   uint32            // the delivery the slot's envelope carries, from 1
	// submittedAt is nanotime at submit, for the latency histogram (0: metrics off).
	submittedAt int64
	limit       uint32 // the last delivery a handler's retry advice allows; 0: the route's
	length      uint32 // the envelope's length in the slot
}

// Runtime is a tandem runtime: a Rust tokio runtime in this process, the shared rings to it,
// and the Go side that submits events and settles their acknowledgements.
//
// All methods are safe for concurrent use by many goroutines.
type Runtime struct {
	cfg        Config
	log        *zap.Logger
	h          abi.Handle
	layout     abi.Layout
	sq, cq     ring.Ring
	router     router
	types      []string // the Rust handlers, in the library's index order
	middleware []Middleware
	goCtx      context.Context // parent of every Go handler's context; cancelled past the shutdown grace
	goCancel   context.CancelFunc
	pools      []*workerPool

	state   atomic.Int32
	active  atomic.Int64 // goroutines inside submit
	pending atomic.Int64 // events published and not yet completed
	closing chan struct{}

	free    chan uint32
	slots   []reqSlot
	replies []atomic.Uint32 // 1 while Go holds reply slot i

	goWake   *os.File // a dup of the Go eventfd, registered with the netpoller
	pollDone chan struct{}
	stopPoll atomic.Bool
	freed    atomic.Bool

	waiters sync.Pool

	tr tracing
	// logLevelDone stops followLogLevel at shutdown.
	logLevelDone chan struct{}
	met          metrics
	retry        retry.Backoff
	budget       *retry.Budget
	retries      retryTable
	emits        emitQueue
	dead         chan deadLetterJob
	deadWG       sync.WaitGroup

	submitted    atomic.Uint64
	completed    atomic.Uint64
	cancelled    atomic.Uint64
	retried      atomic.Uint64
	emitted      atomic.Uint64
	toRust       atomic.Uint64
	deadLettered atomic.Uint64
	violations   atomic.Uint64
	rustWakeups  atomic.Uint64
	goParks      atomic.Uint64

	shutdownOnce sync.Once
	shutdownErr  error
	// lifeMu orders FFI reads of a live runtime (Stats) before its free.
	lifeMu sync.RWMutex
	final  abi.Stats
}

// New creates a runtime with cfg: it checks the library's ABI version, maps the shared region
// and learns which event types the Rust library handles. No thread starts until Start.
func New(cfg Config) (*Runtime, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := abi.Load(abi.LibraryPath(cfg.Library)); err != nil {
		cfg.Logger.Error("tandem: cannot load the Rust library", zap.Error(err))
		if errors.Is(err, abi.ErrABIMismatch) {
			return nil, fmt.Errorf("%w: %w", ErrABIMismatch, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrLibrary, err)
	}
	if err := abi.CheckVersion(); err != nil {
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
	h, layout, err := abi.Create(&acfg)
	switch {
	case errors.Is(err, abi.ErrABIMismatch):
		return nil, fmt.Errorf("%w: %v", ErrABIMismatch, err)
	case errors.Is(err, abi.ErrInvalidArg):
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	case err != nil:
		return nil, fmt.Errorf("tandem: creating the Rust runtime: %w", err)
	}
	r := &Runtime{cfg: cfg, log: cfg.Logger, h: h, layout: layout}
	if err := r.init(); err != nil {
		abi.Free(h)
		return nil, err
	}
	return r, nil
}

func (r *Runtime) init() error {
	types, err := abi.EventTypes(r.h)
	if err != nil {
		return fmt.Errorf("tandem: listing Rust handlers: %w", err)
	}
	r.types = types
	known := make(map[string]uint32, len(types))
	for i, t := range types {
		known[t] = uint32(i) + 1
	}
	exposed := r.cfg.RustTypes
	if len(exposed) == 0 {
		exposed = types
	}
	for _, t := range exposed {
		idx, ok := known[t]
		if !ok {
			return fmt.Errorf("%w: %q: the Rust library registers no handler for it (it has %v)", ErrNoRoute, t, types)
		}
		rt, err := parsePattern(t)
		if err != nil {
			return err
		}
		rt.name, rt.rustIndex = t, idx
		rt.opts.overload = r.cfg.Overload
		if err := r.router.add(rt); err != nil {
			return err
		}
	}
	r.goCtx, r.goCancel = context.WithCancel(context.Background())
	l := &r.layout
	r.sq = ring.New(unsafe.Add(l.Base, l.SQHeader), unsafe.Add(l.Base, l.SQCells), l.SQCapacity)
	r.cq = ring.New(unsafe.Add(l.Base, l.CQHeader), unsafe.Add(l.Base, l.CQCells), l.CQCapacity)
	r.free = make(chan uint32, l.ReqSlots)
	for i := range l.ReqSlots {
		r.free <- i
	}
	r.slots = make([]reqSlot, l.ReqSlots)
	r.replies = make([]atomic.Uint32, l.RepSlots)
	r.closing = make(chan struct{})
	r.pollDone = make(chan struct{})
	r.waiters.New = func() any { return &waiter{ch: make(chan struct{}, 1), pooled: true} }
	r.retry = r.cfg.Retry.WithDefaults()
	if r.cfg.TracerProvider != nil {
		r.tr.tracer = r.cfg.TracerProvider.Tracer(tracerName)
	}
	r.budget = r.cfg.RetryBudget
	if r.budget == nil {
		r.budget = retry.NewBudget(10*time.Second, 10, 0.2)
	}
	r.retries.waiting = make(map[uint32]*time.Timer)
	r.retries.goWaiting = make(map[*goJob]*time.Timer)
	r.retries.emitWaiting = make(map[*emitRetry]struct{})
	r.dead = make(chan deadLetterJob, deadLetterQueue)
	r.emits.init()

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
	r.goWake = os.NewFile(uintptr(fd), "tandem-wake-go")
	r.state.Store(int32(Registered))
	return nil
}

// State returns the lifecycle state.
func (r *Runtime) State() State { return State(r.state.Load()) }

// RustTypes returns the event types routed to Rust handlers by exact routes.
func (r *Runtime) RustTypes() []string {
	var out []string
	for _, rt := range r.router.all {
		if rt.isRust() && rt.exact() {
			out = append(out, rt.pattern)
		}
	}
	return out
}

// Start runs every Go handler's Init and WarmUp, starts tokio and runs every Rust handler's
// init and warm-up, then starts the pollers and worker pools. It returns when the runtime is
// Running, or fails (wrapping ErrStart) naming the handler that did not start; the runtime is
// then Failed and Shutdown releases it. Routes must be added before Start.
func (r *Runtime) Start() error {
	if !r.state.CompareAndSwap(int32(Registered), int32(Initialized)) {
		return fmt.Errorf("%w: Start called in state %s", ErrClosed, r.State())
	}
	fail := func(err error) error {
		r.state.Store(int32(Failed))
		r.log.Error("tandem: start failed", zap.Error(err))
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	ctx := r.goCtx
	for _, rt := range r.router.all {
		if h, ok := rt.rawHandler().(interface{ Init(context.Context) error }); ok {
			if err := h.Init(ctx); err != nil {
				return fail(fmt.Errorf("Go handler %q (route %q): init: %w", rt.name, rt.pattern, err))
			}
		}
	}
	r.state.Store(int32(WarmingUp))
	for _, rt := range r.router.all {
		if h, ok := rt.rawHandler().(interface{ WarmUp(context.Context) error }); ok {
			if err := h.WarmUp(ctx); err != nil {
				return fail(fmt.Errorf("Go handler %q (route %q): warm-up: %w", rt.name, rt.pattern, err))
			}
		}
	}
	// Events Rust handlers emit for an exact route to a Rust handler with no policy of Go's
	// own stay in Rust; their failures come back to Go, where retries live.
	var local []string
	for _, rt := range r.router.all {
		if rt.isRust() && rt.exact() && len(rt.opts.policies) == 0 && rt.opts.timeout == 0 && r.types[rt.rustIndex-1] == rt.pattern {
			local = append(local, rt.pattern)
		}
	}
	if r.cfg.MeterProvider != nil {
		if err := r.initMetrics(r.cfg.MeterProvider); err != nil {
			return fail(fmt.Errorf("metrics: %w", err))
		}
	}
	abi.SetLogLevel(rustLogLevel(r.log)) // before any handler runs; followLogLevel keeps it in step
	if err := abi.SetLocalRoutes(r.h, local); err != nil {
		return fail(err)
	}
	if err := abi.Start(r.h); err != nil {
		return fail(err)
	}
	r.logLevelDone = make(chan struct{})
	r.deadWG.Add(2)
	go func() {
		defer r.deadWG.Done()
		r.followLogLevel(r.logLevelDone)
	}()
	go r.writeDeadLetters()
	go r.routeEmitted()
	go r.poll()
	for _, rt := range r.router.all {
		if rt.pool != nil {
			rt.pool.start()
		}
	}
	r.state.Store(int32(Running))
	r.log.Info("tandem: running", zap.String("link", abi.Mode), zap.Strings("rust_types", r.RustTypes()),
		zap.Int("routes", len(r.router.all)), zap.Int("max_in_flight", r.cfg.MaxInFlight), zap.Int("workers", r.cfg.Workers))
	return nil
}

var eventfdOne = [8]byte{1}

// wakeRust writes the Rust poller's eventfd: a plain syscall, no FFI call.
func (r *Runtime) wakeRust() {
	r.rustWakeups.Add(1)
	for {
		_, err := syscall.Write(int(r.layout.WakeRustFd), eventfdOne[:])
		if err != syscall.EINTR {
			return
		}
	}
}

func (r *Runtime) wakeGo() {
	for {
		_, err := syscall.Write(int(r.layout.WakeGoFd), eventfdOne[:])
		if err != syscall.EINTR {
			return
		}
	}
}

// Shutdown stops intake (Submit fails with ErrClosed), lets in-flight events finish until ctx
// ends, then has Rust cancel the rest: each settles as a retryable *HandlerError with code
// "cancelled", none is lost. It then takes back every buffer, stops tokio and frees the
// shared region. A Reply not yet released is released here and must not be used after.
// It returns ctx's error if events had to be cancelled. Calling it again is harmless.
func (r *Runtime) Shutdown(ctx context.Context) error {
	r.shutdownOnce.Do(func() { r.shutdownErr = r.shutdown(ctx) })
	return r.shutdownErr
}

func (r *Runtime) shutdown(ctx context.Context) error {
	prev := State(r.state.Swap(int32(Draining)))
	if prev == Registered || prev == Failed || prev == Initialized || prev == WarmingUp {
		r.goCancel()
		r.closeHandlers()
		r.release()
		r.state.Store(int32(Stopped))
		return nil
	}
	close(r.closing)
	for r.active.Load() > 0 {
		runtime.Gosched()
	}
	tick := time.NewTicker(200 * time.Microsecond)
	for r.pending.Load() > 0 && ctx.Err() == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	tick.Stop()
	var grace time.Duration
	if d, ok := ctx.Deadline(); ok && ctx.Err() == nil {
		grace = max(time.Until(d), 0)
	}
	left := r.pending.Load()
	// Events waiting for a redelivery will not get one: they settle as retryable now. Go
	// handlers still running see their context end; events queued for a Go worker settle as
	// retryable without running.
	r.cancelRetries()
	r.goCancel()
	for _, p := range r.pools {
		p.stop()
	}
	if err := abi.Shutdown(r.h, uint64(grace)); err != nil {
		r.log.Error("tandem: Rust shutdown", zap.Error(err))
	}
	// Every completion is published now; let the poller settle them and exit.
	r.stopPoll.Store(true)
	r.wakeGo()
	<-r.pollDone
	r.emits.close() // the poller was its only producer; what is left is dead-lettered
	close(r.logLevelDone)
	close(r.dead) // the poller, the workers and the emit router are gone
	r.deadWG.Wait()
	r.closeHandlers()
	if n := r.pending.Load(); n != 0 {
		// Only a Rust handler stuck in synchronous code, past cancellation, gets here. Its
		// event is settled as retryable rather than lost; its slot stays with the stopped
		// runtime, which is freed below.
		r.log.Error("tandem: Rust handlers did not stop; settling their events as retryable", zap.Int64("events", n))
		r.abandonInFlight()
	}
	if r.met.reg != nil {
		r.met.reg.Unregister()
	}
	r.release()
	r.state.Store(int32(Stopped))
	r.log.Info("tandem: stopped", zap.Uint64("submitted", r.submitted.Load()),
		zap.Uint64("cancelled", r.cancelled.Load()), zap.Uint64("violations", r.violations.Load()+r.final.Violations))
	if left > 0 && ctx.Err() != nil {
		return fmt.Errorf("tandem: shutdown: %d events still in flight at the deadline were cancelled (retryable): %w", left, ctx.Err())
	}
	return nil
}

// abandonInFlight settles every event still in flight with a retryable "abandoned" error.
func (r *Runtime) abandonInFlight() {
	for i := range r.slots {
		s := &r.slots[i]
		if s.owner.Load() != slotRust {
			continue
		}
		if w := s.w.Swap(nil); w != nil {
			he := &HandlerError{Outcome: OutcomeRetry, EventType: s.eventType, Envelope: ErrorEnvelope{
				Code: envelope.CodeAbandoned, Message: "the Rust handler did not stop at shutdown", Runtime: "rust"}}
			r.pending.Add(-1)
			w.settle(r, he, Reply{})
		}
	}
}

// release takes back reply slots the application still holds, reads the final counters and
// frees the Rust runtime.
func (r *Runtime) release() {
	for i := range r.replies {
		if r.replies[i].CompareAndSwap(1, 0) {
			r.pushRelease(uint32(i))
		}
	}
	if st, err := abi.ReadStats(r.h); err == nil {
		r.final = st
	}
	r.lifeMu.Lock()
	r.freed.Store(true)
	abi.Free(r.h)
	r.lifeMu.Unlock()
	r.goWake.Close()
}

// Stats is a snapshot of both sides' counters.
type Stats struct {
	// Submitted counts events accepted by Submit or Call.
	Submitted uint64
	// Completed counts events whose outcome came back.
	Completed uint64
	// Cancelled counts events cancelled at shutdown (settled as retryable).
	Cancelled uint64
	// Emitted counts events Rust handlers emitted.
	Emitted uint64
	// Retried counts redeliveries scheduled.
	Retried uint64
	// ToRust counts deliveries published to Rust (first deliveries and redeliveries).
	ToRust uint64
	// DeadLettered counts events dead-lettered.
	DeadLettered uint64
	// InFlight is the number of events submitted and not completed.
	InFlight int64
	// FreeRequestSlots is the number of request slots not in use.
	FreeRequestSlots int
	// RepliesHeld is the number of reply slots Go holds (unreleased Replies).
	RepliesHeld int
	// Violations counts ownership protocol violations seen by Go; 0 in a correct program.
	Violations uint64
	// RustWakeups counts eventfd writes that woke the parked Rust poller.
	RustWakeups uint64
	// GoParks counts times the Go completion poller parked.
	GoParks uint64
	// GoWorkers is the number of worker goroutines across the Go routes' pools.
	GoWorkers int
	FFICalls  uint64 // calls into the Rust library this process has made
	// Rust holds the Rust side's counters (final ones after Shutdown).
	Rust RustStats
}

// RustStats are the Rust side's counters (tandem_stats in ffi/tandem.h).
type RustStats struct {
	// Received counts events Rust took from the submission ring.
	Received uint64
	// Completed counts completion records Rust published.
	Completed uint64
	// RequestsHeld is the number of request slots Rust holds now.
	RequestsHeld uint64
	// RepliesLent is the number of reply slots lent to Go now.
	RepliesLent uint64
	// Releases counts reply slots Go gave back.
	Releases uint64
	// Violations counts ownership protocol violations seen by Rust; 0 in a correct program.
	Violations uint64
	// Parks counts times the Rust poller parked.
	Parks uint64
	// GoWakeups counts eventfd writes that woke the parked Go poller.
	GoWakeups uint64
	// Panics counts handler panics caught.
	Panics uint64
	// Emitted counts events Rust handlers emitted to Go.
	Emitted uint64
	// LocalDispatched counts emitted events routed to a Rust handler inside Rust.
	LocalDispatched uint64
	// LocalAcked counts those acknowledged in Rust.
	LocalAcked uint64
	// LocalForwarded counts those that failed and came to Go for retry or dead-lettering.
	LocalForwarded uint64
	// SQDepth is the submission ring's occupancy.
	SQDepth uint64
	// CQDepth is the completion ring's occupancy.
	CQDepth uint64
}

// Stats returns a snapshot of the counters. After Shutdown the Rust counters are final:
// RequestsHeld and RepliesLent are then 0 when every buffer came back.
func (r *Runtime) Stats() Stats {
	s := Stats{
		Submitted:    r.submitted.Load(),
		Completed:    r.completed.Load(),
		Cancelled:    r.cancelled.Load(),
		Retried:      r.retried.Load(),
		Emitted:      r.emitted.Load(),
		ToRust:       r.toRust.Load(),
		DeadLettered: r.deadLettered.Load(),
		InFlight:     r.pending.Load(),
		Violations:   r.violations.Load(),
		RustWakeups:  r.rustWakeups.Load(),
		GoParks:      r.goParks.Load(),
		FFICalls:     abi.Calls(), // before this snapshot's own call, which reads Rust's counters
	}
	for i := range r.replies {
		if r.replies[i].Load() == 1 {
			s.RepliesHeld++
		}
	}
	for _, p := range r.pools {
		s.GoWorkers += p.size()
	}
	for i := range r.slots {
		if r.slots[i].owner.Load() == slotFree {
			s.FreeRequestSlots++
		}
	}
	r.lifeMu.RLock()
	st := r.final
	if !r.freed.Load() {
		st, _ = abi.ReadStats(r.h)
	}
	r.lifeMu.RUnlock()
	s.Rust = RustStats(st)
	return s
}
