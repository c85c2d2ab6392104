package engine

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemrt/tandem/go/tandem/retry"
)

// Route binds an event-type pattern to its targets (one handler, in Go or in Rust, or a
// weighted split, and an optional shadow) with its policies. The façade fills in the
// exported fields before AddRoute, which makes the handler they describe the route's one
// target; Swap, SetWeights and SetShadow change the targets later. The engine owns the rest.
//
// Patterns are dot-separated segments. A segment "*" matches exactly one segment; a last
// segment ">" matches one or more. "order.created" is exact, "order.*" matches
// "order.created" but not "order.item.added", "order.>" matches both. An exact route wins;
// among wildcards the one with more literal segments wins, then one without ">", then the one
// registered first.
type Route struct {
	Pattern string
	// Name names the handler the route is added with: a Go target registered under it by
	// AddRoute, or the Rust handler's type.
	Name string
	// RustIndex is 1 + the index of the Rust handler the route is added with; 0 for a Go
	// handler.
	RustIndex uint32
	// Handler is the Go handler the route is added with.
	Handler GoHandler
	// Bind makes the handler the route runs on a Go target: the target's, wrapped in the
	// route's middleware and policies (shadow: the policies left out, which must not see a
	// shadow's runs). nil: the target's handler as it is.
	Bind func(t *Target, shadow bool) GoHandler
	// Admit runs the route's policies before each event is published to a Rust target; nil:
	// none.
	Admit Admission
	// Timeout bounds each delivery (0: none but the event's own deadline).
	Timeout time.Duration
	// Retry is the route's schedule; nil: the runtime's.
	Retry *retry.Backoff
	// Overload says what intake does when the route is full.
	Overload Overload
	// The pool of the Go handler the route is added with: MinWorkers always, up to MaxWorkers
	// under load, shrinking after Idle; Queue bounds the events waiting for a worker.
	MinWorkers, MaxWorkers, Queue int
	Idle                          time.Duration
	// Policies is true when the route has policies of Go's own: its events then always pass
	// through Go, never routed inside Rust.
	Policies bool
	// CallerRuns lets a Call (a CallerRunner) run the route's Go delivery on its own
	// goroutine when the target's pool has room for one more worker (pool.hold).
	CallerRuns bool
	// Gauges are observed with the metrics (e.g. a breaker's state); nil: none.
	Gauges map[string]func() int64

	segments []string
	literals int
	tail     bool // ends in ">"
	order    int
	met      *routeMetrics

	// table is the route's targets now (routing.go); bindings every target it has had, by
	// role, written under the engine's control lock.
	table    atomic.Pointer[routing]
	bindings []*binding
	shadows  shadowStats
	// spanNames are the span names of the type of the route's last traced event (tracing.go).
	spanNames atomic.Pointer[spanNames]
}

// IsRust reports whether the handler the route was added with is a Rust handler.
func (rt *Route) IsRust() bool { return rt.RustIndex != 0 }

// Targets are the route's primary targets now, with their weights, and whether the split is
// sticky.
func (rt *Route) Targets() (ws []Weighted, sticky bool) {
	tab := rt.table.Load()
	if tab == nil {
		return nil, false
	}
	for i, b := range tab.targets {
		ws = append(ws, Weighted{Target: b.target, Weight: tab.weights[i]})
	}
	return ws, tab.sticky
}

// Shadow is the route's shadow target now, or nil.
func (rt *Route) Shadow() *Target {
	if tab := rt.table.Load(); tab != nil && tab.shadow != nil {
		return tab.shadow.bound.target
	}
	return nil
}

// TargetCounts are a route's counters of one target: deliveries dispatched to it (first
// deliveries and redeliveries), and the attempts it acknowledged, failed retryably, and
// failed for good. Shadow runs count under their own binding (Shadow true). A plain value.
type TargetCounts struct {
	Target                             *Target
	Shadow                             bool
	Dispatched, Acked, Retried, Failed uint64
}

// TargetCounts are the route's counters for every target it has had.
func (rt *Route) TargetCounts(e *Engine) []TargetCounts {
	e.ctl.Lock()
	bs := append([]*binding(nil), rt.bindings...)
	e.ctl.Unlock()
	out := make([]TargetCounts, 0, len(bs))
	for _, b := range bs {
		out = append(out, TargetCounts{Target: b.target, Shadow: b.shadow, Dispatched: b.dispatched(),
			Acked: b.acked(), Retried: b.retried.Load(), Failed: b.failed.Load()})
	}
	return out
}

