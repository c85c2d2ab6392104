package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The goals of tandem's crossing, measured the way they are stated: every contender in every
// round, the order of contenders reversed from one round to the next (A B C, C B A, …), each
// target's ratio taken within a round (tandem's figure over the contender's, same round) and
// reported as its median over the rounds with the min–max spread. A machine shared with other
// work moves absolute figures from round to round; a ratio within a round moves much less, and
// the spread says by how much.

// GoalsConfig shapes RunGoals, which reads a copy of it. Zero fields take the defaults, which
// keep a run of 5 rounds under about five minutes on two cores.
type GoalsConfig struct {
	// Rounds is how many times every measurement runs (default 5).
	Rounds int
	// Quick makes one round of tiny measurements, which proves the program, not the goals.
	Quick bool

	// IdleOps is how many idle round trips each idle measurement times (default 1,000, so
	// that its p99 is not its two or three slowest ops); each waits IdleGap first (default
	// 2 ms, or 4 spin windows if longer) so both sides park.
	IdleOps int
	IdleGap time.Duration
	// Serial is how long a back-to-back round trip runs, after a warm-up of a tenth of it
	// (default 300 ms).
	Serial time.Duration
	// Burst is the closed-loop burst that measures saturation, after a warm-up of a fifth of
	// it (default 500 ms); Workers the goroutines of bursts and open loops (default 64).
	Burst   time.Duration
	Workers int
	// Step is how long each open-loop rate is offered (default 600 ms), or long enough for
	// StepOps ops if that is longer (default 5,000), so that a low rate's p99 is not its
	// few slowest ops.
	Step    time.Duration
	StepOps int
	// Fractions of rings' saturation (same round) and absolute Rates (ops/s) offered to every
	// open-loop contender (defaults 1%, 10%, 25%, 50% and 1k, 10k, 100k, 300k).
	Fractions []float64
	Rates     []float64
	// InFlight is the batch of 1 ms handlers in flight at once (default 10,000); InFlightBatches
	// how many batches are timed per contender (default 2) after one untimed one.
	InFlight        int
	InFlightBatches int
	// IdleCPUBurst is the load before the idle CPU is measured over IdleCPUWait, from
	// IdleCPUSettle after the load stops (defaults 300 ms, 1 s and 1 s: the target is the
	// idle CPU one second after load stops).
	IdleCPUBurst  time.Duration
	IdleCPUSettle time.Duration
	IdleCPUWait   time.Duration

	// Logf, if set, receives a line per measurement.
	Logf func(format string, args ...any)
}

