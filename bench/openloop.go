package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// LoadOp is one round trip of a contender: hand one event over, wait for its outcome, give back
// whatever it holds. It must be safe for concurrent use; ctx ends when the harness gives up.
type LoadOp func(ctx context.Context) error

// LoadContender sets up one way of doing a round trip. It returns the op and stop, which tears
// down whatever the contender started once the op is no longer called.
type LoadContender func() (op LoadOp, stop func() error, err error)

// LoadContenders are the contenders the open-loop sweep and the resource measurements
// run, by name. A contender joins with one line here.
var LoadContenders = map[string]LoadContender{
	"rings":    RingsLoad,    // tandem: rt.Call over the shared rings, inline no-op handler
	"direct":   DirectLoad,   // one cgo call per event that block_on's the handler
	"callback": CallbackLoad, // one cgo call that spawns on tokio, answered by a C → Go callback
	"sidecar":  SidecarLoad,  // a Rust process of its own over a Unix socket, CBOR frames
	// The no-op handler written in Go (the ceiling of staying in Go):
	"go-pool":   GoPoolLoad,   // behind tandem's Go route (rt.Handle, a goroutine pool), via rt.Call
	"go-direct": GoDirectLoad, // encoded, decoded and run on the calling goroutine
}

// ErrUnavailable marks a contender this build or machine cannot run (the callback contender
// without cgo, the sidecar without its binary): sweeps skip it and say why.
var ErrUnavailable = errors.New("contender unavailable")

// LoadTandem names the contender the others are compared against.
const LoadTandem = "rings"

const (
	// loadInlineType is the demo library's no-op handler registered inline (run on the Rust
	// poller until its first await): the cheapest handler, so the crossing is what is measured.
	loadInlineType = "demo.noop.inline"
	// loadSleepType waits on a tokio timer for its sleep_ms extension, then acks.
	loadSleepType    = "demo.sleep"
	loadPayloadSize  = 64
	loadSpinEnv      = "TANDEM_BENCH_SPIN"
	loadLatencyMax   = int64(10 * time.Second)
	loadLatencyDigit = 3
)

// loadEvent is the event every load op sends: typ with a 64 B payload.
func loadEvent(typ string) *tandem.Event {
	data := make([]byte, loadPayloadSize)
	for i := range data {
		data[i] = byte(i)
	}
	return &tandem.Event{ID: "load-1", Source: "/bench/load", Type: typ, Data: data}
}

// LoadConfig is the runtime configuration of the load contenders: the library defaults, with
// the spin window from TANDEM_BENCH_SPIN (a Go duration; 0 parks at once) when it is set.
func LoadConfig() (tandem.Config, error) {
	var cfg tandem.Config
	if s, ok := os.LookupEnv(loadSpinEnv); ok && s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return cfg, fmt.Errorf("%s=%q: want a duration >= 0 such as 50us", loadSpinEnv, s)
		}
		if d == 0 {
			d = -1 // Config reads 0 as "the default"; negative is its "park at once"
		}
		cfg.SpinWindow = d
	}
	return cfg, nil
}

// startLoadRuntime starts a runtime with cfg and returns it with its stop function, which
// shuts it down and fails if either side counted an ownership violation.
func startLoadRuntime(cfg tandem.Config) (*tandem.Runtime, func() error, error) {
	rt, err := tandem.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("tandem.New: %w", err)
	}
	if err := rt.Start(); err != nil {
		return nil, nil, fmt.Errorf("Start: %w", err)
	}
	stop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			return fmt.Errorf("Shutdown: %w", err)
		}
		if s := rt.Stats(); s.Violations != 0 || s.Rust.Violations != 0 {
			return fmt.Errorf("ownership violations: go %d, rust %d", s.Violations, s.Rust.Violations)
		}
		return nil
	}
	return rt, stop, nil
}

// RingsLoad is tandem's own path: rt.Call to demo.noop.inline over the shared rings,
// then the reply's Release.
func RingsLoad() (LoadOp, func() error, error) {
	cfg, err := LoadConfig()
	if err != nil {
		return nil, nil, err
	}
	rt, stop, err := startLoadRuntime(cfg)
	if err != nil {
		return nil, nil, err
	}
	ev := loadEvent(loadInlineType)
	return func(ctx context.Context) error {
		reply, err := rt.Call(ctx, ev)
		if err != nil {
			return err
		}
		reply.Release()
		return nil
	}, stop, nil
}

