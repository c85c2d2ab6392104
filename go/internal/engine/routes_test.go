package engine

import (
	"errors"
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
