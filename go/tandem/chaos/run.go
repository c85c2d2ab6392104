package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/policy"
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

// offer runs the open loop: each event is submitted at its due time, on its own goroutine,
// whatever became of the ones before it.
func (r *runner) offer(ctx context.Context) {
	rng := rand.New(rand.NewPCG(r.o.Seed, 1))
	next := r.o.Profile.arrivals(rng)
	start := r.started
	for seq := uint64(0); len(r.weights) > 0; seq++ {
		off := next()
		if off >= r.o.Duration {
			return
		}
		due := start.Add(off)
		// Sleeping for less than a timer's resolution costs more than it saves: such an
		// event goes now, and its latency still counts from its due time.
		if d := time.Until(due); d > 500*time.Microsecond {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		kind := r.pick(rng)
		tr := &r.o.Scenario.Traffic[kind]
		ev := tr.Event(rng)
		ev.ID = strconv.FormatUint(seq, 10)
		if ev.Source == "" {
			ev.Source = "/chaos"
		}
		if ev.SpecVersion == "" {
			ev.SpecVersion = "1.0"
		}
		if tr.ReplyIsData {
			ev.Data = []byte(ev.ID)
		}
		if tr.Fault != FaultNone {
			ev.Extensions = maps.Clone(ev.Extensions)
			if ev.Extensions == nil {
				ev.Extensions = map[string]string{}
			}
			ev.Extensions[FaultExtension] = string(tr.Fault)
		}
		cancelAfter := time.Duration(-1)
		if tr.Cancel > 0 && rng.Float64() < tr.Cancel {
			cancelAfter = time.Duration(rng.Int64N(int64(max(tr.CancelWithin, 1))))
		}
		r.pending.Add(1)
		r.waiting.Add(1)
		go r.fire(ev, kind, due, cancelAfter)
	}
}

func (r *runner) pick(rng *rand.Rand) int {
	x := rng.Float64() * r.total
	for i, w := range r.weights {
		if x < w {
			return i
		}
	}
	return len(r.weights) - 1
}

// fire offers one event and counts its answer.
func (r *runner) fire(ev tandem.Event, kind int, due time.Time, cancelAfter time.Duration) {
	defer r.pending.Done()
	tr, k := &r.o.Scenario.Traffic[kind], &r.kinds[kind]
	k.offered.Add(1)
	defer r.waiting.Add(-1)
	rt := r.cur.Load()
	ctx := context.Background()
	if cancelAfter >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cancelAfter)
		defer cancel()
	}
	r.offered.Add(1)
	r.secOffered.Add(1)
	if tr.Call {
		reply, err := rt.Call(ctx, &ev)
		if err == nil {
			if tr.ReplyIsData && !bytes.Equal(reply.Data(), ev.Data) {
				r.misdelivered.Add(1)
			}
			reply.Release()
		}
		// ErrAbandoned: accepted, and the caller stopped waiting; the context's error
		// alone: refused while waiting for room.
		r.answer(ev.ID, kind, err, errors.Is(err, tandem.ErrAbandoned), due)
		return
	}
	receipt, err := rt.Submit(ctx, &ev)
	if err != nil {
		r.refused(ev.ID, k, err, due)
		return
	}
	select {
	case <-receipt.Done():
	case <-r.giveUp:
		r.unsettled.Add(1)
		return
	}
	err = receipt.Wait(context.Background())
	if again := receipt.Wait(context.Background()); again != err {
		r.twice.Add(1)
	}
	r.answer(ev.ID, kind, err, false, due)
}

// refused counts a Submit's refusal: a dead letter when shed, else rejected at submit.
func (r *runner) refused(id string, k *kindCounts, err error, due time.Time) {
	if errors.Is(err, tandem.ErrShed) {
		r.dead.Add(1)
		k.dead.Add(1)
		r.noteDead(id)
		r.completed(k, due)
		return
	}
	r.rejected.Add(1)
	k.rejected.Add(1)
	r.secRejected.Add(1)
	r.observe(k, due)
	if !isRefusal(err) {
		r.noteUnclear(err)
	}
}

// answer counts a final answer (a Receipt's, or a Call's: which may also be a refusal).
// abandoned says a Call's context ended after its event was accepted.
func (r *runner) answer(id string, kind int, err error, abandoned bool, due time.Time) {
	k := &r.kinds[kind]
	var he *tandem.HandlerError
	switch {
	case err == nil:
		r.acked.Add(1)
		k.acked.Add(1)
		r.completed(k, due)
	case abandoned:
		r.abandoned.Add(1)
		k.abandoned.Add(1)
		r.mu.Lock()
		r.left = append(r.left, leftCall{id, kind})
		r.mu.Unlock()
		r.observe(k, due)
	case errors.As(err, &he):
		switch {
		case he.DeadLetter != "":
			r.dead.Add(1)
			k.dead.Add(1)
			r.noteDead(id)
		case he.Code() == envelope.CodeCancelled || he.Code() == envelope.CodeAbandoned:
			r.cancelled.Add(1)
			k.cancelled.Add(1)
		default:
			r.noteUnclear(err)
			return
		}
		r.completed(k, due)
	default:
		r.refused(id, k, err, due)
	}
}

func (r *runner) noteDead(id string) {
	r.mu.Lock()
	r.deadIDs = append(r.deadIDs, id)
	r.mu.Unlock()
}

func (r *runner) noteUnclear(err error) {
	r.unclear.Add(1)
	r.mu.Lock()
	if r.example == "" {
		r.example = fmt.Sprintf("%T: %v", err, err)
	}
	r.mu.Unlock()
}

