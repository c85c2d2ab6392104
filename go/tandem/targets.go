package tandem

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/tandemrt/tandem/go/internal/engine"
)

// Moving a route between handlers while running. A route sends each event to a target: a Go
// handler (GoTarget, registered by Handle or Register) or a Rust handler of the linked
// library (RustTarget, by the type it is registered under; two versions of one handler are
// two types). Swap moves a route to another target, SetWeights splits it between several,
// Shadow gives it a shadow that runs a copy of each event and is compared with the primary.
//
// Every change applies to deliveries that start after it returns: events in flight finish on
// the handler they went to, and a retry goes to the handler the route names at the retry. A
// Go handler opens (Init, WarmUp) before it takes its first event, and closes (its workers
// stopped, Close) once no route names it and its last event has finished; routed again, it
// opens again. Events Rust handlers emit to the route follow the change too.

// Target names a handler a route can send events to. The zero Target names none. A plain
// value, comparable.
type Target struct {
	rust bool
	name string
}

// GoTarget names the Go handler registered under name (by Handle or Register).
func GoTarget(name string) Target { return Target{name: name} }

// RustTarget names the Rust handler the linked library registers under eventType.
func RustTarget(eventType string) Target { return Target{rust: true, name: eventType} }

// ParseTarget reads a Target as String writes it: "go:name" or "rust:type".
func ParseTarget(s string) (Target, error) {
	side, name, ok := strings.Cut(s, ":")
	switch {
	case !ok || name == "":
	case side == "go":
		return GoTarget(name), nil
	case side == "rust":
		return RustTarget(name), nil
	}
	return Target{}, fmt.Errorf("%w: %q: a handler is go:NAME or rust:TYPE", ErrUnknownTarget, s)
}

// IsRust reports whether t names a Rust handler.
func (t Target) IsRust() bool { return t.rust }

// Name is the Go handler's name or the Rust handler's registered type.
func (t Target) Name() string { return t.name }

// String is "go:name" or "rust:type".
func (t Target) String() string {
	if t.rust {
		return "rust:" + t.name
	}
	return "go:" + t.name
}

// Register registers the Go handler h under name without routing anything to it: a target
// for Swap, SetWeights and Shadow. opts may size its pool (WithWorkers, WithQueue,
// WithIdleTimeout) and wrap it (WithMiddleware, inside each route's own middleware and
// policies); a route's options (WithTimeout, WithRetry, WithOverload, WithPolicy) belong to
// the routes and are refused here. Registered before Start, h is initialized and warmed up
// by Start, with the routed handlers; while running, by the first route change that names
// it, before it takes an event. Names are unique among Go handlers (Handle registers one
// too). Safe for concurrent use.
//
// Errors: ErrInvalidRoute (nil handler, empty or taken name, a route's option), ErrClosed
// (while starting or once stopping).
func (r *Runtime) Register(name string, h Handler, opts ...RouteOption) error {
	if h == nil || name == "" {
		return fmt.Errorf("%w: Register needs a name and a handler", ErrInvalidRoute)
	}
	switch st := r.State(); st {
	case Registered, Running:
	default:
		return fmt.Errorf("%w: Register while %s", ErrClosed, st)
	}
	raw := &routeOptions{}
	for _, opt := range opts {
		opt(raw)
	}
	if raw.timeout != 0 || raw.retry != nil || raw.overloadSet || len(raw.policies) > 0 {
		return fmt.Errorf("%w: %q: WithTimeout, WithRetry, WithOverload and WithPolicy are a route's options, not a handler's", ErrInvalidRoute, name)
	}
	o, err := r.options(name, opts)
	if err != nil {
		return err
	}
	_, err = r.register(name, h, o, o.middleware)
	return err
}

// register registers h under name with o's pool, wrapped by mw, as an engine target whose
// Open and Close run its lifecycle methods.
func (r *Runtime) register(name string, h Handler, o *routeOptions, mw []Middleware) (*engine.Target, error) {
	g := &goHandler{name: name, raw: h, h: Chain(h, mw...)}
	t := &engine.Target{Name: name, Handler: func(ctx context.Context, ev *Event) engine.Result {
		return g.h.Handle(ctx, ev).engine(name)
	}, MinWorkers: o.minWorkers, MaxWorkers: o.maxWorkers, Queue: o.queue, Idle: o.idle,
		Open: g.open, Close: g.close}
	r.mu.Lock()
	defer r.mu.Unlock()
	g.life = r.lifeOf(h)
	if err := r.e.RegisterTarget(t); err != nil {
		return nil, err
	}
	if r.goHandlers == nil {
		r.goHandlers = map[string]*goHandler{}
	}
	r.goHandlers[name] = g
	r.handlers = append(r.handlers, g)
	return t, nil
}

