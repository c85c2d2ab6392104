package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tandemrt/tandem/go/tandem"
)

// The contenders: every way this suite knows of getting an event from a goroutine to a
// handler and its reply back, each carrying the same envelope (CBOR, encoded by tandem's Go
// encoder) with the same payload, so the codec is paid by everyone.
//
//   - rings: rt.Call over tandem's shared rings (0 FFI calls per event); demo.echo and
//     demo.sleep are registered inline, demo.hash as a task per event.
//   - direct: rt.CallDirect, one cgo call per event that block_on's the handler on tokio;
//     the calling OS thread is held until the handler finishes.
//   - callback: one cgo call per event that spawns the handler on tokio and returns; the
//     tokio worker that finishes it calls back into Go (callback_cgo.go), which wakes the
//     caller through a channel. Needs cgo: skipped in the purego mode.
//   - go-pool: the same handler written in Go, behind tandem's own Go route (rt.Handle, a
//     goroutine pool), called with rt.Call. The caller encodes the envelope and the route's
//     handler decodes it, as the Rust side does.
//   - go-direct: encode, tandem.DecodeEvent and the Go handler inline on the caller's
//     goroutine: no runtime, no pool, no hand-off. The floor.
var contenderDefs = []struct {
	name  string
	start func(cfg tandem.Config) (*session, error)
}{
	{"rings", startRings},
	{"direct", startDirect},
	{"callback", startCallback},
	{"go-pool", startGoPool},
	{"go-direct", startGoDirect},
}

// caller is one goroutine's way to make one request/reply with a contender; it runs check
// on the reply in place and returns its error. Not safe for concurrent use: every goroutine
// gets its own.
type caller func(ev *tandem.Event) error

// session is one contender set up for one sub-benchmark: its runtime, if it has one, and
// its counters.
type session struct {
	rt *tandem.Runtime
	cb *callbackRuntime
	// newCaller makes a caller whose scratch buffers hold bufSize bytes; viaSubmit asks the
	// contenders with an asynchronous API (rings, go-pool) for rt.Submit and Receipt.Wait
	// instead of rt.Call.
	newCaller func(check func([]byte) error, bufSize int, viaSubmit bool) caller
}

// crossings returns the FFI calls into Rust and the callbacks from Rust into Go so far.
func (s *session) crossings() (calls, callbacks uint64) {
	if s.cb != nil {
		c := s.cb.counts()
		return c.calls, c.callbacks
	}
	return tandem.FFICalls(), 0
}

func (s *session) close() error {
	if s.cb != nil {
		return s.cb.close()
	}
	if s.rt == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.rt.Shutdown(ctx); err != nil {
		return err
	}
	if st := s.rt.Stats(); st.Violations != 0 || st.Rust.Violations != 0 {
		return fmt.Errorf("ownership violations: go %d, rust %d", st.Violations, st.Rust.Violations)
	}
	return nil
}

func startedRuntime(cfg tandem.Config, register func(*tandem.Runtime) error) (*tandem.Runtime, error) {
	rt, err := tandem.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("tandem.New: %w", err)
	}
	if register != nil {
		if err := register(rt); err != nil {
			return nil, err
		}
	}
	if err := rt.Start(); err != nil {
		return nil, fmt.Errorf("Start: %w", err)
	}
	return rt, nil
}

func startRings(cfg tandem.Config) (*session, error) {
	rt, err := startedRuntime(cfg, nil)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	return &session{rt: rt, newCaller: func(check func([]byte) error, _ int, viaSubmit bool) caller {
		if viaSubmit {
			return func(ev *tandem.Event) error {
				r, err := rt.Submit(ctx, ev)
				if err != nil {
					return err
				}
				if err := r.Wait(ctx); err != nil {
					return err
				}
				return check(r.Reply())
			}
		}
		return func(ev *tandem.Event) error {
			reply, err := rt.Call(ctx, ev)
			if err != nil {
				return err
			}
			err = check(reply.Data())
			reply.Release()
			return err
		}
	}}, nil
}

func startDirect(cfg tandem.Config) (*session, error) {
	rt, err := startedRuntime(cfg, nil)
	if err != nil {
		return nil, err
	}
	// CallDirect wants a buffer of MaxReplySize, or it allocates one per call.
	replySize := cfg.MaxReplySize
	return &session{rt: rt, newCaller: func(check func([]byte) error, _ int, _ bool) caller {
		dst := make([]byte, 0, replySize)
		return func(ev *tandem.Event) error {
			out, err := rt.CallDirect(ev, dst)
			if err != nil {
				return err
			}
			dst = out[:0]
			return check(out)
		}
	}}, nil
}

func startCallback(cfg tandem.Config) (*session, error) {
	cb, err := newCallbackRuntime(cfg)
	if err != nil {
		return nil, err
	}
	return &session{cb: cb, newCaller: func(check func([]byte) error, bufSize int, _ bool) caller {
		env := make([]byte, 0, bufSize)
		dst := make([]byte, 0, bufSize)
		return func(ev *tandem.Event) error {
			var err error
			if env, err = tandem.AppendEvent(env[:0], ev); err != nil {
				return err
			}
			out, err := cb.call(env, dst)
			if err != nil {
				return err
			}
			dst = out[:0]
			return check(out)
		}
	}}, nil
}

