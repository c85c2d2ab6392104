package bench

import (
	"bytes"
	"errors"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// roundTripConfig is benchConfig with room for a 64 KiB payload in its envelope and reply.
func roundTripConfig(tb testing.TB) tandem.Config {
	cfg := benchConfig(tb)
	cfg.MaxEventSize, cfg.MaxReplySize = maxEnvelope, maxEnvelope
	return cfg
}

// inFlightConfig is benchConfig with request slots for every event of a batch in flight at
// once, and small slots (the events are 64 B), so 16,384 of them stay small.
func inFlightConfig(tb testing.TB) tandem.Config {
	cfg := benchConfig(tb)
	cfg.MaxInFlight = 16384
	cfg.MaxEventSize, cfg.MaxReplySize = inFlightBuf, inFlightBuf
	return cfg
}

// runContender runs fn as sub-benchmark name with a session of the contender start makes,
// started on the sub-benchmark's first round and closed after its last (setup and teardown
// are outside the timer). A contender this build cannot have is skipped.
func runContender(b *testing.B, name string, start func(tandem.Config) (*session, error), cfg tandem.Config, fn func(b *testing.B, s *session)) {
	var s *session
	var startErr error
	b.Run(name, func(b *testing.B) {
		if s == nil && startErr == nil {
			s, startErr = start(cfg)
		}
		if skipUnavailable(b, startErr) {
			return
		}
		if startErr != nil {
			b.Fatal(startErr)
		}
		fn(b, s)
	})
	if s != nil {
		if err := s.close(); err != nil {
			b.Fatalf("%s: closing: %v", name, err)
		}
	}
}

// skipUnavailable skips tb if err says its contender cannot exist in this build or on this
// machine (the direct and callback contenders without cgo, the sidecar without its binary),
// and says whether it did.
func skipUnavailable(tb testing.TB, err error) bool {
	if errors.Is(err, errNeedsCgo) || errors.Is(err, ErrUnavailable) {
		tb.Skip(err)
		return true
	}
	return false
}

// crossWindow is the measured part of a contender sub-benchmark: the FFI calls and
// callbacks, and the heap allocations, read on both sides of it, outside the timer.
type crossWindow struct {
	s             *session
	calls, backs  uint64
	mallocs, heap uint64
}

func beginCrossing(b *testing.B, s *session) crossWindow {
	b.ReportAllocs()
	w := crossWindow{s: s}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.mallocs, w.heap = ms.Mallocs, ms.TotalAlloc
	w.calls, w.backs = s.crossings()
	w.calls += s.readCalls() // made after it counted: not the timed loop's
	b.ResetTimer()
	return w
}

// end stops the timer and reports, per event (per op when an op is one event): events/s,
// p50-ns and p99-ns of each event's latency, ffi-calls (Go → Rust), callbacks (Rust → Go),
// and when an op is a batch, allocs and bytes per event.
func (w crossWindow) end(b *testing.B, events int, hist *hdrhistogram.Histogram, err error) {
	b.StopTimer()
	calls, backs := w.s.crossings()
	if err != nil {
		b.Fatalf("recording a latency: %v", err)
	}
	n := float64(events)
	per := "/op"
	if events != b.N {
		per = "/event"
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.Mallocs-w.mallocs)/n, "allocs"+per)
		b.ReportMetric(float64(ms.TotalAlloc-w.heap)/n, "B"+per)
	}
	b.ReportMetric(float64(calls-w.calls)/n, "ffi-calls"+per)
	b.ReportMetric(float64(backs-w.backs)/n, "callbacks"+per)
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(n/s, "events/s")
	}
	b.ReportMetric(float64(hist.ValueAtQuantile(50)), "p50-ns")
	b.ReportMetric(float64(hist.ValueAtQuantile(99)), "p99-ns")
}

// lane is one goroutine's caller and latency histogram.
type lane struct {
	call caller
	rec  *recorder
}

