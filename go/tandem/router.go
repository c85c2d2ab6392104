package tandem

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemrt/tandem/go/tandem/retry"
)

// A route binds an event-type pattern to one handler, in Go or in Rust, with its policies.
//
// Patterns are dot-separated segments. A segment "*" matches exactly one segment; a last
// segment ">" matches one or more. "order.created" is exact, "order.*" matches
// "order.created" but not "order.item.added", "order.>" matches both. An exact route wins;
// among wildcards the one with more literal segments wins, then one without ">", then the one
// registered first.
type route struct {
	pattern  string
	segments []string
	literals int
	tail     bool // ends in ">"
	order    int

	name      string  // the handler's name in logs, errors and dead letters
	goHandler Handler // with its middleware; nil for a Rust route
	raw       Handler // as registered, for Init, WarmUp and Close
	rustIndex uint32  // 1 + the Rust handler's index (SQE flags); 0 for a Go route
	opts      routeOptions
	pool      *workerPool   // Go routes
	met       *routeMetrics // attribute sets, once metrics are on
}

func (rt *route) isRust() bool { return rt.rustIndex != 0 }

// routeOptions are a route's settings; zero fields take the runtime's.
type routeOptions struct {
	minWorkers, maxWorkers int
	queue                  int
	idle                   time.Duration
	timeout                time.Duration
	retry                  *retry.Backoff
	overload               OverloadPolicy
	overloadSet            bool
	middleware             []Middleware
	policies               []Policy
}

// RouteOption configures one route.
type RouteOption func(*routeOptions)

// WithWorkers sizes a Go route's goroutine pool: min workers always, up to max under load,
// shrinking back when they idle (defaults 1 and 4×GOMAXPROCS).
func WithWorkers(min, max int) RouteOption {
	return func(o *routeOptions) { o.minWorkers, o.maxWorkers = min, max }
}

// WithIdleTimeout sets how long a Go route's worker above the minimum may idle before it
// exits (default 10s).
func WithIdleTimeout(d time.Duration) RouteOption { return func(o *routeOptions) { o.idle = d } }

// WithQueue bounds a Go route's queue of events waiting for a worker (default 1024).
func WithQueue(n int) RouteOption { return func(o *routeOptions) { o.queue = n } }

// WithTimeout bounds each delivery: a Go handler's context is done after d; a Rust handler's
// event carries the deadline and its task is cancelled then. The outcome is a Retry with code
// "timeout" (so the retry schedule decides what follows).
func WithTimeout(d time.Duration) RouteOption { return func(o *routeOptions) { o.timeout = d } }

// WithRetry sets the route's retry schedule (default Config.Retry).
func WithRetry(b retry.Backoff) RouteOption { return func(o *routeOptions) { o.retry = &b } }

// WithOverload sets what Submit does when the route is full: Block, Reject or Shed (default
// Config.Overload). A Go route is full when its queue is; a Rust route when every request
// slot is in flight.
func WithOverload(p OverloadPolicy) RouteOption {
	return func(o *routeOptions) { o.overload, o.overloadSet = p, true }
}

// WithMiddleware wraps the route's Go handler, after the runtime's global middleware (Use).
func WithMiddleware(mw ...Middleware) RouteOption {
	return func(o *routeOptions) { o.middleware = append(o.middleware, mw...) }
}

// WithPolicy adds policies (package policy: Breaker, RateLimit, Dedup, Timeout; or the
// user's own) to the route, in order. On a Go route they wrap the handler; on a Rust route
// they admit each event before it is published and learn its final outcome.
func WithPolicy(p ...Policy) RouteOption {
	return func(o *routeOptions) { o.policies = append(o.policies, p...) }
}

func parsePattern(pattern string) (*route, error) {
	if pattern == "" {
		return nil, fmt.Errorf("%w: empty route pattern", ErrInvalidRoute)
	}
	rt := &route{pattern: pattern, segments: strings.Split(pattern, ".")}
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

func (rt *route) exact() bool { return rt.literals == len(rt.segments) }

// matches reports whether the dot-separated typ matches the route's pattern.
func (rt *route) matches(typ string) bool {
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

// router is the routing table, immutable once the runtime starts (the cache aside).
type router struct {
	exact map[string]*route
	wild  []*route // most specific first
	all   []*route

	cache     sync.Map // event type -> *route, for wildcard resolutions
	cacheSize atomic.Int64
}

// routeCacheMax bounds the cache of wildcard resolutions; past it lookups still work, uncached.
const routeCacheMax = 1 << 14

func (t *router) add(rt *route) error {
	if t.exact == nil {
		t.exact = map[string]*route{}
	}
	for _, o := range t.all {
		if o.pattern == rt.pattern {
			return fmt.Errorf("%w: %q is routed twice", ErrInvalidRoute, rt.pattern)
		}
	}
	rt.order = len(t.all)
	t.all = append(t.all, rt)
	if rt.exact() {
		t.exact[rt.pattern] = rt
		return nil
	}
	t.wild = append(t.wild, rt)
	slices.SortStableFunc(t.wild, func(a, b *route) int {
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
func (t *router) match(typ string) *route {
	if rt, ok := t.exact[typ]; ok {
		return rt
	}
	if len(t.wild) == 0 {
		return nil
	}
	if v, ok := t.cache.Load(typ); ok {
		return v.(*route)
	}
	var found *route
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
