package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/perp"
)

// Target is one handler a route can send a delivery to: a Go handler, run by a worker pool
// of its own, or a Rust handler of the library, by index. A route names its targets through
// its table (routing.go); a delivery remembers the target it was dispatched to, so a table
// change moves new deliveries only.
//
// Every Rust handler the library registers is a target from New on, named by its type. A Go
// target is registered (RegisterTarget, or AddRoute for the handler a route is added with);
// it opens (Open: the handler's Init and WarmUp) before it first takes traffic, and closes
// (its pool stopped, then Close) once no route names it and its last delivery has ended, or
// at Shutdown. Routed again after it closed, it opens again.
//
// The exported fields are set before the target is registered and not changed after; the
// engine owns the rest. Safe for concurrent use.
type Target struct {
	// Name names the handler in logs, errors, dead letters and metrics: the registered type
	// of a Rust handler, the name given for a Go handler.
	Name string
	// RustIndex is 1 + the Rust handler's index in the library (the descriptor's flags); 0
	// for a Go target, or for a raw submission routed by its envelope's type.
	RustIndex uint32
	// Handler is a Go target's handler as registered; a route runs it through Route.Bind.
	Handler GoHandler
	// A Go target's pool: MinWorkers always, up to MaxWorkers under load, shrinking after
	// Idle; Queue bounds the events waiting for a worker.
	MinWorkers, MaxWorkers, Queue int
	Idle                          time.Duration
	// Open readies a Go target before it takes traffic (nil: nothing to do); Close releases
	// what Open took (nil: nothing). Each Close follows one successful Open.
	Open  func(ctx context.Context) error
	Close func() error

	rust bool

	mu    sync.Mutex
	state targetState
	refs  int // route tables (primary or shadow) that name the target
	// closed is closed when a close in progress ends.
	closed chan struct{}
	// closeDue says Shutdown owes the target a Close: it opened (at Start, whose Init it
	// got, or for a route change since), and no drain has closed it.
	closeDue bool
	// pool is an open Go target's pool; read without the lock by dispatchers, which find
	// the target in a route's table only while it is open.
	pool atomic.Pointer[pool]

	// bindings are the routes' bindings of the target (copy on write, under the engine's
	// ctl): each counts the deliveries it dispatched to the target whose attempt has not
	// ended, in its pool's queue and workers, or in Rust's request slots.
	bindings atomic.Pointer[[]*binding]
	// retiring is set while no route names the target and it is open: the end of its last
	// delivery closes it.
	retiring atomic.Bool
}

// addBinding counts b's deliveries in the target's. Called with e.ctl held.
func (t *Target) addBinding(b *binding) {
	var list []*binding
	if p := t.bindings.Load(); p != nil {
		list = *p
	}
	list = append(list[:len(list):len(list)], b)
	t.bindings.Store(&list)
}

// targetState is a Go target's lifecycle; a Rust target is always open.
type targetState uint8

const (
	targetClosed  targetState = iota // not opened yet, or closed after draining
	targetOpen                       // taking traffic (or draining, with retiring set)
	targetClosing                    // its pool stopping and Close running
)

// IsRust reports whether the target is a Rust handler.
func (t *Target) IsRust() bool { return t.rust }

// runtimeName is "rust" or "go", as logs and metrics name the target's side.
func (t *Target) runtimeName() string {
	if t.rust {
		return "rust"
	}
	return "go"
}

// InFlight is the number of deliveries dispatched to the target whose attempt has not ended.
// Zero only if it was at some moment of the reading (binding.inFlight).
func (t *Target) InFlight() (n int64) {
	if p := t.bindings.Load(); p != nil {
		for _, b := range *p {
			n += b.inFlight()
		}
	}
	return n
}

// targetKey keys the engine's target table: Go and Rust targets have a namespace each.
func targetKey(rust bool, name string) string {
	if rust {
		return "rust:" + name
	}
	return "go:" + name
}

// RegisterTarget adds a Go target that no route names yet. Before Start it opens with the
// routes' handlers (Start); while running it opens when a route first names it.
func (e *Engine) RegisterTarget(t *Target) error {
	if t.Handler == nil || t.Name == "" {
		return fmt.Errorf("%w: a Go target needs a name and a handler", ErrInvalidRoute)
	}
	t.rust, t.RustIndex = false, 0
	e.ctl.Lock()
	defer e.ctl.Unlock()
	if st := e.State(); st != Registered && st != Running {
		// Not while starting: Start opens the targets registered before it, and one
		// registered meanwhile would miss its Init.
		return fmt.Errorf("%w: a handler is registered before Start or while running (state %d)", ErrClosed, st)
	}
	key := targetKey(false, t.Name)
	if _, ok := e.targets[key]; ok {
		return fmt.Errorf("%w: a Go handler named %q is registered already", ErrInvalidRoute, t.Name)
	}
	// Shutdown owes it a Close once it opens (Start's, or a route change's), not before: a
	// runtime that never started, or failed to, has closed what it opened itself.
	t.closeDue = false
	e.targets[key] = t
	e.addTargetLocked(t)
	return nil
}

// LookupTarget finds a registered target: a Go handler by name, a Rust handler by its
// registered type.
func (e *Engine) LookupTarget(rust bool, name string) (*Target, error) {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	return e.lookupLocked(rust, name)
}

func (e *Engine) lookupLocked(rust bool, name string) (*Target, error) {
	if t, ok := e.targets[targetKey(rust, name)]; ok {
		return t, nil
	}
	side := "Go"
	if rust {
		side = "Rust"
	}
	return nil, fmt.Errorf("%w: %s handler %q", ErrUnknownTarget, side, name)
}