// isRefusal says err is one of the documented reasons Submit or Call refuse an event.
func isRefusal(err error) bool {
	var tooLarge *tandem.EventTooLargeError
	return errors.Is(err, tandem.ErrClosed) || errors.Is(err, tandem.ErrOverloaded) ||
		errors.Is(err, tandem.ErrNoRoute) || errors.As(err, &tooLarge) || errors.Is(err, envelope.ErrInvalidEvent) ||
		errors.Is(err, policy.ErrCircuitOpen) || errors.Is(err, policy.ErrRateLimited) || isContextErr(err)
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (r *runner) completed(k *kindCounts, due time.Time) {
	r.secCompleted.Add(1)
	r.observe(k, due)
}

// observe records an answer's latency from its due time.
func (r *runner) observe(k *kindCounts, due time.Time) {
	v := int64(time.Since(due))
	r.histMu.Lock()
	_ = r.hist.RecordValue(v)
	_ = r.all.RecordValue(v)
	_ = k.hist.RecordValue(v)
	r.histMu.Unlock()
}

// sample takes one Second per second until stop.
func (r *runner) sample(rep *Report, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastRetried, lastDead uint64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s := r.cur.Load().Stats()
		r.mu.Lock()
		retried := r.finished.Retried + s.Retried
		r.mu.Unlock()
		dead := r.sink.Counts().Writes
		r.histMu.Lock()
		p99 := time.Duration(r.hist.ValueAtQuantile(99))
		r.hist.Reset()
		r.histMu.Unlock()
		sec := Second{
			At:          time.Since(r.started).Round(time.Second),
			Offered:     r.secOffered.Swap(0),
			Completed:   r.secCompleted.Swap(0),
			Rejected:    r.secRejected.Swap(0),
			InFlight:    max(s.InFlight, 0),
			Retries:     retried - min(lastRetried, retried),
			DeadLetters: dead - lastDead,
			P99:         p99,
		}
		lastRetried, lastDead = retried, dead
		r.mu.Lock()
		rep.Seconds = append(rep.Seconds, sec)
		r.mu.Unlock()
		r.logf("%4ds offered %5d/s completed %5d/s rejected %5d/s in flight %4d retries %4d dead letters %4d p99 %v",
			int(sec.At/time.Second), sec.Offered, sec.Completed, sec.Rejected, sec.InFlight, sec.Retries, sec.DeadLetters, sec.P99)
	}
}

func (r *runner) logf(format string, a ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, format+"\n", a...)
	}
}

// tally resolves the abandoned Calls against the sink and gathers the counts.
func (r *runner) tally() Tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := Tally{
		Offered: r.offered.Load(), Acked: r.acked.Load(), DeadLettered: r.dead.Load(),
		Rejected: r.rejected.Load(), Cancelled: r.cancelled.Load(), Abandoned: r.abandoned.Load(),
		Unsettled: r.unsettled.Load(), SettledTwice: r.twice.Load(), Misdelivered: r.misdelivered.Load(),
		Unclear: r.unclear.Load(), UnclearExample: r.example,
		Runtime: r.finished, Sink: r.sink.Counts(), SinkFailuresLogged: r.logged.Load(),
		FollowUps: r.o.Scenario.FollowUps,
	}
	kinds := make([]KindTally, len(r.kinds))
	for i := range r.kinds {
		k := &r.kinds[i]
		kinds[i] = KindTally{Name: r.o.Scenario.Traffic[i].Name, Offered: k.offered.Load(), Acked: k.acked.Load(),
			DeadLettered: k.dead.Load(), Rejected: k.rejected.Load(), Cancelled: k.cancelled.Load(), Abandoned: k.abandoned.Load(),
			P99: time.Duration(k.hist.ValueAtQuantile(99))}
	}
	for _, c := range r.left {
		if r.sink.Records(c.id) > 0 {
			t.Abandoned--
			t.DeadLettered++
			kinds[c.kind].Abandoned--
			kinds[c.kind].DeadLettered++
		}
	}
	t.Kinds = kinds
	for _, id := range r.deadIDs {
		if r.sink.Records(id) == 0 {
			t.MissingDeadLetters++
		}
	}
	return t
}

// kindCounts are the outcomes of one Traffic kind's events.
type kindCounts struct {
	offered, acked, dead, rejected, cancelled, abandoned atomic.Uint64
	hist                                                 *hdrhistogram.Histogram // guarded by runner.histMu
}

// leftCall is a Call abandoned by its caller: its event's ID and Traffic kind.
type leftCall struct {
	id   string
	kind int
}

// settleGoroutines waits up to grace for the goroutine count to come back to before, and
// returns the count, with a dump of every goroutine when it did not.
func settleGoroutines(before int, grace time.Duration) (int, string) {
	deadline := time.Now().Add(grace)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return n, ""
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			return n, b.String()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sinkFailureCounter is a zap core that counts the runtime's log lines saying a dead letter
// could not be written to the sink (each carries the record, so nothing is lost silently).
type sinkFailureCounter struct{ n *atomic.Uint64 }

func (c *sinkFailureCounter) Enabled(l zapcore.Level) bool      { return l >= zapcore.ErrorLevel }
func (c *sinkFailureCounter) With([]zapcore.Field) zapcore.Core { return c }
func (c *sinkFailureCounter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) && strings.Contains(e.Message, "dead-letter sink failed") {
		return ce.AddCore(e, c)
	}
	return ce
}
func (c *sinkFailureCounter) Write(zapcore.Entry, []zapcore.Field) error {
	c.n.Add(1)
	return nil
}
func (c *sinkFailureCounter) Sync() error { return nil }

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Minute), 3)
}