func startGoPool(cfg tandem.Config) (*session, error) {
	rt, err := startedRuntime(cfg, func(rt *tandem.Runtime) error {
		for typ, work := range goTwins {
			opts := []tandem.RouteOption(nil)
			if typ == demoSleepType {
				// A handler that waits gets a goroutine per event in flight, as Go would
				// do it; the default pool (4 × GOMAXPROCS workers) would cap it at 8 ms⁻¹.
				opts = append(opts, tandem.WithWorkers(runtime.GOMAXPROCS(0), inFlightBatch+1024),
					tandem.WithQueue(inFlightBatch+1024))
			}
			if err := rt.Handle(goTwinRoute(typ), "twin-"+typ, twinRouteHandler(work), opts...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	return &session{rt: rt, newCaller: func(check func([]byte) error, bufSize int, viaSubmit bool) caller {
		env := make([]byte, 0, bufSize)
		var carrier tandem.Event
		return func(ev *tandem.Event) error {
			var err error
			if env, err = tandem.AppendEvent(env[:0], ev); err != nil {
				return err
			}
			carrier = tandem.Event{ID: ev.ID, Source: ev.Source, Type: goTwinRoute(ev.Type), Data: env}
			if viaSubmit {
				r, err := rt.Submit(ctx, &carrier)
				if err != nil {
					return err
				}
				if err := r.Wait(ctx); err != nil {
					return err
				}
				return check(r.Reply())
			}
			reply, err := rt.Call(ctx, &carrier)
			if err != nil {
				return err
			}
			err = check(reply.Data())
			reply.Release()
			return err
		}
	}}, nil
}

func startGoDirect(tandem.Config) (*session, error) {
	return &session{newCaller: func(check func([]byte) error, bufSize int, _ bool) caller {
		env := make([]byte, 0, bufSize)
		return func(ev *tandem.Event) error {
			var err error
			if env, err = tandem.AppendEvent(env[:0], ev); err != nil {
				return err
			}
			dec, err := tandem.DecodeEvent(env)
			if err != nil {
				return err
			}
			work := goTwins[dec.Type]
			if work == nil {
				return fmt.Errorf("no Go twin of %q", dec.Type)
			}
			return check(work(dec))
		}
	}}, nil
}

const (
	// maxPayload is the largest payload of the round-trip scenarios; the runtimes of those
	// scenarios take envelopes and replies up to maxEnvelope.
	maxPayload  = 64 << 10
	maxEnvelope = 128 << 10

	// inFlightBatch is the batch of BenchmarkContendersInFlight: events in flight at once.
	inFlightBatch = 10_000
	// inFlightBuf sizes the 1 ms scenario's envelopes, replies and buffers (its payload is 64 B).
	inFlightBuf = 1 << 10
)

// roundTripConfig is benchConfig with room for a 64 KiB payload in its envelope and reply.
func roundTripConfig(tb testing.TB) tandem.Config {
	cfg := benchConfig(tb)
	cfg.MaxEventSize, cfg.MaxReplySize = maxEnvelope, maxEnvelope
	return cfg
}

// inFlightConfig is benchConfig with request slots for every event of a batch in flight at
// once, and small slots (the events are 64 B): CallDirect needs a reply buffer of
// MaxReplySize per caller, and 10,000 callers are in flight.
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
		if errors.Is(startErr, errNoCallback) {
			b.Skip(startErr)
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
// of ev for every contender, each reply checked by check.
func roundTrips(b *testing.B, cfg tandem.Config, ev *tandem.Event, bufSize int, check func([]byte) error) {
	for _, c := range contenderDefs {
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
			roundTrips(b, cfg, ev, tandem.EncodedEventSize(ev)+size.n, replyLenCheck(size.n))
		})
	}
}

// BenchmarkContendersHash is a round trip to a CPU-bound handler: demo.hash folds the FNV-1a
// of a 1 KiB payload hashRounds times (~20 µs) and replies with 8 bytes.
func BenchmarkContendersHash(b *testing.B) {
	cfg := roundTripConfig(b)
	ev := contenderEvent(demoHashType, hashPayloadSize, map[string]string{"rounds": strconv.Itoa(hashRounds)})
	roundTrips(b, cfg, ev, tandem.EncodedEventSize(ev)+64, replyLenCheck(8))
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
	}
	cases[0].want = cases[0].ev.Data
	cases[1].want = twinHash(cases[1].ev)
	if bytes.Equal(cases[1].want, twinHash(contenderEvent(demoHashType, hashPayloadSize, nil))) {
		t.Fatal("rounds does not change the Go twin's hash")
	}
	for _, c := range contenderDefs {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.start(cfg)
			if errors.Is(err, errNoCallback) {
				t.Skip(err)
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
