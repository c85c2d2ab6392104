package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tandemrt/tandem/go/tandem"
)

// The measurements of one goals round. Each contender runs alone, on a runtime of its own
// started for the measurement and stopped after it.

// goalRate is one open-loop rate of the goals: a fraction of rings' saturation in the same
// round, or an absolute rate.
type goalRate struct {
	label, what string
	fraction    float64 // of rings' saturation; 0 for an absolute rate
	rate        float64 // ops/s, for an absolute rate
}

func (g *goalRun) openLoopRates() []goalRate {
	var out []goalRate
	for _, f := range g.cfg.Fractions {
		out = append(out, goalRate{label: fmt.Sprintf("%g%%", 100*f),
			what: fmt.Sprintf("%g%% of rings' saturation", 100*f), fraction: f})
	}
	for _, r := range g.cfg.Rates {
		out = append(out, goalRate{label: rateLabel(r), what: rateLabel(r) + "/s", rate: r})
	}
	return out
}

// rateLabel names an absolute rate in a figure's name: 1k, 300k, 1.5M.
func rateLabel(r float64) string {
	switch {
	case r >= 1e6:
		return fmt.Sprintf("%gM", r/1e6)
	case r >= 1e3:
		return fmt.Sprintf("%gk", r/1e3)
	}
	return fmt.Sprintf("%g", r)
}

// inOrder is names in the order of the round's contenders.
func inOrder(order []string, names ...string) []string {
	slices.SortStableFunc(names, func(a, b string) int { return slices.Index(order, a) - slices.Index(order, b) })
	return names
}