// roundTrips runs the serial and the wide (RunParallel with SetParallelism(32)) round trip
// of ev for every contender of defs, each reply checked by check.
func roundTrips(b *testing.B, defs []contenderDef, cfg tandem.Config, ev *tandem.Event, bufSize int, check func([]byte) error) {
	for _, c := range defs {
		runContender(b, c.name+"/serial", c.start, cfg, func(b *testing.B, s *session) {
			call := s.newCaller(check, bufSize, false)
			rec := newRecorder()
			w := beginCrossing(b, s)
			for range b.N {
				t0 := time.Now()
				if err := call(ev); err != nil {
					b.Fatalf("%s: %v", c.name, err)
				}
				rec.record(time.Since(t0))
			}
			w.end(b, b.N, rec.hist, rec.err)
		})
		runContender(b, c.name+"/wide", c.start, cfg, func(b *testing.B, s *session) {
			const parallelism = 32
			lanes := make([]lane, parallelism*runtime.GOMAXPROCS(0))
			rs := &recorders{all: make([]*recorder, len(lanes))}
			for i := range lanes {
				lanes[i] = lane{call: s.newCaller(check, bufSize, false), rec: newRecorder()}
				rs.all[i] = lanes[i].rec
			}
			var next atomic.Int32
			var fail firstFailure
			w := beginCrossing(b, s)
			b.SetParallelism(parallelism)
			b.RunParallel(func(pb *testing.PB) {
				l := lanes[next.Add(1)-1]
				for pb.Next() {
					t0 := time.Now()
					if err := l.call(ev); err != nil {
						fail.set(err)
						return
					}
					l.rec.record(time.Since(t0))
				}
			})
			if err := fail.get(); err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			hist, err := rs.merged()
			w.end(b, b.N, hist, err)
		})
	}
}

// BenchmarkContendersEcho is a round trip to demo.echo (the payload comes back) with 64 B,
// 1 KiB and 64 KiB payloads, for every contender, serial and wide.
func BenchmarkContendersEcho(b *testing.B) {
	cfg := roundTripConfig(b)
	b.Logf("spin window: %s; GOMAXPROCS %d", describeSpin(cfg), runtime.GOMAXPROCS(0))
	for _, size := range []struct {
		name string
		n    int
	}{{"64B", 64}, {"1KiB", 1 << 10}, {"64KiB", maxPayload}} {
		ev := contenderEvent(demoEchoType, size.n, nil)
		b.Run(size.name, func(b *testing.B) {
			roundTrips(b, contenderDefs, cfg, ev, envelope.EncodedEventSize(ev)+size.n, replyLenCheck(size.n))
		})
	}
}

// BenchmarkContendersHash is a round trip to a CPU-bound handler: demo.hash folds the FNV-1a
// of a 1 KiB payload hashRounds times (~20 µs) and replies with 8 bytes.
func BenchmarkContendersHash(b *testing.B) {
	cfg := roundTripConfig(b)
	ev := contenderEvent(demoHashType, hashPayloadSize, map[string]string{"rounds": strconv.Itoa(hashRounds)})
	roundTrips(b, contenderDefs, cfg, ev, envelope.EncodedEventSize(ev)+64, replyLenCheck(8))
}

