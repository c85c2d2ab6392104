package chaos

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tandemrt/tandem/go/tandem"
)

// Options configure a run. The zero value of each field takes the default it names. Run
// reads Options and keeps no reference to them once it returns.
type Options struct {
	// Scenario is what the run exercises (default Builtin(AllFaults())).
	Scenario Scenario
	// Profile says when events are due (default Steady(100)).
	Profile Profile
	// Duration is how long events are offered (default 10s); the run then waits for their
	// answers (Drain), shuts down and checks.
	Duration time.Duration
	// Config configures every runtime of the run. Its DeadLetters (nil: a
	// deadletter.MemorySink) is wrapped in the run's FaultySink, and its Logger (nil: none)
	// teed with a counter of the sink failures the runtime logs.
	Config tandem.Config
	// Sink makes the dead-letter sink fail or stall.
	Sink SinkFaults
	// RestartEvery shuts the runtime down mid-flight this often and starts a new one with
	// the scenario's routes (0: one runtime for the whole run).
	RestartEvery time.Duration
	// RestartGrace is how long such a Shutdown lets in-flight events finish before
	// cancelling them (default 10ms).
	RestartGrace time.Duration
	// Drain is how long the run waits for the last answers before its final Shutdown, and
	// that Shutdown's deadline (default 10s).
	Drain time.Duration
	// LeakGrace is how long the goroutine count may take to come back down (default 5s).
	LeakGrace time.Duration
	// Seed seeds every random choice of the run (0: a fixed default).
	Seed uint64
	// Log receives one line per second (offered and completed rates, in flight, retries,
	// dead letters, p99) and the restarts (nil: none).
	Log io.Writer
}

// Run offers o.Scenario's traffic along o.Profile for o.Duration, with o's faults, then
// shuts down and checks the invariants. It returns the Report, whose Err names every broken
// invariant; Run's own error says the run could not be made (a runtime failed to start),
// with the report so far. ctx ends the offering early. Run must not run concurrently with
// another Run in the process: it counts the process's goroutines.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	r := &runner{o: o, giveUp: make(chan struct{}), hist: newHist(), all: newHist()}
	r.sink = NewFaultySink(o.Config.DeadLetters, o.Sink, o.Seed)
	r.weights = make([]float64, len(o.Scenario.Traffic))
	r.kinds = make([]kindCounts, len(o.Scenario.Traffic))
	for i := range r.kinds {
		r.kinds[i].hist = newHist()
	}
	for i, t := range o.Scenario.Traffic {
		r.total += t.Weight
		r.weights[i] = r.total
	}
	rep := &Report{Scenario: o.Scenario.Name, Profile: o.Profile.Name(), Duration: o.Duration}
	before := runtime.NumGoroutine()

	rt, err := r.start()
	if err != nil {
		return rep, err
	}
	r.cur.Store(rt)
	start := time.Now()
	r.started = start
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		r.sample(rep, stopSampler)
	}()
	offerCtx, stopOffering := context.WithTimeout(ctx, o.Duration)
	defer stopOffering()
	restartErr := make(chan error, 1)
	var restarts sync.WaitGroup
	if o.RestartEvery > 0 {
		restarts.Add(1)
		go func() {
			defer restarts.Done()
			err := r.restartLoop(offerCtx, rep)
			if err != nil {
				stopOffering() // no runtime to offer to
			}
			restartErr <- err
		}()
	}
	r.offer(offerCtx)
	stopOffering()
	restarts.Wait()
	var runErr error
	if o.RestartEvery > 0 {
		runErr = <-restartErr
	}

	// Let the last answers come, then shut down for good.
	deadline := time.Now().Add(o.Drain)
	for r.waiting.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !r.curStopped.Load() {
		r.stop(r.cur.Load(), o.Drain)
	}
	// An answer still missing now will not come: Shutdown settles every event.
	waited := make(chan struct{})
	go func() { r.pending.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(2 * time.Second):
		close(r.giveUp)
		<-waited
	}
	close(stopSampler)
	<-samplerDone

	rep.Tally = r.tally()
	rep.Tally.GoroutinesBefore = before
	rep.Tally.GoroutinesAfter, rep.Goroutines = settleGoroutines(before, o.LeakGrace)
	rep.Latency = latencyOf(r.all)
	rep.Elapsed = time.Since(start)
	rep.Invariants = Check(rep.Tally)
	return rep, runErr
}