// runRound runs every measurement of one round, each with its contenders in order.
func (g *goalRun) runRound(ctx context.Context, cfg tandem.Config, order []string) error {
	steps := []func() error{
		// Goals 1, 2 and 4: round trips, idle and back to back.
		func() error {
			for _, c := range inOrder(order, goalRings, goalDirect, goalProbe) {
				if err := g.roundTrips(ctx, cfg, c); err != nil {
					return fmt.Errorf("round trips, %s: %w", c, err)
				}
			}
			return nil
		},
		// Goals 3 and 4: saturation, then the open loop at rates derived from rings' own.
		func() error {
			loaders := map[string]LoadContender{goalRings: RingsLoad, goalDirect: DirectLoad, goalGoDirect: GoDirectLoad}
			open := inOrder(order, goalRings, goalDirect, goalGoDirect)
			for _, c := range open {
				if err := g.saturation(ctx, c, loaders[c]); err != nil {
					return fmt.Errorf("saturation, %s: %w", c, err)
				}
			}
			ringsSat := g.rounds[len(g.rounds)-1][figureKey{"saturation/" + goalRings, "ops/s"}]
			for _, c := range open {
				if err := g.openLoop(ctx, c, loaders[c], ringsSat); err != nil {
					return fmt.Errorf("open loop, %s: %w", c, err)
				}
			}
			return nil
		},
		// Goal 4: many slow handlers in flight at once.
		func() error {
			starts := map[string]func(tandem.Config) (*session, error){goalRings: startRings, goalDirect: startDirect, goalCallback: startCallback}
			for _, c := range inOrder(order, goalRings, goalDirect, goalCallback) {
				if err := g.inFlight(ctx, cfg, c, starts[c]); err != nil {
					return fmt.Errorf("in flight, %s: %w", c, err)
				}
			}
			return nil
		},
		// Goal 5: what rings costs once load stops.
		func() error {
			res, err := MeasureIdleCPU(goalRings, RingsLoad, g.cfg.Workers, g.cfg.IdleCPUBurst, g.cfg.IdleCPUSettle, g.cfg.IdleCPUWait)
			if err != nil {
				return fmt.Errorf("idle CPU: %w", err)
			}
			g.record("idle-cpu/"+goalRings, "cpu-pct", 100*res.Cores())
			g.cfg.Logf("%-26s %.3f%% of a core over %v", "idle-cpu/"+goalRings, 100*res.Cores(), res.Idle.Round(time.Millisecond))
			return nil
		},
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// recordLatency records a histogram's p50 and p99 under name and logs them.
func (g *goalRun) recordLatency(name string, h *hdrhistogram.Histogram, extra string) {
	p50, p99 := h.ValueAtQuantile(50), h.ValueAtQuantile(99)
	g.record(name, "p50-ns", float64(p50))
	g.record(name, "p99-ns", float64(p99))
	g.cfg.Logf("%-26s p50 %-9v p99 %-9v %s", name, time.Duration(p50), time.Duration(p99), extra)
}

// roundTrips measures contender c's round trips: for rings, idle with an inline and with a
// task handler (counting thread wakes) and back to back with the inline one; for direct,
// back to back; for the wake probe, idle.
func (g *goalRun) roundTrips(ctx context.Context, cfg tandem.Config, c string) error {
	gap := max(g.cfg.IdleGap, 4*cfg.SpinWindow)
	switch c {
	case goalRings:
		rt, stop, err := startLoadRuntime(cfg)
		if err != nil {
			return err
		}
		err = g.ringsRoundTrips(ctx, rt, gap)
		if serr := stop(); err == nil {
			err = serr
		}
		return err
	case goalDirect:
		op, stop, err := DirectLoad()
		if g.skip(c, err) {
			return nil
		}
		if err != nil {
			return err
		}
		h, rate, err := serialRun(ctx, op, g.cfg.Serial)
		// Not a target's divisor: the same direct call after the same quiet gap as the rings'
		// idle round trip, so the report shows what a cold cache costs any crossing.
		var idle *hdrhistogram.Histogram
		if err == nil {
			idle, err = idleRun(ctx, op, g.cfg.IdleOps, gap)
		}
		if serr := stop(); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		g.record("serial/"+c, "ops/s", rate)
		g.recordLatency("serial/"+c, h, "")
		g.recordLatency("idle-inline/"+c, idle, "")
		return nil
	case goalProbe:
		n, err := newNativeRuntime(cfg)
		if g.skip(c, err) {
			return nil
		}
		if err != nil {
			return err
		}
		samples, err := n.wakeProbe(g.cfg.IdleOps, gap)
		if cerr := n.close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		h := newLoadHist()
		for _, d := range samples {
			loadRecord(h, int64(d))
		}
		g.recordLatency("idle/"+c, h, "")
		return nil
	}
	return fmt.Errorf("no round trips for %q", c)
}

func (g *goalRun) ringsRoundTrips(ctx context.Context, rt *tandem.Runtime, gap time.Duration) error {
	callOp := func(typ string) LoadOp {
		ev := loadEvent(typ)
		return func(ctx context.Context) error {
			reply, err := rt.Call(ctx, ev)
			if err != nil {
				return err
			}
			reply.Release()
			return nil
		}
	}
	for _, m := range []struct{ name, typ string }{{"idle-inline", loadInlineType}, {"idle-task", noopTaskType}} {
		op := callOp(m.typ)
		if err := op(ctx); err != nil { // the first op pays for cold caches
			return err
		}
		before := rt.Stats()
		h, err := idleRun(ctx, op, g.cfg.IdleOps, gap)
		if err != nil {
			return err
		}
		after := rt.Stats()
		n := float64(g.cfg.IdleOps)
		rust := float64(after.RustWakeups-before.RustWakeups) / n
		goW := float64(after.Rust.GoWakeups-before.Rust.GoWakeups) / n
		task := float64(after.Rust.TaskWakes-before.Rust.TaskWakes) / n
		name := m.name + "/" + goalRings
		g.record(name, "rust-wakes/op", rust)
		g.record(name, "go-wakes/op", goW)
		g.record(name, "task-wakes/op", task)
		g.record(name, "wakes/op", rust+goW+task)
		g.recordLatency(name, h, fmt.Sprintf("wakes/op %.2f (Go→Rust %.2f, Rust→Go %.2f, tokio tasks %.2f)", rust+goW+task, rust, goW, task))
	}
	h, rate, err := serialRun(ctx, callOp(loadInlineType), g.cfg.Serial)
	if err != nil {
		return err
	}
	g.record("serial/"+goalRings, "ops/s", rate)
	g.recordLatency("serial/"+goalRings, h, "")
	return nil
}

// noopTaskType is the demo no-op handler registered as a task per event.
const noopTaskType = "demo.noop"

// idleRun times ops of op, each after gap of quiet, so that both sides have parked.
func idleRun(ctx context.Context, op LoadOp, ops int, gap time.Duration) (*hdrhistogram.Histogram, error) {
	h := newLoadHist()
	for range ops {
		time.Sleep(gap)
		t0 := time.Now()
		if err := op(ctx); err != nil {
			return nil, err
		}
		loadRecord(h, int64(time.Since(t0)))
	}
	return h, ctx.Err()
}

// serialRun times op back to back from one goroutine for dur, after a warm-up of a tenth of
// it, and returns the latencies and the ops per second.
func serialRun(ctx context.Context, op LoadOp, dur time.Duration) (*hdrhistogram.Histogram, float64, error) {
	for t0 := time.Now(); time.Since(t0) < dur/10; {
		if err := op(ctx); err != nil {
			return nil, 0, err
		}
	}
	h := newLoadHist()
	start := time.Now()
	ops := 0
	for time.Since(start) < dur {
		t0 := time.Now()
		if err := op(ctx); err != nil {
			return nil, 0, err
		}
		loadRecord(h, int64(time.Since(t0)))
		ops++
	}
	return h, float64(ops) / time.Since(start).Seconds(), ctx.Err()
}

// saturation measures contender c's closed-loop throughput from Workers goroutines, as the
// open loop's burst does.
func (g *goalRun) saturation(ctx context.Context, c string, load LoadContender) error {
	err := withContender(load, func(op LoadOp) error {
		b, err := loadClosedLoop(ctx, op, g.cfg.Workers, g.cfg.Burst/5, g.cfg.Burst)
		if err != nil {
			return err
		}
		if b.rate() <= 0 {
			return errors.New("the burst completed no op")
		}
		g.record("saturation/"+c, "ops/s", b.rate())
		g.cfg.Logf("%-26s %s ops/s", "saturation/"+c, FormatRate(b.rate()))
		return nil
	})
	if g.skip(c, err) {
		return nil
	}
	return err
}

// openLoop offers contender c every goal rate, open loop, after a short warm-up; fractions
// are of ringsSat, rings' saturation in the same round.
func (g *goalRun) openLoop(ctx context.Context, c string, load LoadContender, ringsSat float64) error {
	if ringsSat <= 0 {
		return errors.New("no saturation of rings to take fractions of")
	}
	err := withContender(load, func(op LoadOp) error {
		if _, err := loadClosedLoop(ctx, op, g.cfg.Workers, 0, g.cfg.Burst/5); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		hs := newLoadHists(g.cfg.Workers)
		for _, rate := range g.openLoopRates() {
			offered := rate.rate
			if rate.fraction > 0 {
				offered = rate.fraction * ringsSat
			}
			step := max(g.cfg.Step, time.Duration(float64(g.cfg.StepOps)/offered*float64(time.Second)))
			r := openLoopRun(ctx, op, offered, step, hs)
			if r.Errors > 0 {
				return fmt.Errorf("%s/s offered: %d of %d ops failed, first: %s", FormatRate(offered), r.Errors, r.Ops, r.FirstErr)
			}
			name := "open@" + rate.label + "/" + c
			g.record(name, "offered-ops/s", r.Offered)
			g.record(name, "achieved-ops/s", r.Achieved)
			g.record(name, "p50-ns", float64(r.P50))
			g.record(name, "p99-ns", float64(r.P99))
			g.cfg.Logf("%-26s offered %7s achieved %7s ops/s  p50 %-9v p99 %v", name,
				FormatRate(r.Offered), FormatRate(r.Achieved), r.P50, r.P99)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if g.skip(c, err) {
		return nil
	}
	return err
}

// inFlight starts InFlight demo.sleep events (1 ms each) at once, one goroutine each, and
// waits for all; it times InFlightBatches such batches after an untimed one. direct holds an
// OS thread per event in flight, so the thread limit is raised around it and its idle
// threads are ended after it.
func (g *goalRun) inFlight(ctx context.Context, cfg tandem.Config, c string, start func(tandem.Config) (*session, error)) error {
	cfg.MaxInFlight = 16384
	cfg.MaxEventSize, cfg.MaxReplySize = inFlightBuf, inFlightBuf
	baseline, err := osThreadCount()
	if err != nil {
		return err
	}
	if c == goalDirect {
		limit := debug.SetMaxThreads(2*g.cfg.InFlight + 1000)
		defer debug.SetMaxThreads(limit)
		defer func() {
			if _, err := reapIdleThreads(baseline + 8); err != nil {
				g.cfg.Logf("ending idle threads after direct: %v", err)
			}
		}()
	}
	s, err := start(cfg)
	if g.skip(c, err) {
		return nil
	}
	if err != nil {
		return err
	}
	err = g.inFlightBatches(ctx, s, c)
	if cerr := s.close(); err == nil {
		err = cerr
	}
	return err
}

func (g *goalRun) inFlightBatches(ctx context.Context, s *session, c string) error {
	ev := loadSleepEvent(1)
	calls := make([]caller, g.cfg.InFlight)
	for i := range calls {
		calls[i] = s.newCaller(noReply, inFlightBuf, true)
	}
	latencies := make([]time.Duration, len(calls))
	h := newLoadHist()
	var elapsed time.Duration
	for batch := range g.cfg.InFlightBatches + 1 {
		var (
			wg   sync.WaitGroup
			fail firstFailure
		)
		t0 := time.Now()
		for i, call := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.Now()
				fail.set(call(ev))
				latencies[i] = time.Since(t)
			}()
		}
		wg.Wait()
		if err := fail.get(); err != nil {
			return err
		}
		if batch == 0 {
			continue // untimed: it starts the threads, pools and timers the others reuse
		}
		elapsed += time.Since(t0)
		for _, d := range latencies {
			loadRecord(h, int64(d))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	rate := float64(g.cfg.InFlight*g.cfg.InFlightBatches) / elapsed.Seconds()
	g.record("inflight/"+c, "events/s", rate)
	g.recordLatency("inflight/"+c, h, FormatRate(rate)+" events/s")
	return nil
}