// loadDirectBufs are the direct and callback contenders' envelope and reply buffers, one per
// op in flight.
var loadDirectBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// DirectLoad is one cgo call per event (tandem_bench_invoke) that block_on's the same
// handler on tokio from the calling thread. The event is encoded per op, as every other
// contender encodes it.
func DirectLoad() (LoadOp, func() error, error) {
	cfg, err := LoadConfig()
	if err != nil {
		return nil, nil, err
	}
	n, err := newNativeRuntime(cfg)
	if errors.Is(err, errNeedsCgo) {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err != nil {
		return nil, nil, err
	}
	ev := loadEvent(loadInlineType)
	return func(context.Context) error {
		buf := loadDirectBufs.Get().(*[]byte)
		err := directOp(n, ev, buf)
		loadDirectBufs.Put(buf)
		return err
	}, n.close, nil
}

// directOp encodes ev into buf and runs its handler with one tandem_bench_invoke, the reply
// going to buf's spare capacity.
func directOp(n *nativeRuntime, ev *tandem.Event, buf *[]byte) error {
	env, err := envelope.AppendEvent((*buf)[:0], ev)
	if err != nil {
		return err
	}
	*buf = env[:0]
	_, err = n.invoke(env, env[len(env):])
	return err
}

// CallbackLoad is one cgo call per event that spawns the handler as a tokio task and
// returns; a tokio worker calls back into Go with the outcome. The event is encoded per op,
// as every other contender encodes it.
func CallbackLoad() (LoadOp, func() error, error) {
	cfg, err := LoadConfig()
	if err != nil {
		return nil, nil, err
	}
	c, err := newNativeRuntime(cfg)
	if errors.Is(err, errNeedsCgo) {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err != nil {
		return nil, nil, err
	}
	ev := loadEvent(loadInlineType)
	return func(context.Context) error {
		buf := loadDirectBufs.Get().(*[]byte)
		env, err := envelope.AppendEvent((*buf)[:0], ev)
		if err == nil {
			_, err = c.spawnCall(env, env[len(env):])
		}
		loadDirectBufs.Put(buf)
		return err
	}, c.close, nil
}

// GoPoolLoad is the no-op handler written in Go behind tandem's own Go route (rt.Handle, its
// goroutine pool), called with rt.Call: the caller encodes the event's envelope as the
// carrier's data and the route's handler decodes it, as the Rust side would (the go-pool
// contender of the round-trip suites).
func GoPoolLoad() (LoadOp, func() error, error) { return sessionLoad(startGoPool) }

// GoDirectLoad encodes the event, decodes it and runs the no-op handler written in Go on the
// calling goroutine: no runtime, no hand-off (the go-direct contender of the round-trip
// suites).
func GoDirectLoad() (LoadOp, func() error, error) { return sessionLoad(startGoDirect) }

// sessionLoad makes a round-trip suite's contender an open-loop one on the load event. A
// session's callers are one per goroutine, so the op takes one from a pool for each call.
func sessionLoad(start func(tandem.Config) (*session, error)) (LoadOp, func() error, error) {
	cfg, err := LoadConfig()
	if err != nil {
		return nil, nil, err
	}
	s, err := start(cfg)
	if errors.Is(err, errNeedsCgo) {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err != nil {
		return nil, nil, err
	}
	ev := loadEvent(loadInlineType)
	bufSize := envelope.EncodedEventSize(ev) + loadPayloadSize
	callers := sync.Pool{New: func() any { return s.newCaller(noReply, bufSize, false) }}
	return func(context.Context) error {
		call := callers.Get().(caller)
		err := call(ev)
		callers.Put(call)
		return err
	}, s.close, nil
}

// noReply is the check of an op whose handler acks without a reply.
func noReply(reply []byte) error {
	if len(reply) != 0 {
		return fmt.Errorf("a reply of %d bytes from a handler that sends none", len(reply))
	}
	return nil
}

// SidecarLoad is a tandem-sidecar process (tandem's demo handlers behind a Unix socket,
// u32 length-prefixed CBOR frames) with a pool of connections, pipelined.
func SidecarLoad() (LoadOp, func() error, error) {
	sc, stop, err := startSidecarTemp(2, 4)
	if err != nil {
		return nil, nil, err
	}
	ev := loadEvent(loadInlineType)
	return func(context.Context) error {
		outcome, _, err := sc.Call(ev)
		if err == nil && outcome != 0 {
			err = fmt.Errorf("sidecar: outcome %d", outcome)
		}
		return err
	}, stop, nil
}

// OpenLoopConfig shapes a sweep. Zero fields take the defaults.
type OpenLoopConfig struct {
	// Fractions of the measured saturation to offer, in order (default 10%, 25%, 50%, 75%, 90%).
	Fractions []float64
	// Step is how long each rate is offered (default 1s).
	Step time.Duration
	// Burst is the closed-loop burst that measures saturation (default 500ms, after a
	// warm-up of a fifth of it).
	Burst time.Duration
	// Workers bounds the ops in flight, in the burst and in the open loop (default 64).
	Workers int
	// Logf, if set, receives a line per step.
	Logf func(format string, args ...any)
}

func (c OpenLoopConfig) withDefaults() OpenLoopConfig {
	if len(c.Fractions) == 0 {
		c.Fractions = []float64{0.10, 0.25, 0.50, 0.75, 0.90}
	}
	if c.Step <= 0 {
		c.Step = time.Second
	}
	if c.Burst <= 0 {
		c.Burst = 500 * time.Millisecond
	}
	if c.Workers <= 0 {
		c.Workers = 64
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// Sweep is one contender's open-loop run: its closed-loop saturation, then one RateRun per
// offered rate.
type Sweep struct {
	Contender string
	// Saturation is the throughput, in ops/s, of a closed-loop burst from Workers goroutines.
	Saturation float64
	Workers    int
	Runs       []RateRun
	// Skipped says why the contender did not run (ErrUnavailable), or is empty.
	Skipped string
}

// RateRun is one offered rate. Latencies are from each op's intended start (t0 + i/rate),
// so time an op spent waiting for the generator or for a free worker counts: coordinated
// omission is corrected by construction. Corrected* are the cross-check: each op's service
// time (from when a worker actually started it) recorded with HdrHistogram's
// RecordCorrectedValue, which back-fills the ops a stalled issuer would have sent.
type RateRun struct {
	Fraction float64
	Offered  float64 // ops/s asked for
	Achieved float64 // ops completed / (last completion − t0)
	Ops      int     // ops completed (including failed ones)
	Errors   int
	FirstErr string
	// Unissued counts scheduled ops never started because the run hit its time cap.
	Unissued int

	P50, P99, P999, Max time.Duration
	// CorrectedP50, CorrectedP99, CorrectedP999 come from the RecordCorrectedValue cross-check.
	CorrectedP50, CorrectedP99, CorrectedP999 time.Duration
	// StartLateP99 is how late the 99th percentile op started against its schedule: the
	// generator's own precision at low rates, waiting for a free worker near saturation.
	StartLateP99 time.Duration
}

// RunOpenLoopAll runs a sweep of every contender in cs, one at a time, in name order.
func RunOpenLoopAll(ctx context.Context, cs map[string]LoadContender, cfg OpenLoopConfig) ([]Sweep, error) {
	var out []Sweep
	for _, name := range slices.Sorted(maps.Keys(cs)) {
		s, err := RunOpenLoop(ctx, name, cs[name], cfg)
		if errors.Is(err, ErrUnavailable) {
			s.Skipped = err.Error()
			out = append(out, s)
			continue
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// RunOpenLoop starts contender c, measures its saturation with a closed-loop burst, then
// offers each fraction of it for cfg.Step, and stops c.
func RunOpenLoop(ctx context.Context, name string, c LoadContender, cfg OpenLoopConfig) (s Sweep, err error) {
	cfg = cfg.withDefaults()
	s = Sweep{Contender: name, Workers: cfg.Workers}
	err = withContender(c, func(op LoadOp) error { return sweepFractions(ctx, name, op, cfg, &s) })
	return s, err
}

// withContender starts c, runs f with its op, and stops it: f's error first, else stop's.
func withContender(c LoadContender, f func(LoadOp) error) (err error) {
	op, stop, err := c()
	if err != nil {
		return err
	}
	defer func() {
		if serr := stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	return f(op)
}

// sweepFractions measures op's saturation, then offers each of cfg.Fractions of it.
func sweepFractions(ctx context.Context, name string, op LoadOp, cfg OpenLoopConfig, s *Sweep) error {
	burst, err := loadClosedLoop(ctx, op, cfg.Workers, cfg.Burst/5, cfg.Burst)
	if err != nil {
		return fmt.Errorf("saturation burst: %w", err)
	}
	s.Saturation = burst.rate()
	cfg.Logf("%-12s saturation %.0f ops/s (%d workers, closed loop)", name, s.Saturation, cfg.Workers)
	if s.Saturation <= 0 {
		return errors.New("saturation burst completed no op")
	}
	hs := newLoadHists(cfg.Workers)
	for _, f := range cfg.Fractions {
		r := openLoopRun(ctx, op, f*s.Saturation, cfg.Step, hs)
		r.Fraction = f
		cfg.Logf("%-12s %3.0f%% offered %8.0f achieved %8.0f ops/s  p50 %-9v p99 %-9v p99.9 %-9v (corrected p99 %v) errors %d",
			name, 100*f, r.Offered, r.Achieved, r.P50, r.P99, r.P999, r.CorrectedP99, r.Errors)
		s.Runs = append(s.Runs, r)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// RunAtRates starts contender c and offers it each of rates (ops/s) for cfg.Step, open loop,
// then stops it: the same absolute rates for every contender, so their latencies compare
// at equal load (RunOpenLoop's fractions are of each contender's own saturation). A run
// that could not keep up shows it in Achieved and in its tail.
func RunAtRates(ctx context.Context, name string, c LoadContender, rates []float64, cfg OpenLoopConfig) (s Sweep, err error) {
	cfg = cfg.withDefaults()
	s = Sweep{Contender: name, Workers: cfg.Workers}
	err = withContender(c, func(op LoadOp) error {
		// A short warm-up, so the first rate does not pay for cold caches and pools.
		if _, err := loadClosedLoop(ctx, op, cfg.Workers, cfg.Burst/5, cfg.Burst/5); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		hs := newLoadHists(cfg.Workers)
		for _, rate := range rates {
			r := openLoopRun(ctx, op, rate, cfg.Step, hs)
			cfg.Logf("%-12s offered %8.0f achieved %8.0f ops/s  p50 %-9v p99 %-9v p99.9 %-9v errors %d",
				name, r.Offered, r.Achieved, r.P50, r.P99, r.P999, r.Errors)
			s.Runs = append(s.Runs, r)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	return s, err
}

// loadBurst is what a closed-loop burst counted in its measured window.
type loadBurst struct {
	ops    int
	window time.Duration
}

func (b loadBurst) rate() float64 {
	if b.window <= 0 {
		return 0
	}
	return float64(b.ops) / b.window.Seconds()
}

// loadClosedLoop runs op back to back from workers goroutines for warmup+measure and counts the
// ops that finished within the measured window. The first error stops it.
func loadClosedLoop(ctx context.Context, op LoadOp, workers int, warmup, measure time.Duration) (loadBurst, error) {
	var (
		counting atomic.Bool
		stopping atomic.Bool
		total    atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for !stopping.Load() {
				if err := op(ctx); err != nil {
					errOnce.Do(func() { firstErr = err })
					stopping.Store(true)
					break
				}
				if counting.Load() {
					n++
				}
			}
			total.Add(n)
		}()
	}
	time.Sleep(warmup)
	counting.Store(true)
	t0 := time.Now()
	time.Sleep(measure)
	counting.Store(false)
	window := time.Since(t0)
	stopping.Store(true)
	wg.Wait()
	return loadBurst{ops: int(total.Load()), window: window}, firstErr
}

// openLoopRun offers op at rate ops/s for step. LoadOp i is due at t0 + i/rate. Workers take turns
// as the issuer: the worker holding the turn waits until the next op is due, lets go of the
// turn and runs the op itself, so no goroutine hop sits between schedule and op, and only one
// goroutine at a time waits on the clock. A worker whose op is done spins for the turn a
// while (relaySpin) before it parks, so under load the turn passes between running workers
// with an atomic store, without waking a goroutine per op: a hand-off through a channel to a
// parked worker capped every contender (a no-op Go one included) near 1M ops/s on two
// cores, below half the saturation of the fastest. An issuer that lets go of the turn with
// nobody spinning wakes a parked worker, so a stalled op never holds up the next. When every
// worker is busy, the due op starts late, and its latency counts from when it was due.
func openLoopRun(ctx context.Context, op LoadOp, rate float64, step time.Duration, hs *loadHists) RateRun {
	workers := len(hs.workers)
	n := int(rate * step.Seconds())
	interval := float64(time.Second) / rate
	// A run that falls far behind stops issuing: no step may take more than 4× its length.
	capAt := 4*step + time.Second
	runCtx, cancel := context.WithTimeout(ctx, capAt+10*time.Second)
	defer cancel()

	hs.reset()
	// Collect the garbage of the step before, so a collection is less likely to land in this one.
	runtime.GC()
	var (
		turn     atomic.Bool  // held by the issuer
		spinners atomic.Int32 // workers spinning for the turn
		ended    atomic.Bool  // every op issued
	)
	wake := make(chan struct{}, workers) // a parked worker's wake-up
	stop := make(chan struct{})          // closed when every op is issued
	next := 0                            // the next op to issue; read and written only by the turn's holder
	unissued := 0
	t0 := time.Now()
	// Each worker sees about one op in workers: that is the interval at which it would
	// have issued had it been a closed-loop client, which RecordCorrectedValue back-fills.
	perWorker := int64(interval * float64(workers))

	// take waits for the turn: true when this worker holds it, false once every op is issued.
	take := func() bool {
		for {
			spinners.Add(1)
			for s := time.Now(); time.Since(s) < relaySpin; {
				if ended.Load() {
					spinners.Add(-1)
					return false
				}
				if !turn.Load() && turn.CompareAndSwap(false, true) {
					spinners.Add(-1)
					return true
				}
				runtime.Gosched()
			}
			spinners.Add(-1)
			// Park, unless the turn went free as this worker stopped counting itself a
			// spinner: its issuer may have seen the count before the decrement and woken
			// nobody (both sides store, then load: one sees the other).
			if !turn.Load() {
				continue
			}
			select {
			case <-wake:
			case <-stop:
				return false
			}
		}
	}
	// release lets go of the turn; with no worker spinning for it, one parked worker wakes.
	release := func() {
		turn.Store(false)
		if spinners.Load() == 0 {
			select {
			case wake <- struct{}{}:
			default: // a wake-up is pending already
			}
		}
	}

	var wg sync.WaitGroup
	for _, me := range hs.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for take() {
				i := next
				if i >= n || time.Since(t0) > capAt {
					if i < n {
						unissued, next = n-i, n
					}
					if !ended.Swap(true) { // a spinner may take the turn once more before it sees ended
						close(stop)
					}
					turn.Store(false)
					return
				}
				next++
				due := time.Duration(float64(i) * interval)
				loadWaitUntil(t0, due)
				release()

				started := time.Since(t0)
				err := op(runCtx)
				done := time.Since(t0)
				me.ops++
				if err != nil {
					me.errs++
					if me.firstErr == nil {
						me.firstErr = err
					}
				}
				loadRecord(me.lat, int64(done-due))
				loadRecordCorrected(me.corr, int64(done-started), perWorker)
				loadRecord(me.late, int64(started-due))
				me.lastDone = max(me.lastDone, done)
			}
		}()
	}
	wg.Wait()

	r := RateRun{Offered: rate, Unissued: unissued}
	lat, corr, late := hs.merged()
	var lastDone time.Duration
	for _, w := range hs.workers {
		r.Ops += w.ops
		r.Errors += w.errs
		if w.firstErr != nil && r.FirstErr == "" {
			r.FirstErr = w.firstErr.Error()
		}
		lastDone = max(lastDone, w.lastDone)
	}
	if lastDone > 0 {
		r.Achieved = float64(r.Ops) / lastDone.Seconds()
	}
	q := func(h *hdrhistogram.Histogram, p float64) time.Duration { return time.Duration(h.ValueAtQuantile(p)) }
	r.P50, r.P99, r.P999, r.Max = q(lat, 50), q(lat, 99), q(lat, 99.9), time.Duration(lat.Max())
	r.CorrectedP50, r.CorrectedP99, r.CorrectedP999 = q(corr, 50), q(corr, 99), q(corr, 99.9)
	r.StartLateP99 = q(late, 99)
	return r
}

// loadHists are the open loop's histograms, one set per worker plus the merged set, made
// once per sweep: a few hundred kilobytes each, they would otherwise be garbage that a
// collection in the middle of a step has to deal with.
type loadHists struct {
	workers         []*loadWorker
	lat, corr, late *hdrhistogram.Histogram
}

// loadWorker is one open-loop worker's tally for a step.
type loadWorker struct {
	lat, corr, late *hdrhistogram.Histogram
	ops, errs       int
	firstErr        error
	lastDone        time.Duration
}

func newLoadHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, loadLatencyMax, loadLatencyDigit)
}

func newLoadHists(workers int) *loadHists {
	hs := &loadHists{lat: newLoadHist(), corr: newLoadHist(), late: newLoadHist()}
	for range workers {
		hs.workers = append(hs.workers, &loadWorker{lat: newLoadHist(), corr: newLoadHist(), late: newLoadHist()})
	}
	return hs
}

func (hs *loadHists) reset() {
	for _, w := range hs.workers {
		w.lat.Reset()
		w.corr.Reset()
		w.late.Reset()
		*w = loadWorker{lat: w.lat, corr: w.corr, late: w.late}
	}
}

// merged sums the workers' histograms into the merged set.
func (hs *loadHists) merged() (lat, corr, late *hdrhistogram.Histogram) {
	hs.lat.Reset()
	hs.corr.Reset()
	hs.late.Reset()
	for _, w := range hs.workers {
		hs.lat.Merge(w.lat)
		hs.corr.Merge(w.corr)
		hs.late.Merge(w.late)
	}
	return hs.lat, hs.corr, hs.late
}

// relaySpin is how long an open-loop worker whose op is done spins for the turn before it
// parks: many intervals at the rates where a hand-off's cost matters (under a microsecond
// apart), and short enough that at low rates an idle worker soon stops taking CPU from the
// contender.
const relaySpin = 50 * time.Microsecond

// loadWaitUntil returns once due has passed since t0. Go's timers sleep at least a millisecond
// when the process is otherwise idle, far coarser than the microseconds between ops, so a
// wait shorter than 2 ms yields the processor in a loop instead of sleeping; longer waits
// sleep until 1.5 ms before due. For the last waitSpin it spins on the clock without
// yielding: a yield puts the issuer behind whatever else runs on its processor (a worker
// spinning for the turn, one ending its op), which made ops at 300k/s start some 0.9 µs
// late at the median.
func loadWaitUntil(t0 time.Time, due time.Duration) {
	for {
		left := due - time.Since(t0)
		switch {
		case left <= 0:
			return
		case left > 2*time.Millisecond:
			time.Sleep(left - 1500*time.Microsecond)
		case left > waitSpin:
			runtime.Gosched()
		}
	}
}

// waitSpin is how close to its due time an issuer stops yielding and spins on the clock.
const waitSpin = 5 * time.Microsecond

// loadRecord adds v to h, clamped to h's range.
func loadRecord(h *hdrhistogram.Histogram, v int64) {
	_ = h.RecordValue(min(max(v, 1), loadLatencyMax))
}

func loadRecordCorrected(h *hdrhistogram.Histogram, v, interval int64) {
	_ = h.RecordCorrectedValue(min(max(v, 1), loadLatencyMax), interval)
}

// SweepSummary is a sweep in benchmark metrics: the saturation and, per offered fraction,
// achieved rate and latency percentiles, keyed by unit name.
func SweepSummary(s Sweep) map[string]float64 {
	m := map[string]float64{"sat-ops/s": s.Saturation}
	for _, r := range s.Runs {
		pct := fmt.Sprintf("@%.0f%%", 100*r.Fraction)
		m["ops/s"+pct] = r.Achieved
		m["p50-ns"+pct] = float64(r.P50)
		m["p99-ns"+pct] = float64(r.P99)
		m["p999-ns"+pct] = float64(r.P999)
	}
	return m
}

// FormatRate prints an ops/s figure compactly: 1.25M, 310k, 950.
func FormatRate(r float64) string {
	switch {
	case r >= 1e6:
		return fmt.Sprintf("%.2fM", r/1e6)
	case r >= 1e4:
		return fmt.Sprintf("%.0fk", r/1e3)
	case r >= 1e3:
		return fmt.Sprintf("%.1fk", r/1e3)
	}
	return fmt.Sprintf("%.0f", math.Round(r))
}

// What load costs besides latency: CPU after it stops, OS threads while it runs, memory
// over a long run. bench/resources_test.go and the report program call these.

// IdleCPUResult is the process's CPU time over an idle period that follows a burst of load.
type IdleCPUResult struct {
	Contender string
	BurstOps  int           // ops the burst completed
	Idle      time.Duration // the idle period measured
	CPU       time.Duration // user + system CPU time of the whole process (both runtimes) over it
}

// Cores is the idle CPU as a share of one core.
func (r IdleCPUResult) Cores() float64 { return r.CPU.Seconds() / r.Idle.Seconds() }

// MeasureIdleCPU starts c, runs it closed-loop from workers goroutines for burst, stops
// issuing, lets settle pass (the pollers' spin windows, a garbage collection, pools
// shrinking: what load leaves behind), and reads getrusage(RUSAGE_SELF) on both sides of
// the idle period that follows.
func MeasureIdleCPU(name string, c LoadContender, workers int, burst, settle, idle time.Duration) (res IdleCPUResult, err error) {
	op, stop, err := c()
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	b, err := loadClosedLoop(context.Background(), op, workers, 0, burst)
	if err != nil {
		return res, err
	}
	time.Sleep(settle)
	before, err := loadCPU()
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	time.Sleep(idle)
	after, err := loadCPU()
	if err != nil {
		return res, err
	}
	return IdleCPUResult{Contender: name, BurstOps: b.ops, Idle: time.Since(t0), CPU: after - before}, nil
}

// ThreadsResult is a burst of long-waiting events and the OS threads the process used for it.
type ThreadsResult struct {
	Mode      string
	Events    int
	Completed int
	Errors    int
	FirstErr  string
	Baseline  int           // threads before the burst
	Peak      int           // the most threads the sampler saw during it
	Wall      time.Duration // from the first submit to the last outcome (or the cap)
	Capped    bool          // the burst hit its wall-time cap before every outcome came
}

// loadThreadsConfig is the runtime for the thread bursts: enough request and reply slots for
// 16,384 events in flight.
func loadThreadsConfig() (tandem.Config, error) {
	cfg, err := LoadConfig()
	cfg.MaxInFlight = 16384
	return cfg, err
}

func loadSleepEvent(ms int) *tandem.Event {
	ev := loadEvent(loadSleepType)
	ev.Extensions = map[string]string{"sleep_ms": fmt.Sprint(ms)}
	return ev
}

// MeasureThreadsAsync submits events demo.sleep events (each awaits a tokio timer of sleepMS)
// from one goroutine with Submit, so all are in flight at once, then waits for every
// Receipt; a sampler reads the process's thread count every millisecond. capAt bounds the
// wall time.
func MeasureThreadsAsync(events, sleepMS int, capAt time.Duration) (res ThreadsResult, err error) {
	cfg, err := loadThreadsConfig()
	if err != nil {
		return res, err
	}
	rt, stop, err := startLoadRuntime(cfg)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	ev := loadSleepEvent(sleepMS)
	ctx, cancel := context.WithTimeout(context.Background(), capAt)
	defer cancel()
	res = ThreadsResult{Mode: "async: Submit + Receipt.Wait", Events: events}
	res.Baseline, err = loadThreads()
	if err != nil {
		return res, err
	}
	sampler := startLoadThreadPeak(time.Millisecond)
	t0 := time.Now()
	receipts := make([]*tandem.Receipt, 0, events)
	for range events {
		rc, err := rt.Submit(ctx, ev)
		if err != nil {
			res.count(err)
			continue
		}
		receipts = append(receipts, rc)
	}
	for _, rc := range receipts {
		res.count(rc.Wait(ctx))
	}
	res.Wall = time.Since(t0)
	res.Capped = ctx.Err() != nil
	res.Peak, err = sampler.finish()
	return res, err
}

// MeasureThreadsDirect runs the same burst as MeasureThreadsAsync with the direct contender
// (tandem_bench_invoke) from one goroutine per event: each call holds its OS thread until its
// handler's timer fires. Go dies of thread exhaustion past debug.SetMaxThreads (10,000), so
// the goroutines start in waves and no more than maxThreads-1000 calls are ever open at once;
// that bound appears in the result as Peak near it. It needs cgo (ErrUnavailable otherwise).
func MeasureThreadsDirect(events, sleepMS int, capAt time.Duration) (res ThreadsResult, err error) {
	cfg, err := loadThreadsConfig()
	if err != nil {
		return res, err
	}
	n, err := newNativeRuntime(cfg)
	if errors.Is(err, errNeedsCgo) {
		return res, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := n.close(); serr != nil && err == nil {
			err = serr
		}
	}()
	ev := loadSleepEvent(sleepMS)
	res = ThreadsResult{Mode: "direct: one blocking call per goroutine", Events: events}
	res.Baseline, err = loadThreads()
	if err != nil {
		return res, err
	}
	open := make(chan struct{}, loadDirectThreadBound)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	deadline := time.Now().Add(capAt)
	sampler := startLoadThreadPeak(time.Millisecond)
	t0 := time.Now()
	for range events {
		if time.Now().After(deadline) {
			res.Capped = true
			break
		}
		open <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := loadDirectBufs.Get().(*[]byte)
			err := directOp(n, ev, buf)
			loadDirectBufs.Put(buf)
			<-open
			mu.Lock()
			res.count(err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Wall = time.Since(t0)
	res.Peak, err = sampler.finish()
	return res, err
}

// loadDirectThreadBound keeps MeasureThreadsDirect clear of Go's default limit of 10,000 threads,
// at which the process would die.
const loadDirectThreadBound = 9000

func (r *ThreadsResult) count(err error) {
	r.Completed++
	if err != nil {
		r.Errors++
		if r.FirstErr == "" {
			r.FirstErr = err.Error()
		}
	}
}

// loadThreadPeak keeps the largest OS thread count it reads, every period until finish.
type loadThreadPeak struct {
	done chan struct{}
	peak chan int
}

func startLoadThreadPeak(period time.Duration) *loadThreadPeak {
	s := &loadThreadPeak{done: make(chan struct{}), peak: make(chan int, 1)}
	go func() {
		peak := 0
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			if n, err := loadThreads(); err == nil {
				peak = max(peak, n)
			}
			select {
			case <-s.done:
				s.peak <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops the sampler and returns the peak, a last reading included.
func (s *loadThreadPeak) finish() (int, error) {
	close(s.done)
	return <-s.peak, nil
}

// RSSSample is the resident set size after a number of events.
type RSSSample struct {
	Events int
	RSS    int64 // bytes
}

// RSSResult is the resident set size of the process sampled along a long run.
type RSSResult struct {
	Events  int
	Every   int
	Elapsed time.Duration
	Samples []RSSSample // the first is before any event
}

// First is the first sample after a full Every events (warm: slabs touched, pools filled).
func (r RSSResult) First() int64 { return r.at(1) }

// Last is the final sample.
func (r RSSResult) Last() int64 { return r.at(len(r.Samples) - 1) }

// Max is the largest sample after warm-up.
func (r RSSResult) Max() int64 {
	var m int64
	for _, s := range r.Samples[min(1, len(r.Samples)):] {
		m = max(m, s.RSS)
	}
	return m
}

func (r RSSResult) at(i int) int64 {
	if i < 0 || i >= len(r.Samples) {
		return 0
	}
	return r.Samples[i].RSS
}

// MeasureRSS runs events round trips over the rings (rt.Call to demo.noop.inline, reply
// released) from workers goroutines and samples VmRSS before the first and after every
// every-th event. A leak shows as a slope; flat is the contract.
func MeasureRSS(events, every, workers int) (res RSSResult, err error) {
	cfg, err := LoadConfig()
	if err != nil {
		return res, err
	}
	rt, stop, err := startLoadRuntime(cfg)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	every = max(every, 1)
	res = RSSResult{Events: events, Every: every}
	rss, err := loadRSS()
	if err != nil {
		return res, err
	}
	res.Samples = append(res.Samples, RSSSample{0, rss})

	ev := loadEvent(loadInlineType)
	ctx := context.Background()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	t0 := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > events {
					return
				}
				reply, err := rt.Call(ctx, ev)
				if err == nil {
					reply.Release()
				}
				if err != nil || i%every == 0 {
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					if i%every == 0 {
						if rss, rerr := loadRSS(); rerr == nil {
							res.Samples = append(res.Samples, RSSSample{i, rss})
						}
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(t0)
	slices.SortFunc(res.Samples, func(a, b RSSSample) int { return a.Events - b.Events })
	return res, firstErr
}

// loadCPU is the user + system CPU time this process has used, every thread included.
func loadCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// loadThreads is the process's OS thread count (Threads in /proc/self/status).
func loadThreads() (int, error) {
	v, err := loadProcStatus("Threads:")
	return int(v), err
}

// loadRSS is the process's resident set size (VmRSS in /proc/self/status).
func loadRSS() (int64, error) {
	kb, err := loadProcStatus("VmRSS:")
	return kb << 10, err
}

// loadProcStatus reads the number after key in /proc/self/status (VmRSS is in kB).
func loadProcStatus(key string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/self/status: no %s line", key)
}

// ReapThreads ends idle OS threads until the process is back to about target threads, so
// the measurements after a burst of direct calls do not inherit the thousands of
// threads it left: Go keeps every thread it ever made, and a goroutine that locks its
// thread and exits without unlocking it takes the thread down with it.
func ReapThreads(target int) (int, error) {
	n, err := loadThreads()
	for err == nil && n > target {
		var wg sync.WaitGroup
		for range min(n-target, 512) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
			}()
		}
		wg.Wait()
		time.Sleep(time.Millisecond) // a thread exits just after its goroutine's deferred calls
		before := n
		if n, err = loadThreads(); err == nil && n >= before {
			break // none of those threads was idle any more
		}
	}
	return n, err
}

// GeneratorFloor runs the open loop with an op that does nothing, at each of rates: what
// the generator itself adds to every contender's figures at those rates on this machine.
func GeneratorFloor(rates []float64, step time.Duration, workers int) []RateRun {
	hs := newLoadHists(max(workers, 1))
	var out []RateRun
	for _, rate := range rates {
		out = append(out, openLoopRun(context.Background(), func(context.Context) error { return nil }, rate, step, hs))
	}
	return out
}
