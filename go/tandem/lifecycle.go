package tandem

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/engine"
)

// State is a runtime's lifecycle state, the same in both runtimes (docs/lifecycle.md):
//
//	Registered ─Start─► Initialized ─► WarmingUp ─► Running ─Shutdown─► Draining ─► Stopped
//	                         │              │
//	                         └──────────────┴── a hook fails ──► Failed ─Shutdown─► Stopped
type State int32

const (
	// Registered: New returned; routes may be added; nothing runs yet.
	Registered State = iota
	// Initialized: Start has begun and runs the Go handlers' Init hooks.
	Initialized
	// WarmingUp: every Go handler's Init succeeded; Start runs their WarmUp hooks, then
	// starts the Rust runtime, which runs its handlers' init and warm-up hooks.
	WarmingUp
	// Running: every handler of both runtimes has warmed up; events flow. /readyz answers
	// 200 in this state only.
	Running
	// Draining: Shutdown has stopped intake and is finishing in-flight events.
	Draining
	// Stopped: every event is settled, every buffer released, every handler closed.
	Stopped
	// Failed: Start failed. What it had done is undone already (the handlers it had
	// initialised are closed, tokio is stopped); Shutdown frees the rest.
	Failed
)

// The engine numbers its states as the façade does (a compile-time check).
var _ [0]struct{} = [int(Failed) - int(engine.Failed)]struct{}{}
var _ [0]struct{} = [int(Draining) - int(engine.Draining)]struct{}{}

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

// The optional lifecycle hooks of a Go handler; Handle's doc says when each runs.
type (
	initHook   interface{ Init(context.Context) error }
	warmUpHook interface{ WarmUp(context.Context) error }
	closeHook  interface{ Close() error }
)

// StartError is why Start failed: which handler, in which runtime, failed which hook, and
// how. errors.Is(err, ErrStart) holds for it. A plain value, safe to share.
type StartError struct {
	// Runtime is "go" or "rust"; empty when no handler failed (the library refused to
	// start: Err says why).
	Runtime string
	// Handler is the handler's name.
	Handler string
	// Route is a Go handler's route pattern (its first, if it has several); empty for Rust.
	Route string
	// Phase is the hook that failed: "init" or "warm-up".
	Phase string
	// Err is the hook's error (a recovered panic is an error too). A Rust handler's is a
	// *CodedError with its code and message.
	Err error
}

// Error names the runtime, handler, route and hook.
func (e *StartError) Error() string {
	if e.Handler == "" {
		return "tandem: start failed: " + e.Err.Error()
	}
	route := ""
	if e.Route != "" {
		route = fmt.Sprintf(" (route %q)", e.Route)
	}
	side := map[string]string{"go": "Go", "rust": "Rust"}[e.Runtime]
	return fmt.Sprintf("tandem: start failed: %s of %s handler %q%s: %v", e.Phase, side, e.Handler, route, e.Err)
}

// Unwrap returns ErrStart and the hook's error.
func (e *StartError) Unwrap() []error { return []error{ErrStart, e.Err} }