// Targets are every registered target, Rust handlers first in the library's order, then Go
// handlers as registered. Safe for concurrent use; it never waits for a route change.
func (e *Engine) Targets() []*Target {
	if p := e.targetList.Load(); p != nil {
		return *p
	}
	return nil
}

// addTargetLocked appends t to the target list, copy on write. Called with e.ctl held.
func (e *Engine) addTargetLocked(t *Target) {
	list := append(append([]*Target(nil), e.Targets()...), t)
	e.targetList.Store(&list)
}

// acquire counts a new route reference to t, opening it first if it is closed (running its
// Open and starting its pool), or cancelling its retirement if it is draining. Called with
// e.ctl held; pools start only once the engine runs (Start starts the rest).
func (t *Target) acquire(ctx context.Context, e *Engine) error {
	if t.rust {
		t.mu.Lock()
		t.refs++
		t.mu.Unlock()
		return nil
	}
	t.mu.Lock()
	for t.state == targetClosing {
		done := t.closed
		t.mu.Unlock()
		<-done
		t.mu.Lock()
	}
	defer t.mu.Unlock()
	if t.state == targetClosed && e.State() == Running {
		if err := t.openLocked(ctx, e); err != nil {
			return err
		}
	}
	t.refs++
	t.retiring.Store(false)
	return nil
}

// openLocked runs Open and starts a new pool. Called with t.mu held.
func (t *Target) openLocked(ctx context.Context, e *Engine) error {
	if t.Open != nil {
		if err := t.Open(ctx); err != nil {
			// Open released what it took: Shutdown owes it no Close.
			t.closeDue = false
			return fmt.Errorf("Go handler %q: %w", t.Name, err)
		}
	}
	t.startLocked(e)
	return nil
}

// startLocked starts a new pool: the target takes traffic. Called with t.mu held.
func (t *Target) startLocked(e *Engine) {
	p := newPool(e, t)
	p.start()
	t.pool.Store(p)
	t.state, t.closeDue = targetOpen, true
}

// release drops a route reference to t; the last one retires it, and it closes once drained.
// Called with e.ctl held.
func (t *Target) release(e *Engine) {
	t.mu.Lock()
	t.refs--
	last := t.refs == 0 && !t.rust && t.state == targetOpen
	t.mu.Unlock()
	if last {
		// Retiring, then the count; a delivery's end counts, then reads retiring (ended).
		// The fence between (perp) has one of the two see the other. The table that no
		// longer names t was stored before, and a dispatcher's count then its look at the
		// table (choose) are ordered by the same fence.
		t.retiring.Store(true)
		perp.Fence()
		if t.InFlight() == 0 {
			t.tryClose(e)
		}
	}
}

// ended follows the count of an attempt's end: the last one of a retiring target closes it.
func (t *Target) ended(e *Engine) {
	perp.LightFence()
	if t.retiring.Load() && t.InFlight() == 0 {
		t.tryClose(e)
	}
}

// tryClose closes a retiring, drained target on a goroutine of its own: its caller may be
// one of the pool's workers, which the close waits for.
func (t *Target) tryClose(e *Engine) {
	t.mu.Lock()
	if t.state != targetOpen || t.refs != 0 || !t.retiring.Load() || t.InFlight() != 0 {
		t.mu.Unlock()
		return
	}
	t.state = targetClosing
	t.retiring.Store(false)
	t.closed = make(chan struct{})
	t.mu.Unlock()
	e.closers.Add(1)
	go func() {
		defer e.closers.Done()
		t.closeNow(e)
	}()
}

// closeNow stops the pool and runs Close, then marks the target closed.
func (t *Target) closeNow(e *Engine) {
	if p := t.pool.Load(); p != nil {
		p.stop()
	}
	if t.Close != nil {
		if err := t.Close(); err != nil && !errors.Is(err, context.Canceled) {
			e.log.Warn("tandem: closing a Go handler", zap.String("handler", t.Name), zap.Error(err))
		}
	}
	e.log.Info("tandem: Go handler drained and closed", zap.String("handler", t.Name))
	t.mu.Lock()
	t.state, t.closeDue = targetClosed, false
	t.pool.Store(nil)
	close(t.closed)
	t.mu.Unlock()
}

// stopPool stops the pool of a Go target at shutdown, after intake and redeliveries have
// stopped: its workers settle what is queued as retryable.
func (t *Target) stopPool() {
	if p := t.pool.Load(); p != nil {
		p.stop()
	}
}

// finalClose runs Close at shutdown for a Go target a drain has not closed already: every
// handler registered is closed once by Shutdown, as before handlers could be moved.
func (t *Target) finalClose(e *Engine) {
	t.mu.Lock()
	for t.state == targetClosing {
		done := t.closed
		t.mu.Unlock()
		<-done
		t.mu.Lock()
	}
	due := t.closeDue
	t.state, t.closeDue = targetClosed, false
	t.mu.Unlock()
	if !due || t.Close == nil {
		return
	}
	if err := t.Close(); err != nil && !errors.Is(err, context.Canceled) {
		e.log.Warn("tandem: closing a Go handler", zap.String("handler", t.Name), zap.Error(err))
	}
}

// workers is the size of a Go target's pool (0 when closed).
func (t *Target) workers() int {
	if p := t.pool.Load(); p != nil {
		return p.size()
	}
	return 0
}