func (o *Options) defaults() {
	if o.Scenario.Setup == nil && o.Scenario.Traffic == nil {
		o.Scenario = Builtin(AllFaults())
	}
	if o.Profile.rate == nil && o.Profile.trace == nil && o.Profile.cycle == nil {
		o.Profile = Steady(100)
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.RestartGrace <= 0 {
		o.RestartGrace = 10 * time.Millisecond
	}
	if o.Drain <= 0 {
		o.Drain = 10 * time.Second
	}
	if o.LeakGrace <= 0 {
		o.LeakGrace = 5 * time.Second
	}
	if o.Seed == 0 {
		o.Seed = 0x7a_6e_64_65_6d
	}
}

// runner is one run's state. Its counters are atomics: the event goroutines update them.
type runner struct {
	o      Options
	sink   *FaultySink
	logged atomic.Uint64 // sink failures the runtime logged
	cur    atomic.Pointer[tandem.Runtime]
	// curStopped: cur was shut down and no new runtime replaced it (a restart failed).
	curStopped atomic.Bool
	weights    []float64
	total      float64
	started    time.Time

	mu       sync.Mutex
	finished RuntimeCounts // summed over the runtimes already shut down
	deadIDs  []string      // events answered as dead letters
	left     []leftCall    // abandoned Calls
	example  string

	offered, acked, dead, rejected, cancelled, abandoned atomic.Uint64
	unclear, twice, misdelivered, unsettled              atomic.Uint64
	waiting                                              atomic.Int64 // events waiting for an answer

	kinds []kindCounts // by Traffic index

	pending sync.WaitGroup
	giveUp  chan struct{}

	// The current second's counts, swapped out by the sampler.
	secOffered, secCompleted, secRejected atomic.Uint64
	histMu                                sync.Mutex
	hist, all                             *hdrhistogram.Histogram
}

// start makes, sets up and starts one runtime.
func (r *runner) start() (*tandem.Runtime, error) {
	cfg := r.o.Config
	cfg.DeadLetters = r.sink
	counter := &sinkFailureCounter{n: &r.logged}
	if cfg.Logger == nil {
		cfg.Logger = zap.New(counter)
	} else {
		cfg.Logger = cfg.Logger.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return zapcore.NewTee(c, counter) }))
	}
	rt, err := tandem.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("chaos: new runtime: %w", err)
	}
	if r.o.Scenario.Setup != nil {
		if err := r.o.Scenario.Setup(rt); err != nil {
			_ = rt.Shutdown(context.Background())
			return nil, fmt.Errorf("chaos: scenario %q setup: %w", r.o.Scenario.Name, err)
		}
	}
	if err := rt.Start(); err != nil {
		_ = rt.Shutdown(context.Background())
		return nil, fmt.Errorf("chaos: start: %w", err)
	}
	return rt, nil
}

// stop shuts rt down with grace for in-flight events, adds its final counts, and returns
// how long Shutdown took.
func (r *runner) stop(rt *tandem.Runtime, grace time.Duration) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	began := time.Now()
	// Shutdown's error says events were cancelled, which is what a mid-flight stop is for;
	// their answers are counted where they arrive.
	_ = rt.Shutdown(ctx)
	took := time.Since(began)
	s := rt.Stats()
	r.mu.Lock()
	defer r.mu.Unlock()
	f := &r.finished
	f.Submitted += s.Submitted
	f.DeadLettered += s.DeadLettered
	f.Cancelled += s.Cancelled
	f.Retried += s.Retried
	f.RequestsHeld += s.Rust.RequestsHeld
	f.RepliesLent += s.Rust.RepliesLent
	f.RepliesHeld += uint64(max(s.RepliesHeld, 0))
	f.InFlight += s.InFlight
	f.Violations += s.Violations
	f.RustViolations += s.Rust.Violations
	return took
}

// restartLoop shuts the runtime down mid-flight every RestartEvery and starts a new one,
// until ctx ends.
func (r *runner) restartLoop(ctx context.Context, rep *Report) error {
	t := time.NewTicker(r.o.RestartEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if ctx.Err() != nil {
			return nil // a tick due as the offering ends: the run is over
		}
		old := r.cur.Load()
		at := time.Since(r.started)
		// Events offered meanwhile meet the old runtime, draining: ErrClosed.
		took := r.stop(old, r.o.RestartGrace)
		r.curStopped.Store(true)
		rt, err := r.start()
		if err != nil {
			return err
		}
		r.cur.Store(rt)
		r.curStopped.Store(false)
		r.mu.Lock()
		rep.Restarts++
		rep.RestartsAt = append(rep.RestartsAt, at)
		r.mu.Unlock()
		r.logf("restart %d at %v: Shutdown with %v of grace took %v, then a new runtime", rep.Restarts,
			at.Round(time.Millisecond), r.o.RestartGrace, took.Round(time.Millisecond))
	}
}