// BenchmarkContendersInFlight is an async handler that awaits a 1 ms timer (demo.sleep;
// go-pool and go-direct: time.Sleep) with 10,000 events in flight: one op is a batch of
// 10,000 events, each started on a goroutine of its own at once, and the op ends when all
// have completed. The rings and go-pool submit (rt.Submit, Receipt.Wait); direct holds an
// OS thread per event in flight. Figures are per event; os-threads is the peak OS thread
// count of the process during the batches.
func BenchmarkContendersInFlight(b *testing.B) {
	cfg := inFlightConfig(b)
	ev := contenderEvent(demoSleepType, payloadSize, map[string]string{"sleep_ms": "1"})
	check := replyLenCheck(0)
	baseline, err := osThreadCount()
	if err != nil {
		b.Fatal(err)
	}
	// direct needs a thread per event in flight, beyond Go's default limit of 10,000.
	limit := debug.SetMaxThreads(2*inFlightBatch + 1000)
	defer debug.SetMaxThreads(limit)
	for _, c := range contenderDefs {
		runContender(b, c.name, c.start, cfg, func(b *testing.B, s *session) {
			calls := make([]caller, inFlightBatch)
			for i := range calls {
				calls[i] = s.newCaller(check, inFlightBuf, true)
			}
			latencies := make([]time.Duration, inFlightBatch)
			hist := hdrhistogram.New(latencyMin, latencyMax, latencyDigits)
			var recErr error
			var fail firstFailure
			peak := watchThreadPeak(500 * time.Microsecond)
			w := beginCrossing(b, s)
			for range b.N {
				var wg sync.WaitGroup
				wg.Add(len(calls))
				for i, call := range calls {
					go func() {
						defer wg.Done()
						t0 := time.Now()
						if err := call(ev); err != nil {
							fail.set(err)
							return
						}
						latencies[i] = time.Since(t0)
					}()
				}
				wg.Wait()
				b.StopTimer()
				for _, d := range latencies {
					if err := hist.RecordValue(int64(d)); err != nil && recErr == nil {
						recErr = err
					}
				}
				b.StartTimer()
			}
			if err := fail.get(); err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			w.end(b, b.N*inFlightBatch, hist, recErr)
			threads, err := peak.finish()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(threads), "os-threads")
		})
		// Go keeps an idle OS thread for every call direct had blocked at once; end them, so
		// the contenders and benchmarks after this one do not inherit them.
		if c.name == "direct" {
			n, err := reapIdleThreads(baseline + 8)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("after direct: %d OS threads (%d before the benchmark)", n, baseline)
		}
	}
}

// TestContendersAgree checks that every contender runs the same handler: the same reply
// for the same event (the Go twins against the Rust handlers, byte for byte), and a 1 ms
// sleep that does take 1 ms.
func TestContendersAgree(t *testing.T) {
	cfg := roundTripConfig(t)
	cases := []struct {
		ev   *tandem.Event
		want []byte
	}{
		{contenderEvent(demoEchoType, 1<<10, nil), nil},
		{contenderEvent(demoHashType, hashPayloadSize, map[string]string{"rounds": strconv.Itoa(hashRounds)}), nil},
		{contenderEvent(demoSleepType, payloadSize, map[string]string{"sleep_ms": "1"}), []byte{}},
		{chainEvent(demoUpperType), nil},
		{contenderEvent(demoNoopType, payloadSize, nil), []byte{}},
	}
	cases[0].want = cases[0].ev.Data
	cases[1].want = twinHash(cases[1].ev)
	cases[3].want = bytes.ToUpper(cases[3].ev.Data)
	if bytes.Equal(cases[3].want, cases[3].ev.Data) {
		t.Fatal("the upper-case case has nothing to upper-case")
	}
	if bytes.Equal(cases[1].want, twinHash(contenderEvent(demoHashType, hashPayloadSize, nil))) {
		t.Fatal("rounds does not change the Go twin's hash")
	}
	for _, c := range contenderDefs {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.start(cfg)
			if skipUnavailable(t, err) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.close(); err != nil {
					t.Error(err)
				}
			}()
			for _, viaSubmit := range []bool{false, true} {
				var got []byte
				call := s.newCaller(func(reply []byte) error {
					got = append([]byte{}, reply...)
					return nil
				}, maxEnvelope, viaSubmit)
				for _, tc := range cases {
					t0 := time.Now()
					if err := call(tc.ev); err != nil {
						t.Fatalf("%s (submit %v): %v", tc.ev.Type, viaSubmit, err)
					}
					if !bytes.Equal(got, tc.want) {
						t.Errorf("%s (submit %v): reply %x, want %x", tc.ev.Type, viaSubmit, got, tc.want)
					}
					if tc.ev.Type == demoSleepType && time.Since(t0) < time.Millisecond {
						t.Errorf("%s (submit %v): took %v, less than its 1 ms timer", tc.ev.Type, viaSubmit, time.Since(t0))
					}
				}
			}
		})
	}
}