// goHandler is a Go handler as registered: the user's value, for its lifecycle methods, and
// the handler its routes wrap.
type goHandler struct {
	name string
	raw  Handler
	h    Handler
	life *handlerLife
}

// handlerLife is the lifecycle of one handler value: a pointer registered under several
// names is one handler, initialised when the first of its names opens and closed when the
// last closes. (Values that are not pointers are never the same handler: == on a struct
// holding a func panics.)
type handlerLife struct {
	mu    sync.Mutex
	h     Handler
	opens int
}

// lifeOf is h's life: shared with an earlier registration of the same pointer. r.mu held.
func (r *Runtime) lifeOf(h Handler) *handlerLife {
	if reflect.TypeOf(h).Kind() == reflect.Pointer {
		for _, g := range r.handlers {
			if reflect.TypeOf(g.raw) == reflect.TypeOf(h) && g.raw == h {
				return g.life
			}
		}
	}
	return &handlerLife{h: h}
}

// begin counts one opening in, running first (Init) when it is the first.
func (l *handlerLife) begin(first func(Handler) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opens == 0 {
		if err := first(l.h); err != nil {
			return err
		}
	}
	l.opens++
	return nil
}

// end counts one opening out, running Close when it was the last.
func (l *handlerLife) end() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opens == 0 {
		return nil
	}
	l.opens--
	if l.opens > 0 {
		return nil
	}
	if c, ok := l.h.(closeHook); ok {
		return hook(c.Close)
	}
	return nil
}

// open runs Init then WarmUp, for a handler opened while running (a route change); a failed
// WarmUp closes what Init opened. A handler open under another name already is counted in.
func (g *goHandler) open(ctx context.Context) error {
	warm := false
	err := g.life.begin(func(h Handler) error {
		if ih, ok := h.(initHook); ok {
			if err := hook(func() error { return ih.Init(ctx) }); err != nil {
				return fmt.Errorf("init: %w", err)
			}
		}
		warm = true
		return nil
	})
	if err != nil || !warm {
		return err
	}
	if wh, ok := g.raw.(warmUpHook); ok {
		if err := hook(func() error { return wh.WarmUp(ctx) }); err != nil {
			_ = g.life.end()
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	return nil
}

// close counts the handler's opening out, running Close when it was the last.
func (g *goHandler) close() error { return g.life.end() }

// goHandler is the registered Go handler named name, as its routes wrap it.
func (r *Runtime) goHandler(name string) Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.goHandlers[name].h
}

// target finds t's engine target.
func (r *Runtime) target(t Target) (*engine.Target, error) {
	if t.name == "" {
		return nil, fmt.Errorf("%w: the zero Target", ErrUnknownTarget)
	}
	return r.e.LookupTarget(t.rust, t.name)
}

// Swap moves the route added with pattern (the pattern itself, as given to Handle or
// HandleRust, or a Rust handler's type) to the handler to: every event that starts after Swap
// returns goes to it, retries included; events in flight finish where they are. It ends any
// split and keeps the route's shadow. A Go handler not open yet is initialized and warmed up
// first; one no route names any more closes once its last event has finished. Callable
// before Start and while running; safe for concurrent use.
//
// Errors: ErrUnknownRoute, ErrUnknownTarget, ErrClosed (once stopping), or ErrStart
// wrapping the Init or WarmUp error of the Go handler that failed to open (the route is
// unchanged).
func (r *Runtime) Swap(pattern string, to Target) error {
	return r.SetWeights(pattern, []Weighted{{Target: to, Weight: 1}})
}

// Weighted is a target and its share of a split route's events. A plain value.
type Weighted struct {
	Target Target
	// Weight is the target's share relative to the others' (0 sends it nothing).
	Weight int
}

// SplitOption configures a split (SetWeights). Options are plain functions, safe to share.
type SplitOption func(*splitOptions)

type splitOptions struct{ sticky bool }

// Sticky keeps the events of one partition key (Event.PartitionKey, or its ID when it has
// none) on one target while the weights stay the same. A weight change moves only the keys
// it must (weighted rendezvous hashing), and the same key picks the same target in every
// process with the same targets and weights.
func Sticky() SplitOption { return func(o *splitOptions) { o.sticky = true } }

// SetWeights splits the route added with pattern between targets, each event going to one of
// them at random in proportion to its weight (Sticky: by its partition key). Weights may be
// changed again at any time; each call replaces the whole split and keeps the route's
// shadow. Otherwise as Swap.
//
// Errors: as Swap, and ErrInvalidWeights (no target, a negative weight, weights adding up to
// 0 or above 2^32, a target named twice).
func (r *Runtime) SetWeights(pattern string, weights []Weighted, opts ...SplitOption) error {
	o := splitOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	ws := make([]engine.Weighted, 0, len(weights))
	var total int64
	for _, w := range weights {
		if w.Weight < 0 {
			return fmt.Errorf("%w: %s has weight %d", ErrInvalidWeights, w.Target, w.Weight)
		}
		if total += int64(w.Weight); total > 1<<32-1 {
			return fmt.Errorf("%w: the weights add up to more than 2^32-1", ErrInvalidWeights)
		}
		t, err := r.target(w.Target)
		if err != nil {
			return err
		}
		ws = append(ws, engine.Weighted{Target: t, Weight: uint32(w.Weight)})
	}
	return r.routeError(r.e.SetWeights(pattern, ws, o.sticky))
}

// routeError says a Go handler's failure to open as ErrStart.
func (r *Runtime) routeError(err error) error {
	if err == nil || errors.Is(err, ErrUnknownRoute) || errors.Is(err, ErrUnknownTarget) ||
		errors.Is(err, ErrInvalidWeights) || errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStart, err)
}

