package engine

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/perp"
)

// A route's targets live in its table, replaced whole (copy on write) by Swap, SetWeights and
// SetShadow. Each delivery picks its target from the table current at its dispatch (intake
// or redelivery) and remembers it, so a change moves new deliveries and retries only: what
// is in flight finishes where it is.
//
// The count that lets a removed target drain follows one rule. A dispatcher counts the
// delivery in at its pick (Target.enter), then loads the table again: unchanged, the change
// that will remove the target comes after the count and sees it; changed, it counts itself
// out and picks again from the new table. So once a change has stored its table, no delivery
// enters a target the table no longer names, and the count of a removed target only falls.

// binding is a target as one route runs it: the Go handler wrapped by the route's middleware
// and policies (Route.Bind), the attribute sets of its metrics, and its counters. A route
// keeps one binding per target (and per role: primary, shadow) for its life, so counters
// survive table changes.
type binding struct {
	route  *Route
	target *Target
	shadow bool
	run    GoHandler
	met    *routeMetrics

	// counts are every event's counts of the binding, per P (perp), one line each: the
	// deliveries dispatched and acknowledged, and the attempts begun and ended, whose
	// difference is the binding's share of its target's in-flight count. Retries and
	// failures are rarer.
	counts          perp.Cells[bindingCount]
	retried, failed atomic.Uint64
}

// bindingCount is one P's counts of a binding.
type bindingCount struct{ dispatched, acked, in, out perp.Count }

// dispatched and acked sum the binding's counts.
func (b *binding) dispatched() uint64 {
	return uint64(perp.Sum(&b.counts, func(c *bindingCount) *perp.Count { return &c.dispatched }))
}

func (b *binding) acked() uint64 {
	return uint64(perp.Sum(&b.counts, func(c *bindingCount) *perp.Count { return &c.acked }))
}

// inFlight is the attempts begun through b and not ended (perp.Balance: zero only if it
// was).
func (b *binding) inFlight() int64 {
	in, out := perp.Balance(&b.counts,
		func(c *bindingCount) *perp.Count { return &c.in }, func(c *bindingCount) *perp.Count { return &c.out })
	return in - out
}

// dispatch counts a delivery dispatched through b, in flight at its target: for a shadow's
// delivery, whose target the shadow holds open (choose counts a route's).
func (b *binding) dispatch() {
	p := perp.Pin()
	c := b.counts.At(p)
	c.in.Add(1)
	c.dispatched.Add(1)
	perp.Unpin(p)
}

// leave ends an attempt through b, acknowledged or not; the last one of a retiring target
// closes it.
func (b *binding) leave(e *Engine, acked bool) {
	p := perp.Pin()
	c := b.counts.At(p)
	if acked {
		c.acked.Add(1)
	}
	c.out.Add(1)
	perp.Unpin(p)
	b.target.ended(e)
}

// name is the target's name, nil-safe.
func (b *binding) name() string {
	if b == nil {
		return ""
	}
	return b.target.Name
}

// routing is a route's table: the weighted targets of its primary deliveries and its shadow.
// Immutable once stored.
type routing struct {
	targets []*binding
	weights []uint32
	cum     []uint64 // running sums of weights, for a weighted pick
	sticky  bool
	shadow  *shadowRoute
}

// pick chooses the target of a delivery whose sticky key is key.
func (r *routing) pick(key string) *binding {
	switch {
	case len(r.targets) == 1:
		return r.targets[0]
	case r.sticky:
		return r.targets[rendezvous(key, r.targets, r.weights)]
	}
	n := rand.Uint64N(r.cum[len(r.cum)-1])
	return r.targets[sort.Search(len(r.cum), func(i int) bool { return r.cum[i] > n })]
}