func (c GoalsConfig) withDefaults() GoalsConfig {
	if c.Quick {
		q := GoalsConfig{Rounds: 1, IdleOps: 20, Serial: 30 * time.Millisecond, Burst: 50 * time.Millisecond,
			Step: 50 * time.Millisecond, StepOps: 20, InFlight: 500, InFlightBatches: 1,
			IdleCPUBurst: 20 * time.Millisecond, IdleCPUSettle: 20 * time.Millisecond, IdleCPUWait: 100 * time.Millisecond}
		c.Rounds = cmp0(c.Rounds, q.Rounds)
		c.IdleOps = cmp0(c.IdleOps, q.IdleOps)
		c.Serial = cmp0(c.Serial, q.Serial)
		c.Burst = cmp0(c.Burst, q.Burst)
		c.Step = cmp0(c.Step, q.Step)
		c.StepOps = cmp0(c.StepOps, q.StepOps)
		c.InFlight = cmp0(c.InFlight, q.InFlight)
		c.InFlightBatches = cmp0(c.InFlightBatches, q.InFlightBatches)
		c.IdleCPUBurst = cmp0(c.IdleCPUBurst, q.IdleCPUBurst)
		c.IdleCPUWait = cmp0(c.IdleCPUWait, q.IdleCPUWait)
		c.IdleCPUSettle = cmp0(c.IdleCPUSettle, q.IdleCPUSettle)
	}
	c.Rounds = cmp0(c.Rounds, 5)
	c.IdleOps = cmp0(c.IdleOps, 1000)
	c.IdleGap = cmp0(c.IdleGap, 2*time.Millisecond)
	c.Serial = cmp0(c.Serial, 300*time.Millisecond)
	c.Burst = cmp0(c.Burst, 500*time.Millisecond)
	c.Workers = cmp0(c.Workers, 64)
	c.Step = cmp0(c.Step, 600*time.Millisecond)
	c.StepOps = cmp0(c.StepOps, 5000)
	if len(c.Fractions) == 0 {
		c.Fractions = []float64{0.01, 0.10, 0.25, 0.50}
	}
	if len(c.Rates) == 0 {
		c.Rates = []float64{1e3, 1e4, 1e5, 3e5}
	}
	c.InFlight = cmp0(c.InFlight, inFlightBatch)
	c.InFlightBatches = cmp0(c.InFlightBatches, 2)
	c.IdleCPUBurst = cmp0(c.IdleCPUBurst, 300*time.Millisecond)
	c.IdleCPUWait = cmp0(c.IdleCPUWait, time.Second)
	c.IdleCPUSettle = cmp0(c.IdleCPUSettle, time.Second)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// cmp0 is v, or def when v is not positive.
func cmp0[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Goals is what RunGoals measured: every target's verdict, every figure behind them, and the
// rounds with the load average around each. It and its parts are plain values, read-only once
// returned: safe to share between goroutines.
type Goals struct {
	Rounds  []GoalRound
	Targets []GoalTarget
	Figures []GoalFigure
	// Skipped maps a contender that could not run (ErrUnavailable) to why.
	Skipped map[string]string
	// Spin is the spin window the runtimes used, as LoadConfig read it.
	Spin string
	// Quick says the run was GoalsConfig.Quick: its figures prove the program, nothing else.
	Quick bool
}

// GoalRound is one round: its contender order and the load average around it.
type GoalRound struct {
	Index int
	// Order is the contenders' order in this round's measurements.
	Order []string
	// LoadBefore and LoadAfter are /proc/loadavg's 1, 5 and 15 minute figures read before and
	// right after the round; the 1-minute figure after is mostly the round itself.
	LoadBefore, LoadAfter [3]float64
	Elapsed               time.Duration
}

// GoalStatus is a target's verdict.
type GoalStatus int

const (
	// NotMeasured: a contender it needs could not run (its Reason says why). Never "met".
	NotMeasured GoalStatus = iota
	// Met: the median over the rounds satisfies the bound.
	Met
	// NotMet: the median over the rounds misses the bound.
	NotMet
)

func (s GoalStatus) String() string {
	switch s {
	case Met:
		return "met"
	case NotMet:
		return "not met"
	}
	return "not measured"
}

// GoalTarget is one latency target of the crossing and how this run fared against it.
type GoalTarget struct {
	// ID names the target in tables and in the benchmark-format lines: "idle-inline-p50".
	ID string
	// Goal numbers the target's group (1 to 5: idle round trips, the idle task handler, the open loop, serial and saturation, idle CPU).
	Goal int
	// What says what is compared: "rings idle p50 / direct serial p50".
	What string
	// AtMost is true for an upper bound (≤ Bound), false for a lower one (≥ Bound).
	AtMost bool
	Bound  float64
	// Unit is "×" for a ratio of two figures of the same round, else the unit of an absolute
	// figure ("wakes/op", "% of a core").
	Unit string
	// Value is the ratio (or figure) over the rounds that measured it.
	Value  Spread
	Status GoalStatus
	// Reason says why a target is NotMeasured, or qualifies a measured one.
	Reason string
	// Reference, for a target that holds rings' figure to a bound over another kind of
	// figure of the contender's (an idle round trip over a back-to-back one), is the
	// contender's own figure of rings' kind over the same denominator, round by round: what
	// the contender itself makes of the bound. Empty otherwise.
	Reference Spread
}

// BoundString is the bound as it reads: "≤ 1.5×".
func (t GoalTarget) BoundString() string {
	op := "≥"
	if t.AtMost {
		op = "≤"
	}
	return fmt.Sprintf("%s %s", op, formatGoalValue(t.Bound, t.Unit))
}

// GoalFigure is one raw figure: a contender's measurement in one unit, in every round.
type GoalFigure struct {
	// Name is the measurement and contender: "idle-inline/rings", "open@10%/direct".
	Name string
	// Unit is the Go benchmark unit: "p50-ns", "ops/s".
	Unit  string
	Value Spread
}

// Spread is a figure over the rounds: every round's value, and their median, min and max.
type Spread struct {
	Rounds           []float64
	Median, Min, Max float64
}

func newSpread(vs []float64) Spread {
	s := Spread{Rounds: vs}
	if len(vs) == 0 {
		return s
	}
	sorted := slices.Sorted(slices.Values(vs))
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	if n := len(sorted); n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return s
}

// The contenders the goals compare, as in LoadContenders and the round-trip suites.
const (
	goalRings    = LoadTandem
	goalDirect   = "direct"
	goalCallback = "callback"
	goalGoDirect = "go-direct"
	goalProbe    = "eventfd-pingpong-go-rust"
)

// figureKey is a figure's name and unit.
type figureKey struct{ name, unit string }

// goalRun collects one RunGoals: each round's figures by key.
type goalRun struct {
	cfg     GoalsConfig
	rounds  []map[figureKey]float64
	keys    []figureKey // in the order first recorded
	skipped map[string]string
}

// record sets a figure of the current round.
func (g *goalRun) record(name, unit string, v float64) {
	k := figureKey{name, unit}
	if !slices.Contains(g.keys, k) {
		g.keys = append(g.keys, k)
	}
	g.rounds[len(g.rounds)-1][k] = v
}

// skip notes a contender this build cannot run; it reports whether err said so.
func (g *goalRun) skip(name string, err error) bool {
	if !errors.Is(err, ErrUnavailable) && !errors.Is(err, errNeedsCgo) {
		return false
	}
	if _, ok := g.skipped[name]; !ok {
		g.skipped[name] = strings.TrimPrefix(err.Error(), ErrUnavailable.Error()+": ")
		g.cfg.Logf("%-26s skipped: %v", name, err)
	}
	return true
}

// RunGoals measures the targets of tandem's crossing (see GoalsConfig for the shape of
// the run and docs/benchmarks.md for each target) in cfg.Rounds rounds, the contenders'
// order reversed every other round, and returns each target's verdict with the figures behind
// it. A contender this build cannot run (direct and callback without cgo) is skipped and the
// targets that need it are NotMeasured. It runs one measurement at a time and must not run
// beside other measurements in the process; any error of a measurement ends it.
func RunGoals(ctx context.Context, cfg GoalsConfig) (Goals, error) {
	cfg = cfg.withDefaults()
	lc, err := LoadConfig()
	if err != nil {
		return Goals{}, err
	}
	g := &goalRun{cfg: cfg, skipped: map[string]string{}}
	out := Goals{Skipped: g.skipped, Spin: describeSpinWindow(lc.SpinWindow), Quick: cfg.Quick}
	for i := range cfg.Rounds {
		order := []string{goalRings, goalDirect, goalCallback, goalGoDirect, goalProbe}
		if i%2 == 1 {
			slices.Reverse(order)
		}
		round := GoalRound{Index: i + 1, Order: order, LoadBefore: readLoadavg()}
		cfg.Logf("round %d of %d: %s (load average %.2f)", i+1, cfg.Rounds, strings.Join(order, ", "), round.LoadBefore[0])
		g.rounds = append(g.rounds, map[figureKey]float64{})
		t0 := time.Now()
		if err := g.runRound(ctx, lc, order); err != nil {
			return out, fmt.Errorf("round %d: %w", i+1, err)
		}
		round.Elapsed, round.LoadAfter = time.Since(t0), readLoadavg()
		out.Rounds = append(out.Rounds, round)
	}
	for _, k := range g.keys {
		var vs []float64
		for _, r := range g.rounds {
			if v, ok := r[k]; ok {
				vs = append(vs, v)
			}
		}
		out.Figures = append(out.Figures, GoalFigure{Name: k.name, Unit: k.unit, Value: newSpread(vs)})
	}
	out.Targets = g.targets()
	return out, nil
}

// describeSpinWindow names a Config.SpinWindow for the report.
func describeSpinWindow(d time.Duration) string {
	switch {
	case d == 0:
		return "library default"
	case d < 0:
		return "none (park at once)"
	}
	return d.String()
}

// readLoadavg is /proc/loadavg's three averages, zero where unreadable.
func readLoadavg() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	for i, f := range strings.Fields(string(b)) {
		if i == len(l) {
			break
		}
		l[i], _ = strconv.ParseFloat(f, 64)
	}
	return l
}

// goalTargetDef is a target before it is measured: which figures make its ratio.
type goalTargetDef struct {
	id, what string
	goal     int
	atMost   bool
	bound    float64
	// tandem is rings' figure; contender, when set, the figure it is divided by (a ratio),
	// and needs names the contender whose absence makes the target NotMeasured.
	tandem, contender figureKey
	needs             string
	unit              string // when not a ratio
	reason            string
	// reference, when set, is the contender's own figure of tandem's kind: the target's
	// Reference divides it by contender, and its Reason says so as referenceWhat.
	reference     figureKey
	referenceWhat string
}

func (g *goalRun) targetDefs() []goalTargetDef {
	fig := func(name, contender, unit string) figureKey { return figureKey{name + "/" + contender, unit} }
	wakeNote := "Go→Rust and Rust→Go poller wakes, and tokio workers woken for a task"
	defs := []goalTargetDef{
		{id: "idle-inline-p50", goal: 1, what: "idle round trip, inline handler: rings p50 / direct serial p50",
			atMost: true, bound: 1.5, tandem: fig("idle-inline", goalRings, "p50-ns"), contender: fig("serial", goalDirect, "p50-ns"), needs: goalDirect,
			reference: fig("idle-inline", goalDirect, "p50-ns"), referenceWhat: "direct's own idle p50 / its serial p50"},
		{id: "idle-inline-p99", goal: 1, what: "idle round trip, inline handler: rings p99 / direct serial p99",
			atMost: true, bound: 3, tandem: fig("idle-inline", goalRings, "p99-ns"), contender: fig("serial", goalDirect, "p99-ns"), needs: goalDirect,
			reference: fig("idle-inline", goalDirect, "p99-ns"), referenceWhat: "direct's own idle p99 / its serial p99"},
		{id: "idle-task-wakes", goal: 2, what: "idle round trip, task handler: thread wakes per op",
			atMost: true, bound: 1, tandem: fig("idle-task", goalRings, "wakes/op"), unit: "wakes/op", reason: wakeNote},
		{id: "idle-task-p50", goal: 2, what: "idle round trip, task handler: rings p50 / eventfd ping-pong Go↔Rust p50",
			atMost: true, bound: 0.5, tandem: fig("idle-task", goalRings, "p50-ns"), contender: fig("idle", goalProbe, "p50-ns"), needs: goalProbe},
	}
	for _, rate := range g.openLoopRates() {
		at := "open@" + rate.label
		defs = append(defs,
			goalTargetDef{id: at + "-p99-vs-direct", goal: 3, what: "open loop at " + rate.what + ": rings p99 / direct p99",
				atMost: true, bound: 1, tandem: fig(at, goalRings, "p99-ns"), contender: fig(at, goalDirect, "p99-ns"), needs: goalDirect},
			goalTargetDef{id: at + "-p99-vs-go-direct", goal: 3, what: "open loop at " + rate.what + ": rings p99 / go-direct p99",
				atMost: true, bound: 2, tandem: fig(at, goalRings, "p99-ns"), contender: fig(at, goalGoDirect, "p99-ns"), needs: goalGoDirect})
	}
	defs = append(defs,
		goalTargetDef{id: "serial-p50", goal: 4, what: "serial round trip, inline handler, 64 B: rings p50 / direct p50",
			atMost: true, bound: 1.5, tandem: fig("serial", goalRings, "p50-ns"), contender: fig("serial", goalDirect, "p50-ns"), needs: goalDirect},
		goalTargetDef{id: "saturation", goal: 4, what: fmt.Sprintf("saturation, closed loop, %d workers: rings ops/s / direct ops/s", g.cfg.Workers),
			bound: 1, tandem: fig("saturation", goalRings, "ops/s"), contender: fig("saturation", goalDirect, "ops/s"), needs: goalDirect},
		goalTargetDef{id: "inflight-vs-direct", goal: 4, what: fmt.Sprintf("%d in-flight 1 ms handlers: rings events/s / direct events/s", g.cfg.InFlight),
			bound: 10, tandem: fig("inflight", goalRings, "events/s"), contender: fig("inflight", goalDirect, "events/s"), needs: goalDirect},
		goalTargetDef{id: "inflight-vs-callback", goal: 4, what: fmt.Sprintf("%d in-flight 1 ms handlers: rings events/s / callback events/s", g.cfg.InFlight),
			bound: 1, tandem: fig("inflight", goalRings, "events/s"), contender: fig("inflight", goalCallback, "events/s"), needs: goalCallback},
		goalTargetDef{id: "idle-cpu", goal: 5, what: fmt.Sprintf("idle CPU over %v, from %v after load stops (rings)", g.cfg.IdleCPUWait, g.cfg.IdleCPUSettle),
			atMost: true, bound: 0.1, tandem: fig("idle-cpu", goalRings, "cpu-pct"), unit: "% of a core"},
	)
	return defs
}

// targets computes every target's per-round ratios and verdict from the figures.
func (g *goalRun) targets() []GoalTarget {
	var out []GoalTarget
	for _, d := range g.targetDefs() {
		t := GoalTarget{ID: d.id, Goal: d.goal, What: d.what, AtMost: d.atMost, Bound: d.bound, Unit: d.unit, Reason: d.reason}
		if t.Unit == "" {
			t.Unit = "×"
		}
		var vs, refs []float64
		for _, r := range g.rounds {
			if d.reference != (figureKey{}) {
				if rv, cv := r[d.reference], r[d.contender]; rv > 0 && cv > 0 {
					refs = append(refs, rv/cv)
				}
			}
			tv, ok := r[d.tandem]
			if !ok {
				continue
			}
			if d.contender == (figureKey{}) {
				vs = append(vs, tv)
				continue
			}
			cv, ok := r[d.contender]
			if !ok || cv <= 0 || math.IsNaN(tv) {
				continue
			}
			vs = append(vs, tv/cv)
		}
		if len(refs) > 0 {
			t.Reference = newSpread(refs)
			t.Reason = fmt.Sprintf("%s: %s (%s)", d.referenceWhat, formatGoalValue(t.Reference.Median, "×"),
				spreadString(t.Reference))
		}
		switch {
		case len(vs) > 0:
			t.Value = newSpread(vs)
			t.Status = NotMet
			if (d.atMost && t.Value.Median <= d.bound) || (!d.atMost && t.Value.Median >= d.bound) {
				t.Status = Met
			}
		case g.skipped[d.needs] != "":
			t.Reason = d.needs + " skipped: " + g.skipped[d.needs]
		default:
			t.Reason = "no round measured both figures"
		}
		out = append(out, t)
	}
	return out
}

// formatGoalValue prints a target's value in its unit.
func formatGoalValue(v float64, unit string) string {
	switch unit {
	case "×":
		return strconv.FormatFloat(v, 'f', goalDigits(v), 64) + "×"
	case "% of a core":
		return strconv.FormatFloat(v, 'f', goalDigits(v), 64) + "% of a core"
	}
	return strconv.FormatFloat(v, 'f', goalDigits(v), 64) + " " + unit
}

// goalDigits keeps two significant digits below 1 and two decimals above.
func goalDigits(v float64) int {
	a := math.Abs(v)
	switch {
	case a == 0 || a >= 1:
		return 2
	case a >= 0.1:
		return 2
	case a >= 0.01:
		return 3
	}
	return 4
}
