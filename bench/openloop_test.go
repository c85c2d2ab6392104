package bench

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// openLoopStep is how long BenchmarkOpenLoop offers each rate: the -benchtime duration
// (1s by default), capped at 2s; with a count (-benchtime=1x, ./build.sh test's smoke
// run) a short 50 ms, so the sweep only proves that it works.
func openLoopStep() (step time.Duration, smoke bool) {
	f := flag.Lookup("test.benchtime")
	if f == nil {
		return time.Second, false
	}
	v := f.Value.String()
	if strings.HasSuffix(v, "x") {
		return 50 * time.Millisecond, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Second, false
	}
	return min(d, 2*time.Second), false
}

// BenchmarkOpenLoop is latency under load: per contender, a closed-loop burst measures
// saturation, then an open-loop generator offers 10%, 25%, 50%, 75% and 90% of it, each op
// timed from its intended start. One sweep per sub-benchmark whatever b.N is; the metrics
// are the sweep's (sat-ops/s, and ops/s, p50-ns, p99-ns, p999-ns at each fraction).
func BenchmarkOpenLoop(b *testing.B) {
	step, smoke := openLoopStep()
	cfg := OpenLoopConfig{Step: step, Logf: b.Logf}
	if smoke {
		cfg.Burst = 50 * time.Millisecond
	}
	for _, name := range slices.Sorted(maps.Keys(LoadContenders)) {
		b.Run(name, func(b *testing.B) {
			s := oneShot(b, func() (Sweep, error) {
				return RunOpenLoop(context.Background(), name, LoadContenders[name], cfg)
			})
			for _, r := range s.Runs {
				if r.Errors > 0 {
					b.Errorf("%.0f%%: %d of %d ops failed, first: %s", 100*r.Fraction, r.Errors, r.Ops, r.FirstErr)
				}
			}
			for unit, v := range SweepSummary(s) {
				b.ReportMetric(v, unit)
			}
		})
	}
}

// openLoopRates are the absolute rates BenchmarkOpenLoopRates offers every contender, unless
// ratesEnv names others.
var openLoopRates = []float64{1000, 10000, 100000}

// ratesEnv lists the rates, in ops/s separated by spaces, BenchmarkOpenLoopRates offers
// instead of openLoopRates: TANDEM_BENCH_RATES="300000 1470000".
const ratesEnv = "TANDEM_BENCH_RATES"

// benchRates is openLoopRates, or the rates ratesEnv lists.
func benchRates(tb testing.TB) []float64 {
	rates, err := parseRates(os.Getenv(ratesEnv))
	if err != nil {
		tb.Fatalf("%s: %v", ratesEnv, err)
	}
	if len(rates) == 0 {
		return openLoopRates
	}
	return rates
}

