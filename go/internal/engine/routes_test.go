package engine

import (
	"errors"
	"fmt"
	"testing"
)

func TestRoutePatternsMatch(t *testing.T) {
	cases := []struct {
		pattern string
		typ     string
		want    bool
	}{
		{"order.created", "order.created", true},
		{"order.created", "order.created.v2", false},
		{"order.*", "order.created", true},
		{"order.*", "order", false},
		{"order.*", "order.item.added", false},
		{"order.>", "order.created", true},
		{"order.>", "order.item.added", true},
		{"order.>", "order", false},
		{"*.created", "order.created", true},
		{"*.created", "user.created", true},
		{"*.created", "order.deleted", false},
		{">", "anything.at.all", true},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"order.*", "order.", false},
		{"order.*", "", false},
	}
	for _, c := range cases {
		rt, err := parsePattern(c.pattern)
		if err != nil {
			t.Fatalf("parsePattern(%q): %v", c.pattern, err)
		}
		if got := rt.matches(c.typ); got != c.want {
			t.Errorf("%q matches %q = %v, want %v", c.pattern, c.typ, got, c.want)
		}
	}
}

func TestBadPatternsAreRefused(t *testing.T) {
	for _, p := range []string{"", "order..created", "order.>.x", "order.cre*", "a.b>"} {
		if _, err := parsePattern(p); !errors.Is(err, ErrInvalidRoute) {
			t.Errorf("parsePattern(%q) = %v, want ErrInvalidRoute", p, err)
		}
	}
}

func TestMostSpecificRouteWins(t *testing.T) {
	var tbl router
	for _, p := range []string{"order.>", "order.*", "order.created", "*.created", ">"} {
		rt, err := parsePattern(p)
		if err != nil {
			t.Fatal(err)
		}
		rt.Name = p
		if err := tbl.add(rt); err != nil {
			t.Fatal(err)
		}
	}
	for typ, want := range map[string]string{
		"order.created":    "order.created", // exact
		"order.deleted":    "order.*",       // one literal each: the one without ">" wins
		"order.item.added": "order.>",
		"user.created":     "*.created",
		"ping":             ">",
	} {
		for range 2 { // the second lookup comes from the cache
			if got := tbl.match(typ); got == nil || got.Name != want {
				t.Errorf("match(%q) = %v, want %q", typ, got, want)
			}
		}
	}
	dup, _ := parsePattern("order.*")
	if err := tbl.add(dup); !errors.Is(err, ErrInvalidRoute) {
		t.Errorf("a second route for the same pattern: %v, want ErrInvalidRoute", err)
	}
}

func TestNoRouteIsNil(t *testing.T) {
	var tbl router
	rt, _ := parsePattern("order.*")
	tbl.add(rt)
	if got := tbl.match("user.created"); got != nil {
		t.Fatalf("match = %v, want nil", got.Pattern)
	}
}

// A target's in-flight count is what every route's binding of it dispatched and has not
// ended; each binding counts its own dispatches and acknowledgements.
func TestATargetsInFlightSumsItsBindings(t *testing.T) {
	e := &Engine{}
	e.initCounts()
	tg := &Target{Name: "shared", rust: true}
	var routes [2]*Route
	for i := range routes {
		rt := &Route{Pattern: fmt.Sprintf("r%d", i)}
		b := rt.bindingOf(e, tg, false)
		rt.table.Store(&routing{targets: []*binding{b}, weights: []uint32{1}, cum: []uint64{1}})
		routes[i] = rt
	}
	b0, _ := e.choose(routes[0], "k")
	b1, _ := e.choose(routes[1], "k")
	e.choose(routes[1], "k")
	if n := tg.InFlight(); n != 3 {
		t.Fatalf("in flight after three dispatches through two routes: %d", n)
	}
	b1.leave(e, true)
	b0.leave(e, false)
	if n := tg.InFlight(); n != 1 {
		t.Fatalf("in flight after two of three ended: %d", n)
	}
	if d, a := b1.dispatched(), b1.acked(); d != 2 || a != 1 {
		t.Fatalf("the second route's binding: %d dispatched, %d acked; want 2 and 1", d, a)
	}
	if d, a := b0.dispatched(), b0.acked(); d != 1 || a != 0 {
		t.Fatalf("the first route's binding: %d dispatched, %d acked; want 1 and 0", d, a)
	}
}
