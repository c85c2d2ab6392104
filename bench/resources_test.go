package bench

import (
	"errors"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// oneShot runs a measurement that ignores b.N once per sub-benchmark and process: the
// testing package calls a benchmark again with a larger b.N when a round took less than
// -benchtime, and those rounds reuse the first one's result. ns/op is the measurement's
// wall time (one op = one measurement).
func oneShot[T any](b *testing.B, measure func() (T, error)) T {
	b.Helper()
	oneShots.Lock()
	c, ok := oneShots.m[b.Name()]
	if !ok {
		c = &oneShotResult{}
		oneShots.m[b.Name()] = c
	}
	oneShots.Unlock()
	if !c.done {
		t0 := time.Now()
		c.v, c.err = measure()
		c.wall, c.done = time.Since(t0), true
	}
	if errors.Is(c.err, ErrUnavailable) {
		b.Skip(c.err)
	}
	if c.err != nil {
		b.Fatal(c.err)
	}
	b.ReportMetric(float64(c.wall.Nanoseconds()), "ns/op")
	return c.v.(T)
}

type oneShotResult struct {
	done bool
	v    any
	err  error
	wall time.Duration
}

var oneShots = struct {
	sync.Mutex
	m map[string]*oneShotResult
}{m: map[string]*oneShotResult{}}

// longEnv asks BenchmarkRSS for its full 10M-event run.
const longEnv = "TANDEM_BENCH_LONG"

// ResourceSizes are the sizes of the resource measurements: full, or small enough for
// ./build.sh test's -benchtime=1x smoke run.
type resourceSizes struct {
	idleBurst, idleSettle, idle time.Duration
	threadEvents                int
	rssEvents, every            int
}

func resourceSizesFor(smoke bool) resourceSizes {
	z := resourceSizes{
		idleBurst: 300 * time.Millisecond, idleSettle: time.Second, idle: time.Second,
		threadEvents: 10000,
		rssEvents:    200_000, every: 20_000,
	}
	if os.Getenv(longEnv) == "1" {
		z.rssEvents, z.every = 10_000_000, 1_000_000
	}
	if smoke {
		z.idleBurst, z.idleSettle, z.idle = 50*time.Millisecond, 0, 200*time.Millisecond
		z.threadEvents = 1000
		if os.Getenv(longEnv) != "1" {
			z.rssEvents, z.every = 20_000, 5_000
		}
	}
	return z
}

// BenchmarkIdleCPU is the CPU the whole process (Go and Rust threads alike) uses in the
// second after a burst of load stops, per contender: idle-cpu-% is the share of one core.
// Spinning pollers must park once the load is gone.
func BenchmarkIdleCPU(b *testing.B) {
	_, smoke := openLoopStep()
	z := resourceSizesFor(smoke)
	for _, name := range slices.Sorted(maps.Keys(LoadContenders)) {
		b.Run(name, func(b *testing.B) {
			r := oneShot(b, func() (IdleCPUResult, error) {
				return MeasureIdleCPU(name, LoadContenders[name], 64, z.idleBurst, z.idleSettle, z.idle)
			})
			b.ReportMetric(100*r.Cores(), "idle-cpu-%")
			b.ReportMetric(float64(r.BurstOps)/z.idleBurst.Seconds(), "burst-ops/s")
		})
	}
}

// BenchmarkThreads is 10,000 events in flight at once, each awaiting a 1 ms tokio timer
// (demo.sleep): submitted with Submit and awaited through their Receipts, against one
// direct call per goroutine (tandem_bench_invoke; it needs cgo), which holds an OS thread
// per waiting event. peak-threads is the most OS threads the process had during the burst.
func BenchmarkThreads(b *testing.B) {
	_, smoke := openLoopStep()
	z := resourceSizesFor(smoke)
	const capAt = 30 * time.Second
	for _, m := range []struct {
		name string
		run  func(events, sleepMS int, capAt time.Duration) (ThreadsResult, error)
	}{{"async", MeasureThreadsAsync}, {"direct", MeasureThreadsDirect}} {
		b.Run(m.name, func(b *testing.B) {
			r := oneShot(b, func() (ThreadsResult, error) {
				r, err := m.run(z.threadEvents, 1, capAt)
				if err == nil {
					_, err = ReapThreads(r.Baseline)
				}
				return r, err
			})
			if r.Errors > 0 || r.Capped {
				b.Errorf("%d of %d events failed (first: %s), capped %v", r.Errors, r.Events, r.FirstErr, r.Capped)
			}
			b.ReportMetric(float64(r.Peak), "peak-threads")
			b.ReportMetric(float64(r.Baseline), "base-threads")
			b.ReportMetric(float64(r.Completed)/r.Wall.Seconds(), "events/s")
		})
	}
}

// BenchmarkRSS is the resident set size along a long run of round trips over the rings
// (200,000 events, 10 samples; TANDEM_BENCH_LONG=1 for 10M events, a sample every 1M).
// Flat is the contract: rss-growth-KiB is the last sample less the first warm one.
func BenchmarkRSS(b *testing.B) {
	_, smoke := openLoopStep()
	z := resourceSizesFor(smoke)
	r := oneShot(b, func() (RSSResult, error) { return MeasureRSS(z.rssEvents, z.every, 64) })
	for _, s := range r.Samples {
		b.Logf("after %9d events: RSS %.1f MiB", s.Events, float64(s.RSS)/(1<<20))
	}
	b.ReportMetric(float64(r.First())/(1<<20), "rss-first-MiB")
	b.ReportMetric(float64(r.Last())/(1<<20), "rss-last-MiB")
	b.ReportMetric(float64(r.Max())/(1<<20), "rss-max-MiB")
	b.ReportMetric(float64(r.Last()-r.First())/(1<<10), "rss-growth-KiB")
	b.ReportMetric(float64(r.Events)/r.Elapsed.Seconds(), "events/s")
}
