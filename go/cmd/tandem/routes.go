package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tandemrt/tandem/go/tandem"
)

// routeChange is one -shadow, -weights or -swap flag of `tandem run`: a route change made once
// the runtime runs, before the load starts.
type routeChange struct {
	kind, pattern string
	weights       []tandem.Weighted
	sticky        bool
}

// routeChanges collects the route-change flags in the order given.
type routeChanges struct {
	kind    string
	changes *[]routeChange
}

func (f routeChanges) String() string { return "" }

// Set reads PATTERN=TARGET (-shadow, -swap) or PATTERN=TARGET:WEIGHT,...[,sticky] (-weights);
// a TARGET is go:NAME or rust:TYPE.
func (f routeChanges) Set(v string) error {
	pattern, spec, ok := strings.Cut(v, "=")
	if !ok || pattern == "" || spec == "" {
		return fmt.Errorf("-%s %q: want PATTERN=%s", f.kind, v, map[bool]string{true: "TARGET:WEIGHT,...[,sticky]", false: "TARGET"}[f.kind == "weights"])
	}
	c := routeChange{kind: f.kind, pattern: pattern}
	if f.kind != "weights" {
		t, err := tandem.ParseTarget(spec)
		if err != nil {
			return err
		}
		c.weights = []tandem.Weighted{{Target: t, Weight: 1}}
	} else {
		for _, part := range strings.Split(spec, ",") {
			if part == "sticky" {
				c.sticky = true
				continue
			}
			i := strings.LastIndex(part, ":")
			w, err := strconv.Atoi(part[i+1:])
			if i <= 0 || err != nil {
				return fmt.Errorf("-weights %q: %q is not TARGET:WEIGHT", v, part)
			}
			t, err := tandem.ParseTarget(part[:i])
			if err != nil {
				return err
			}
			c.weights = append(c.weights, tandem.Weighted{Target: t, Weight: w})
		}
	}
	*f.changes = append(*f.changes, c)
	return nil
}

// apply makes the changes on rt, in order.
func applyRouteChanges(rt *tandem.Runtime, changes []routeChange) error {
	for _, c := range changes {
		var err error
		switch c.kind {
		case "shadow":
			err = rt.Shadow(c.pattern, c.weights[0].Target)
		case "swap":
			err = rt.Swap(c.pattern, c.weights[0].Target)
		default:
			var opts []tandem.SplitOption
			if c.sticky {
				opts = append(opts, tandem.Sticky())
			}
			err = rt.SetWeights(c.pattern, c.weights, opts...)
		}
		if err != nil {
			return fmt.Errorf("-%s %s: %w", c.kind, c.pattern, err)
		}
	}
	return nil
}

// reportRoutes writes, for each route a change named, its targets, what each handler took and
// the shadow's comparisons.
func reportRoutes(out io.Writer, rt *tandem.Runtime, changes []routeChange) {
	seen := map[string]bool{}
	for _, c := range changes {
		if seen[c.pattern] {
			continue
		}
		seen[c.pattern] = true
		info, err := rt.Route(c.pattern)
		if err != nil {
			continue
		}
		var targets []string
		for _, w := range info.Targets {
			targets = append(targets, fmt.Sprintf("%s=%d", w.Target, w.Weight))
		}
		if info.Sticky {
			targets = append(targets, "sticky")
		}
		fmt.Fprintf(out, "  route      %s → %s\n", c.pattern, strings.Join(targets, " "))
		for _, h := range info.Handlers {
			role := "handler"
			if h.Shadow {
				role = "shadow"
			}
			fmt.Fprintf(out, "    %-7s  %s: %d dispatched, %d acked, %d retried, %d failed\n", role, h.Target,
				h.Dispatched, h.Acked, h.Retried, h.Failed)
		}
		if s := info.Shadowed; s.Offered > 0 {
			fmt.Fprintf(out, "    shadow   %d copies: %d matched, %d mismatched, %d dropped\n", s.Offered, s.Matched, s.Mismatched, s.Dropped)
		}
	}
}