// ShadowResult is one side of a shadow comparison: the outcome the primary's submitter got
// (after its retries) or the shadow's one run had, the error code of a failure, and the
// reply of an Ack. A plain value; Reply must not be modified.
type ShadowResult struct {
	Outcome Outcome
	Code    string
	Reply   []byte
}

// ShadowOption configures a shadow (Shadow). Options are plain functions, safe to share.
type ShadowOption func(*shadowOptions)

// shadowOptions are the engine's, kept out of the public signatures.
type shadowOptions struct{ engine.ShadowOptions }

// WithComparator decides whether a shadow's result matches the primary's (default: equal
// outcomes and byte-equal replies). compare runs on the runtime's goroutines and must be
// safe for concurrent use and quick.
func WithComparator(compare func(primary, shadow ShadowResult) bool) ShadowOption {
	return func(o *shadowOptions) {
		o.Compare = func(p, s engine.ShadowResult) bool {
			return compare(ShadowResult{Outcome(p.Outcome), p.Code, p.Reply}, ShadowResult{Outcome(s.Outcome), s.Code, s.Reply})
		}
	}
}

// WithShadowQueue bounds the copies waiting for the shadow (default 256): past it a copy is
// dropped and counted.
func WithShadowQueue(n int) ShadowOption { return func(o *shadowOptions) { o.Queue = n } }

// WithMismatchLog rate-limits the mismatches logged (at warn, with both replies up to
// sampleBytes each): one every interval, burst at once (default one a second, 5, 512 bytes).
func WithMismatchLog(every time.Duration, burst, sampleBytes int) ShadowOption {
	return func(o *shadowOptions) { o.LogEvery, o.LogBurst, o.SampleBytes = every, burst, sampleBytes }
}

// Shadow gives the route added with pattern a shadow handler, in place of the one it has:
// once each event's outcome is final, a copy of its envelope (the same bytes) goes to the
// shadow, which runs it once, with no retry and no dead letter; its outcome and reply are
// compared with the primary's, counted as a match or a mismatch (RouteInfo.Shadow, the
// tandem.shadow.results metric), a bounded sample of mismatches is kept and logged, and the
// result is discarded. The shadow never changes what the submitter gets, when, or how the
// event is retried; it is not counted in Stats.Submitted and the like (Stats.Shadow counts
// it). It runs from a bounded queue, and only when its handler has room at once (a worker of
// a Go handler's pool, a free request slot for a Rust one, at most a quarter of them): a
// copy that finds no room is dropped and counted. A shadow's run emits nothing (Emit, and a
// Rust handler's emit, discard its events); its other side effects are its own, and IsShadow
// tells a Go handler it runs as a shadow. Otherwise as Swap.
func (r *Runtime) Shadow(pattern string, shadow Target, opts ...ShadowOption) error {
	t, err := r.target(shadow)
	if err != nil {
		return err
	}
	o := shadowOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.Queue < 0 {
		return fmt.Errorf("%w: WithShadowQueue(%d)", ErrInvalidRoute, o.Queue)
	}
	return r.routeError(r.e.SetShadow(pattern, t, o.ShadowOptions))
}