// parseRates reads rates in ops/s separated by spaces; none for an empty list.
func parseRates(list string) ([]float64, error) {
	var rates []float64
	for _, f := range strings.Fields(list) {
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || !(r > 0) || math.IsInf(r, 0) {
			return nil, fmt.Errorf("%q is not a rate: want ops/s above 0, separated by spaces", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

// The rates list: numbers above 0 separated by spaces; anything else is refused by name, and
// an empty list means the defaults.
func TestParseRates(t *testing.T) {
	if got, err := parseRates(" 1000  1.5e6 "); err != nil || !slices.Equal(got, []float64{1000, 1.5e6}) {
		t.Fatalf("parseRates: %v, %v; want [1000 1.5e6]", got, err)
	}
	if got, err := parseRates(""); err != nil || got != nil {
		t.Fatalf("parseRates(empty): %v, %v; want none", got, err)
	}
	for _, bad := range []string{"x", "1000 0", "-5", "NaN", "+Inf", "1e3,2e3"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) accepted it", bad)
		}
	}
}

// BenchmarkOpenLoopRates is latency at equal load: every contender is offered the same
// absolute rates (1k, 10k and 100k ops/s, or those of TANDEM_BENCH_RATES), open loop, each
// op timed from its intended start. The metrics are p50-ns@RATE, p99-ns@RATE and
// achieved-ops/s@RATE per rate.
func BenchmarkOpenLoopRates(b *testing.B) {
	rates := benchRates(b)
	step, smoke := openLoopStep()
	cfg := OpenLoopConfig{Step: step, Logf: b.Logf}
	if smoke {
		cfg.Burst = 50 * time.Millisecond
	}
	for _, name := range slices.Sorted(maps.Keys(LoadContenders)) {
		b.Run(name, func(b *testing.B) {
			s := oneShot(b, func() (Sweep, error) {
				return RunAtRates(context.Background(), name, LoadContenders[name], rates, cfg)
			})
			for _, r := range s.Runs {
				if r.Errors > 0 {
					b.Errorf("%.0f ops/s: %d of %d ops failed, first: %s", r.Offered, r.Errors, r.Ops, r.FirstErr)
				}
				at := fmt.Sprintf("@%.0fk", r.Offered/1000)
				b.ReportMetric(float64(r.P50.Nanoseconds()), "p50-ns"+at)
				b.ReportMetric(float64(r.P99.Nanoseconds()), "p99-ns"+at)
				b.ReportMetric(r.Achieved, "achieved-ops/s"+at)
			}
		})
	}
}

// BenchmarkSaturation is each contender's closed-loop throughput: 64 goroutines (the goal
// table's Workers) calling its op back to back for the -benchtime duration (1 s by default,
// at most 2 s; 50 ms in ./build.sh test's smoke run), after a tenth of that to warm up. One
// burst per sub-benchmark whatever b.N is; the metric is ops/s. Its sub-benchmarks run apart
// (`-bench 'Saturation/rings$'`, `'Saturation/direct$'`) and alternate, as the goal table's
// saturation rounds do.
func BenchmarkSaturation(b *testing.B) {
	measure, _ := openLoopStep()
	for _, name := range slices.Sorted(maps.Keys(LoadContenders)) {
		b.Run(name, func(b *testing.B) {
			burst := oneShot(b, func() (loadBurst, error) {
				var burst loadBurst
				err := withContender(LoadContenders[name], func(op LoadOp) error {
					var err error
					burst, err = loadClosedLoop(context.Background(), op, GoalsConfig{}.withDefaults().Workers, measure/10, measure)
					return err
				})
				return burst, err
			})
			b.ReportMetric(burst.rate(), "ops/s")
		})
	}
}

// loadTestContender is a contender in Go alone whose op takes service and, if stallAt is
// positive, stalls once for stall at its stallAt-th call.
func loadTestContender(service time.Duration, stallAt int64, stall time.Duration, calls *atomic.Int64) LoadContender {
	return func() (LoadOp, func() error, error) {
		return func(context.Context) error {
			n := calls.Add(1)
			d := service
			if n == stallAt {
				d = stall
			}
			if d > 0 {
				time.Sleep(d)
			}
			return nil
		}, func() error { return nil }, nil
	}
}

// The generator offers the rate asked for: its schedule does not drift with the time ops take.
func TestOpenLoopOffersTheRate(t *testing.T) {
	var calls atomic.Int64
	op, _, _ := loadTestContender(0, 0, 0, &calls)()
	const rate = 20000.0
	r := openLoopRun(context.Background(), op, rate, 250*time.Millisecond, newLoadHists(8))
	if want := int(rate / 4); r.Ops != want || calls.Load() != int64(want) {
		t.Fatalf("completed %d ops (%d calls), want %d", r.Ops, calls.Load(), want)
	}
	if r.Achieved < 0.9*rate || r.Achieved > 1.1*rate {
		t.Fatalf("achieved %.0f ops/s, want about %.0f", r.Achieved, rate)
	}
}

// A stall is charged to every op scheduled during it, not only to the op that stalled:
// coordinated omission is corrected. At 2,000 ops/s, a 100 ms stall with one worker delays
// the 200 ops due in it, 10% of a 1 s run, so the p99 is tens of milliseconds, where
// timing each op from when it actually started would show one slow op in 2,000 and a
// sub-millisecond p99.
func TestOpenLoopChargesStallsToScheduledOps(t *testing.T) {
	var calls atomic.Int64
	op, _, _ := loadTestContender(0, 500, 100*time.Millisecond, &calls)()
	r := openLoopRun(context.Background(), op, 2000, time.Second, newLoadHists(1))
	if r.P99 < 20*time.Millisecond {
		t.Fatalf("p99 %v after a 100ms stall of the only worker: the stall was not charged to the ops behind it", r.P99)
	}
	if r.Max < 100*time.Millisecond {
		t.Fatalf("max %v, want at least the 100ms stall", r.Max)
	}
	// The cross-check, from service times with RecordCorrectedValue, sees the stall too.
	if r.CorrectedP99 < 20*time.Millisecond {
		t.Fatalf("corrected p99 %v: RecordCorrectedValue did not back-fill the stall", r.CorrectedP99)
	}
}

// With workers to spare, a stalled op holds up only itself: its issuer let go of the turn
// before the op began and woke a parked worker, which issues the ops due during the stall on
// time. At 2,000 ops/s with two workers, a 100 ms stall shows in the max, not in the p99 (a
// generator that waits for the stalled worker shows the 200 ops behind it, a p99 of tens of
// milliseconds, as the single-worker test above does).
func TestOpenLoopIssuesPastAStalledOp(t *testing.T) {
	var calls atomic.Int64
	op, _, _ := loadTestContender(0, 500, 100*time.Millisecond, &calls)()
	r := openLoopRun(context.Background(), op, 2000, time.Second, newLoadHists(2))
	if r.Max < 100*time.Millisecond {
		t.Fatalf("max %v, want at least the 100ms stall", r.Max)
	}
	if r.P99 >= 20*time.Millisecond {
		t.Fatalf("p99 %v: the ops due during one worker's stall waited for it although another worker was free", r.P99)
	}
	if r.Ops != 2000 || r.Unissued != 0 {
		t.Fatalf("completed %d ops, %d unissued: want 2000, 0", r.Ops, r.Unissued)
	}
}

// Saturation is found by the closed loop, and a sweep reports one run per fraction.
func TestRunOpenLoopSweeps(t *testing.T) {
	var calls atomic.Int64
	c := loadTestContender(100*time.Microsecond, 0, 0, &calls)
	s, err := RunOpenLoop(context.Background(), "sleep", c, OpenLoopConfig{
		Fractions: []float64{0.25, 0.5}, Step: 100 * time.Millisecond, Burst: 100 * time.Millisecond, Workers: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 4 workers each sleeping ≥100µs: at most 40,000 ops/s.
	if s.Saturation <= 0 || s.Saturation > 40000 {
		t.Fatalf("saturation %.0f ops/s, want in (0, 40000]", s.Saturation)
	}
	if len(s.Runs) != 2 || s.Runs[0].Fraction != 0.25 || s.Runs[1].Fraction != 0.5 {
		t.Fatalf("runs %+v, want one at 25%% and one at 50%%", s.Runs)
	}
	for _, r := range s.Runs {
		if r.P50 < 100*time.Microsecond {
			t.Errorf("%.0f%%: p50 %v is below the op's own 100µs", 100*r.Fraction, r.P50)
		}
	}
}