// Exact reports whether the pattern has no wildcard.
func (rt *Route) Exact() bool { return rt.literals == len(rt.segments) }

// runtimeName is "rust" or "go", as logs and metrics name the side of the handler the route
// was added with.
func (rt *Route) runtimeName() string {
	if rt.IsRust() {
		return "rust"
	}
	return "go"
}

// name is the name of the route's first target now, nil-safe (events without a route are
// dead-lettered): what names the handler of an event that reached none.
func (rt *Route) name() string {
	if rt == nil {
		return ""
	}
	if tab := rt.table.Load(); tab != nil {
		return tab.targets[0].target.Name
	}
	return rt.Name
}

// ParsePattern checks a route pattern.
func ParsePattern(pattern string) error {
	_, err := parsePattern(pattern)
	return err
}

func parsePattern(pattern string) (*Route, error) {
	if pattern == "" {
		return nil, fmt.Errorf("%w: empty route pattern", ErrInvalidRoute)
	}
	rt := &Route{Pattern: pattern, segments: strings.Split(pattern, ".")}
	for i, seg := range rt.segments {
		switch {
		case seg == "":
			return nil, fmt.Errorf("%w: %q has an empty segment", ErrInvalidRoute, pattern)
		case seg == ">":
			if i != len(rt.segments)-1 {
				return nil, fmt.Errorf("%w: %q: \">\" must be the last segment", ErrInvalidRoute, pattern)
			}
			rt.tail = true
		case seg == "*":
		case strings.ContainsAny(seg, "*>"):
			return nil, fmt.Errorf("%w: %q: wildcards stand alone in a segment", ErrInvalidRoute, pattern)
		default:
			rt.literals++
		}
	}
	return rt, nil
}

// matches reports whether the dot-separated typ matches the route's pattern.
func (rt *Route) matches(typ string) bool {
	for i, seg := range rt.segments {
		if seg == ">" {
			return typ != ""
		}
		if typ == "" && i > 0 {
			return false
		}
		next, rest, found := strings.Cut(typ, ".")
		if next == "" || (seg != "*" && seg != next) {
			return false
		}
		if !found {
			return i == len(rt.segments)-1
		}
		typ = rest
	}
	return false
}

// router is the routing table: its routes are fixed once the runtime starts (the cache
// aside); each route's targets are not (Route.table).
type router struct {
	exact map[string]*Route
	wild  []*Route // most specific first
	all   []*Route

	cache     sync.Map // event type -> *Route, for wildcard resolutions
	cacheSize atomic.Int64
}

// routeCacheMax bounds the cache of wildcard resolutions; past it lookups still work, uncached.
const routeCacheMax = 1 << 14

func (t *router) add(rt *Route) error {
	parsed, err := parsePattern(rt.Pattern)
	if err != nil {
		return err
	}
	rt.segments, rt.literals, rt.tail = parsed.segments, parsed.literals, parsed.tail
	if t.exact == nil {
		t.exact = map[string]*Route{}
	}
	for _, o := range t.all {
		if o.Pattern == rt.Pattern {
			return fmt.Errorf("%w: %q is routed twice", ErrInvalidRoute, rt.Pattern)
		}
	}
	rt.order = len(t.all)
	t.all = append(t.all, rt)
	if rt.Exact() {
		t.exact[rt.Pattern] = rt
		return nil
	}
	t.wild = append(t.wild, rt)
	slices.SortStableFunc(t.wild, func(a, b *Route) int {
		switch {
		case a.literals != b.literals:
			return b.literals - a.literals
		case a.tail != b.tail:
			if a.tail {
				return 1
			}
			return -1
		}
		return a.order - b.order
	})
	return nil
}

// match finds the route for an event type, or nil.
func (t *router) match(typ string) *Route {
	if rt, ok := t.exact[typ]; ok {
		return rt
	}
	if len(t.wild) == 0 {
		return nil
	}
	if v, ok := t.cache.Load(typ); ok {
		return v.(*Route)
	}
	var found *Route
	for _, rt := range t.wild {
		if rt.matches(typ) {
			found = rt
			break
		}
	}
	if t.cacheSize.Load() < routeCacheMax {
		if _, loaded := t.cache.LoadOrStore(typ, found); !loaded {
			t.cacheSize.Add(1)
		}
	}
	return found
}