// Unshadow removes the route's shadow; copies still queued are dropped and counted, runs in
// progress finish and are compared.
func (r *Runtime) Unshadow(pattern string) error {
	return r.routeError(r.e.SetShadow(pattern, nil, engine.ShadowOptions{}))
}

// RouteInfo is a route's targets now and its counters. A plain value.
type RouteInfo struct {
	Pattern string
	// Targets are the primary targets with their weights (one, weight 1, unless split).
	Targets []Weighted
	// Sticky: the split keeps a partition key on one target.
	Sticky bool
	// Shadow is the shadow target, or the zero Target.
	Shadow Target
	// Handlers count, for each handler the route has sent events to since it was added,
	// what became of them there.
	Handlers []HandlerCounts
	// Shadowed counts the route's shadow copies, across the shadows it has had.
	Shadowed ShadowStats
}

// HandlerCounts are a route's counters for one handler: attempts dispatched to it (first
// deliveries and retries), and those it acknowledged, failed retryably, or failed for good;
// InFlight is the handler's attempts not finished now, from every route (a handler a route
// moved away from drains to 0). Shadow counts the handler's runs as the route's shadow,
// apart. A plain value.
type HandlerCounts struct {
	Target                             Target
	Shadow                             bool
	Dispatched, Acked, Retried, Failed uint64
	InFlight                           int64
}

// ShadowStats count a route's shadow copies: each offered copy ends matched, mismatched or
// dropped (the rest are in flight). Samples are the most recent mismatches, oldest first
// (at most 16), replies cut to the sample size. A plain value.
type ShadowStats struct {
	Offered, Matched, Mismatched, Dropped uint64
	Samples                               []Mismatch
}

// Mismatch is one sampled mismatch: the event, the shadow handler, both results (Primary, what
// the submitter got; Got, the shadow's) and when it was compared. A plain value.
type Mismatch struct {
	EventID, EventType string
	Shadow             Target
	Primary, Got       ShadowResult
	At                 time.Time
}

// Route reports the targets and counters of the route added with pattern. Safe for
// concurrent use; ErrUnknownRoute if no route was added with pattern.
func (r *Runtime) Route(pattern string) (RouteInfo, error) {
	rt, err := r.e.LookupRoute(pattern)
	if err != nil {
		return RouteInfo{}, err
	}
	info := RouteInfo{Pattern: pattern}
	ws, sticky := rt.Targets()
	for _, w := range ws {
		info.Targets = append(info.Targets, Weighted{Target: publicTarget(w.Target), Weight: int(w.Weight)})
	}
	info.Sticky = sticky
	if s := rt.Shadow(); s != nil {
		info.Shadow = publicTarget(s)
	}
	for _, c := range rt.TargetCounts(r.e) {
		info.Handlers = append(info.Handlers, HandlerCounts{Target: publicTarget(c.Target), Shadow: c.Shadow,
			Dispatched: c.Dispatched, Acked: c.Acked, Retried: c.Retried, Failed: c.Failed, InFlight: c.Target.InFlight()})
	}
	sc := rt.ShadowCounts()
	info.Shadowed = ShadowStats{Offered: sc.Offered, Matched: sc.Matched, Mismatched: sc.Mismatched, Dropped: sc.Dropped}
	for _, m := range sc.Samples {
		info.Shadowed.Samples = append(info.Shadowed.Samples, Mismatch{EventID: m.EventID, EventType: m.EventType,
			Shadow:  Target{rust: m.TargetRust, name: m.Target},
			Primary: ShadowResult{Outcome(m.Primary.Outcome), m.Primary.Code, m.Primary.Reply},
			Got:     ShadowResult{Outcome(m.Shadow.Outcome), m.Shadow.Code, m.Shadow.Reply}, At: m.At})
	}
	return info, nil
}

func publicTarget(t *engine.Target) Target { return Target{rust: t.IsRust(), name: t.Name} }