// rendezvous is weighted rendezvous hashing (highest random weight): each target scores
// weight / -ln(u), u a hash of the key and the target's name in (0, 1), and the highest
// wins. A key keeps its target while the weights stay; changing one target's weight moves
// keys only to or from that target, the fewest a split can move. The hash is FNV-1a,
// finished by SplitMix64's mixer: the same key picks the same target in every process.
func rendezvous(key string, targets []*binding, weights []uint32) int {
	best, bestScore := 0, -1.0
	for i, b := range targets {
		if weights[i] == 0 {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(b.target.Name))
		h.Write([]byte{0})
		h.Write([]byte(key))
		u := (float64(mix64(h.Sum64())>>11) + 0.5) / (1 << 53)
		score := float64(weights[i]) / -math.Log(u)
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// mix64 is SplitMix64's finalizer: it spreads FNV's weak low bits over the word.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// local reports whether events Rust handlers emit to the route may stay in Rust, and the Rust
// handler they then go to: an exact route to one Rust target, with no policy of Go's own, no
// timeout and no shadow.
func (r *routing) local(rt *Route) (string, bool) {
	if len(r.targets) != 1 || r.shadow != nil || !rt.Exact() || rt.Policies || rt.Timeout > 0 {
		return "", false
	}
	t := r.targets[0].target
	return t.Name, t.rust && t.RustIndex != 0
}

// choose picks the target for a delivery of rt with sticky key key from the table current
// now, and counts it in flight there (the rule above).
func (e *Engine) choose(rt *Route, key string) (*binding, *routing) {
	for {
		tab := rt.table.Load()
		b := tab.pick(key)
		p := perp.Pin()
		c := b.counts.At(p)
		c.in.Add(1)
		perp.LightFence() // against the Fence of a table change's release
		if rt.table.Load() == tab {
			c.dispatched.Add(1)
			perp.Unpin(p)
			return b, tab
		}
		perp.Unpin(p)
		b.leave(e, false)
	}
}

// Weighted is a target and its weight in a route's split.
type Weighted struct {
	Target *Target
	Weight uint32
}

// LookupRoute finds the route added with pattern (the pattern itself, not an event type it
// matches).
func (e *Engine) LookupRoute(pattern string) (*Route, error) {
	for _, rt := range e.router.all {
		if rt.Pattern == pattern {
			return rt, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownRoute, pattern)
}

// Swap sends the route's new deliveries and retries to t, and only to t: it ends any split
// (SetWeights) and keeps the route's shadow. It returns once t is open (its Open run, its
// pool started) and the table is in place, and, while running, once Rust routes what its
// handlers emit to the route accordingly; deliveries in flight finish on their target, and a
// target no route names any more closes once drained. Safe for concurrent use.
func (e *Engine) Swap(pattern string, t *Target) error {
	return e.SetWeights(pattern, []Weighted{{Target: t, Weight: 1}}, false)
}

// SetWeights splits the route's new deliveries between targets in proportion to their
// weights; with sticky, the deliveries of one partition key (the event's id when it has
// none) go to one target while the weights stay (a change moves the fewest keys). A weight
// may be 0 (the target takes nothing, yet stays open); the total must not be. Otherwise as
// Swap.
func (e *Engine) SetWeights(pattern string, ws []Weighted, sticky bool) error {
	if len(ws) == 0 {
		return fmt.Errorf("%w: no target", ErrInvalidWeights)
	}
	var total uint64
	seen := map[*Target]bool{}
	for _, w := range ws {
		if w.Target == nil {
			return fmt.Errorf("%w: a nil target", ErrUnknownTarget)
		}
		if seen[w.Target] {
			return fmt.Errorf("%w: %s handler %q is named twice", ErrInvalidWeights, w.Target.runtimeName(), w.Target.Name)
		}
		seen[w.Target] = true
		total += uint64(w.Weight)
	}
	if total == 0 {
		return fmt.Errorf("%w: the weights add up to 0", ErrInvalidWeights)
	}
	return e.change(pattern, func(rt *Route, old *routing) (*routing, error) {
		next := &routing{sticky: sticky, shadow: old.shadow}
		var sum uint64
		for _, w := range ws {
			if err := e.registered(w.Target); err != nil {
				return nil, err
			}
			sum += uint64(w.Weight)
			next.targets = append(next.targets, rt.bindingOf(e, w.Target, false))
			next.weights = append(next.weights, w.Weight)
			next.cum = append(next.cum, sum)
		}
		return next, nil
	})
}

// change replaces a route's table with the one next builds from the current one, under the
// control lock: the targets the new table names are acquired (opened if need be) before it
// is stored, the old one's released after, then Rust's local routes follow.
func (e *Engine) change(pattern string, next func(rt *Route, old *routing) (*routing, error)) error {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	if st := e.State(); st >= Draining {
		return fmt.Errorf("%w: routes change while running (state %d)", ErrClosed, st)
	}
	rt, err := e.LookupRoute(pattern)
	if err != nil {
		return err
	}
	old := rt.table.Load()
	tab, err := next(rt, old)
	if err != nil {
		return err
	}
	if err := e.acquireAll(tab, old); err != nil {
		return err
	}
	if tab.shadow != nil && tab.shadow != old.shadow {
		tab.shadow.start()
	}
	rt.table.Store(tab)
	if old.shadow != nil && old.shadow != tab.shadow {
		old.shadow.stop() // its dispatcher is gone: every shadow delivery it made is counted in
	}
	for _, b := range old.targets {
		b.target.release(e)
	}
	if old.shadow != nil && old.shadow != tab.shadow {
		old.shadow.bound.target.release(e)
	}
	if e.State() == Running {
		e.setLocalRoutes()
	}
	e.log.Info("tandem: route changed", zap.String("route", rt.Pattern), zap.String("targets", tab.describe()))
	return nil
}

// acquireAll takes a reference to each target of tab (the shadow's only when it is new),
// releasing what it took if one fails to open.
func (e *Engine) acquireAll(tab, old *routing) error {
	var took []*Target
	targets := make([]*Target, 0, len(tab.targets)+1)
	for _, b := range tab.targets {
		targets = append(targets, b.target)
	}
	if tab.shadow != nil && tab.shadow != old.shadow {
		targets = append(targets, tab.shadow.bound.target)
	}
	for _, t := range targets {
		if err := t.acquire(e.lifeCtx, e); err != nil {
			for _, u := range took {
				u.release(e)
			}
			return err
		}
		took = append(took, t)
	}
	return nil
}

// describe names a table's targets for the log: "rust:demo.echo=3,go:echo=1 sticky".
func (r *routing) describe() string {
	var b strings.Builder
	for i, t := range r.targets {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%s=%d", t.target.runtimeName(), t.target.Name, r.weights[i])
	}
	if r.sticky {
		b.WriteString(" sticky")
	}
	if r.shadow != nil {
		fmt.Fprintf(&b, " shadow %s:%s", r.shadow.bound.target.runtimeName(), r.shadow.bound.target.Name)
	}
	return b.String()
}

// bindingOf is the route's binding of t in a role, made on first use. Called with e.ctl held.
func (rt *Route) bindingOf(e *Engine, t *Target, shadow bool) *binding {
	for _, b := range rt.bindings {
		if b.target == t && b.shadow == shadow {
			return b
		}
	}
	b := &binding{route: rt, target: t, shadow: shadow, counts: perp.Make[bindingCount]()}
	t.addBinding(b)
	if !t.rust {
		b.run = t.Handler
		if rt.Bind != nil {
			b.run = rt.Bind(t, shadow)
		}
	}
	if e.obs.metrics.on {
		b.met = e.obs.metrics.forRoute(rt, b)
	}
	rt.bindings = append(rt.bindings, b)
	return b
}

// setLocalRoutes tells Rust which types its handlers' emitted events may stay in Rust for,
// and to which handler: every route whose table allows it (routing.local). Called with e.ctl
// held (the last set wins), while the runtime starts or runs.
func (e *Engine) setLocalRoutes() {
	var local []abi.LocalRoute
	for _, rt := range e.router.all {
		if to, ok := rt.table.Load().local(rt); ok {
			local = append(local, abi.LocalRoute{Type: rt.Pattern, Handler: to})
		}
	}
	slices.SortFunc(local, func(a, b abi.LocalRoute) int { return strings.Compare(a.Type, b.Type) })
	e.lifeMu.RLock()
	defer e.lifeMu.RUnlock()
	if e.rustStopping.Load() {
		return
	}
	if err := abi.SetLocalRoutes(e.h, local); err != nil {
		// Unreachable with routes this engine checked; the old set stays, and events Rust
		// would keep go to the handler it names (the old target), as in flight.
		e.log.Error("tandem: cannot update Rust's local routes", zap.Error(err))
	}
}