// Start runs every Go handler's Init, then every Go handler's WarmUp (each in the order the
// routes were added; a pointer serving several routes once), then starts tokio
// and runs every Rust handler's init and warm-up, then the pollers and worker pools. It
// returns when the runtime is Running: every handler of both runtimes has warmed up.
//
// If a hook fails or panics, Start returns a *StartError naming the handler, its runtime
// and the hook, and undoes what it did: the Go handlers whose Init succeeded are closed in
// reverse order (the Rust library does the same for its handlers and stops tokio), no
// pool or poller is left running, and the runtime is Failed; Shutdown then frees it.
// Routes must be added before Start. A runtime starts once: Start again returns
// ErrAlreadyStarted while it is starting or running, ErrClosed once it failed or Shutdown
// began.
func (r *Runtime) Start() error {
	if !r.e.Transition(engine.Registered, engine.Initialized) {
		switch st := r.State(); st {
		case Initialized, WarmingUp, Running:
			return fmt.Errorf("%w: Start called again (state %s)", ErrAlreadyStarted, st)
		case Failed:
			return fmt.Errorf("%w: Start called after a failed Start; Shutdown releases the runtime", ErrClosed)
		default:
			return fmt.Errorf("%w: Start called after Shutdown (state %s)", ErrClosed, st)
		}
	}
	var opened []*goHandler
	fail := func(err error) error {
		r.e.SetState(engine.Failed)
		r.log.Error("tandem: start failed", zap.Error(err))
		for i := len(opened) - 1; i >= 0; i-- {
			r.closeHandler(opened[i])
		}
		return err
	}
	ctx := context.Background()
	r.mu.Lock()
	handlers := append([]*goHandler(nil), r.handlers...)
	r.mu.Unlock()
	// Init, in the order the handlers were registered; a pointer registered under several
	// names is one handler (its life), whose hooks run once.
	for _, g := range handlers {
		if err := g.life.begin(func(h Handler) error {
			if ih, ok := h.(initHook); ok {
				return hook(func() error { return ih.Init(ctx) })
			}
			return nil
		}); err != nil {
			return fail(&StartError{Runtime: "go", Handler: g.name, Route: r.routeOf(g.name), Phase: "init", Err: err})
		}
		opened = append(opened, g)
	}
	r.e.SetState(engine.WarmingUp)
	warmed := map[*handlerLife]bool{}
	for _, g := range opened {
		if warmed[g.life] {
			continue
		}
		warmed[g.life] = true
		if wh, ok := g.raw.(warmUpHook); ok {
			if err := hook(func() error { return wh.WarmUp(ctx) }); err != nil {
				return fail(&StartError{Runtime: "go", Handler: g.name, Route: r.routeOf(g.name), Phase: "warm-up", Err: err})
			}
		}
	}
	if err := r.e.Start(); err != nil {
		return fail(rustStartError(err))
	}
	return nil
}

// Shutdown stops intake (Submit fails with ErrClosed), lets in-flight events finish until ctx
// ends, then has Rust cancel the rest: each settles as a retryable *HandlerError with code
// "cancelled" (an emitted event nobody waits for is dead-lettered as cancelled), none is lost.
// It then takes back every buffer, closes the Rust handlers and stops tokio, frees the
// shared region and closes the Go handlers that are open (initialised at Start or opened by a
// route change since, and not closed by a drain), in the reverse order of their
// registration, each once. A Reply not yet released is released here and must not be used
// after. It returns ctx's error if events had to be cancelled. Calling it again is harmless.
func (r *Runtime) Shutdown(ctx context.Context) error {
	return r.e.Shutdown(ctx)
}

// closeHandler runs a Go handler's Close on Start's failure, logging what it returns.
func (r *Runtime) closeHandler(g *goHandler) {
	if err := g.close(); err != nil && !errors.Is(err, context.Canceled) {
		r.log.Warn("tandem: closing a Go handler", zap.String("handler", g.name), zap.Error(err))
	}
}

// routeOf is the pattern of the first route naming the Go handler name, or "".
func (r *Runtime) routeOf(name string) string {
	for _, rt := range r.e.Routes() {
		ws, _ := rt.Targets()
		for _, w := range ws {
			if !w.Target.IsRust() && w.Target.Name == name {
				return rt.Pattern
			}
		}
	}
	return ""
}

// hook runs a lifecycle hook, turning a panic into an error.
func hook(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

// rustFailure is the text the library's tandem_runtime_start gives a failed hook
// (ffi/tandem.h): `<init|warm-up> of Rust handler "<name>" failed: <code>: <message>`.
var rustFailure = regexp.MustCompile(`^(init|warm-up) of Rust handler ("(?:[^"\\]|\\.)*") failed: (.*)$`)

// rustStartError makes the engine's start failure a *StartError, naming the Rust handler
// and its hook when the library says which.
func rustStartError(err error) error {
	var ae *abi.Error
	if !errors.Is(err, abi.ErrInit) || !errors.As(err, &ae) {
		return &StartError{Err: err}
	}
	m := rustFailure.FindStringSubmatch(ae.Message)
	if m == nil {
		return &StartError{Runtime: "rust", Err: err}
	}
	name, uerr := strconv.Unquote(m[2])
	if uerr != nil {
		name = strings.Trim(m[2], `"`)
	}
	cause := &CodedError{Code: "handler", Message: m[3]}
	if code, msg, ok := strings.Cut(m[3], ": "); ok {
		cause.Code, cause.Message = code, msg
	}
	return &StartError{Runtime: "rust", Handler: name, Phase: m[1], Err: cause}
}
