package bench

import (
	"context"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

const (
	// noopType is the demo library's handler that acks at once with no reply: what is left
	// to measure is the boundary itself.
	noopType = "demo.noop"
	// noopInlineType is the same handler registered inline (run on the poller).
	noopInlineType = "demo.noop.inline"
	payloadSize    = 64

	// idleGap is the pause before each BenchmarkIdleWake op (4 spin windows if that is
	// longer), so both sides have parked on their eventfds when the op starts.
	idleGap = 2 * time.Millisecond

	// Latencies are recorded from 1 ns to a minute with 3 significant digits (0.1% error).
	latencyMin    = 1
	latencyMax    = int64(time.Minute)
	latencyDigits = 3
)

// spinEnv is the knob for the busy-poll window both sides use before they park: a Go
// duration ("0", "20us", "1ms"). Unset means the library default; 0 means park at once.
const spinEnv = "TANDEM_BENCH_SPIN"

// benchConfig is the runtime configuration every contender shares: the library defaults,
// with the spin window from TANDEM_BENCH_SPIN when it is set.
func benchConfig(tb testing.TB) tandem.Config {
	var cfg tandem.Config
	if s, ok := os.LookupEnv(spinEnv); ok && s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			tb.Fatalf("%s=%q: want a duration >= 0 such as 50us", spinEnv, s)
		}
		if d == 0 {
			d = -1 // Config reads 0 as "the default"; negative is its "park at once"
		}
		cfg.SpinWindow = d
	}
	return cfg
}

// describeSpin names the spin window cfg asks for, for the log.
func describeSpin(cfg tandem.Config) string {
	switch {
	case cfg.SpinWindow == 0:
		return "the library default"
	case cfg.SpinWindow < 0:
		return "none (park at once)"
	}
	return cfg.SpinWindow.String()
}

func newEvent() *tandem.Event {
	data := make([]byte, payloadSize)
	for i := range data {
		data[i] = byte(i)
	}
	return &tandem.Event{ID: "bench-1", Source: "/bench", Type: noopType, Data: data}
}

func startRuntime(b *testing.B) *tandem.Runtime {
	b.Helper()
	rt, err := tandem.New(benchConfig(b))
	if err != nil {
		b.Fatalf("tandem.New: %v", err)
	}
	if err := rt.Start(); err != nil {
		b.Fatalf("Start: %v", err)
	}
	return rt
}

func shutdownRuntime(b *testing.B, rt *tandem.Runtime) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Shutdown(ctx); err != nil {
		b.Fatalf("Shutdown: %v", err)
	}
	if s := rt.Stats(); s.Violations != 0 || s.Rust.Violations != 0 {
		b.Fatalf("ownership violations: go %d, rust %d", s.Violations, s.Rust.Violations)
	}
}

// contender runs fn as sub-benchmark name on a runtime of its own, created on the first
// call of the sub-benchmark (not once per b.N round) and shut down after its last.
// A nil runtime is passed when withRuntime is false.
func contender(b *testing.B, name string, withRuntime bool, fn func(b *testing.B, rt *tandem.Runtime)) {
	var rt *tandem.Runtime
	b.Run(name, func(b *testing.B) {
		if withRuntime && rt == nil {
			rt = startRuntime(b)
		}
		fn(b, rt)
	})
	if rt != nil {
		shutdownRuntime(b, rt)
	}
}

// nativeContender runs fn as sub-benchmark name on a native runtime of its own (the direct
// contender's and the wake probe's, made through the C ABI), created on the first call of the
// sub-benchmark and closed after its last. Without cgo the sub-benchmark is skipped.
func nativeContender(b *testing.B, name string, fn func(b *testing.B, n *nativeRuntime)) {
	var n *nativeRuntime
	var startErr error
	b.Run(name, func(b *testing.B) {
		if n == nil && startErr == nil {
			n, startErr = newNativeRuntime(benchConfig(b))
		}
		if skipUnavailable(b, startErr) {
			return
		}
		if startErr != nil {
			b.Fatal(startErr)
		}
		fn(b, n)
	})
	if n != nil {
		if err := n.close(); err != nil {
			b.Fatalf("%s: closing: %v", name, err)
		}
	}
}

// recorder is one goroutine's latency histogram and scratch space, made before the timer
// starts so the timed loop allocates nothing of its own.
type recorder struct {
	hist *hdrhistogram.Histogram
	env  []byte // the direct contender's envelope buffer
	dst  []byte // and its reply buffer
	err  error
}

func newRecorder() *recorder {
	return &recorder{
		hist: hdrhistogram.New(latencyMin, latencyMax, latencyDigits),
		env:  make([]byte, 0, 1<<10),
		dst:  make([]byte, 0, 1<<10),
	}
}

// direct is one round trip of the direct contender: ev encoded into the recorder's buffer and
// run by one tandem_bench_invoke.
func (r *recorder) direct(n *nativeRuntime, ev *tandem.Event) error {
	env, err := envelope.AppendEvent(r.env[:0], ev)
	if err != nil {
		return err
	}
	r.env = env[:0]
	_, err = n.invoke(env, r.dst)
	return err
}

func (r *recorder) record(d time.Duration) {
	if err := r.hist.RecordValue(int64(d)); err != nil && r.err == nil {
		r.err = err
	}
}

// recorders hands one recorder to each goroutine of b.RunParallel.
type recorders struct {
	all  []*recorder
	next atomic.Int32
}

func newRecorders(parallelism int) *recorders {
	// RunParallel starts parallelism × GOMAXPROCS goroutines.
	rs := &recorders{all: make([]*recorder, parallelism*runtime.GOMAXPROCS(0))}
	for i := range rs.all {
		rs.all[i] = newRecorder()
	}
	return rs
}

func (rs *recorders) take() *recorder { return rs.all[rs.next.Add(1)-1] }

// merged is every goroutine's histogram in one, or the first error a goroutine met.
func (rs *recorders) merged() (*hdrhistogram.Histogram, error) {
	h := hdrhistogram.New(latencyMin, latencyMax, latencyDigits)
	for _, r := range rs.all {
		if r.err != nil {
			return nil, r.err
		}
		h.Merge(r.hist)
	}
	return h, nil
}

// window is the measured part of a sub-benchmark: FFI calls and the runtime's wake and
// park counters are read on both sides of it, outside the timer.
type window struct {
	rt     *tandem.Runtime
	native *nativeRuntime
	stats  tandem.Stats
	ffi    uint64
}

// begin reads the counters of rt (nil for none) and resets the timer and the allocation
// counts.
func begin(b *testing.B, rt *tandem.Runtime) window {
	b.ReportAllocs()
	w := window{rt: rt}
	if rt != nil {
		w.stats = rt.Stats()
		// Stats read FFICalls before its own FFI call, which reads Rust's counters.
		w.ffi = w.stats.FFICalls + 1
	}
	b.ResetTimer()
	return w
}

// beginNative is begin for a native runtime, whose FFI calls bench makes and counts itself.
func beginNative(b *testing.B, n *nativeRuntime) window {
	b.ReportAllocs()
	w := window{native: n, ffi: n.counts().calls}
	b.ResetTimer()
	return w
}

// end stops the timer and reports ffi-calls/op, events/s, p50-ns and p99-ns, and for a
// runtime how often per op the Rust poller was woken and the Go poller parked.
func (w window) end(b *testing.B, hist *hdrhistogram.Histogram, err error) {
	b.StopTimer()
	var ffi uint64
	var st tandem.Stats
	switch {
	case w.native != nil:
		ffi = w.native.counts().calls - w.ffi
	case w.rt != nil:
		st = w.rt.Stats()
		ffi = st.FFICalls - w.ffi
	}
	if err != nil {
		b.Fatalf("recording a latency: %v", err)
	}
	n := float64(b.N)
	b.ReportMetric(float64(ffi)/n, "ffi-calls/op")
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(n/s, "events/s")
	}
	b.ReportMetric(float64(hist.ValueAtQuantile(50)), "p50-ns")
	b.ReportMetric(float64(hist.ValueAtQuantile(99)), "p99-ns")
	if w.rt != nil {
		b.ReportMetric(float64(st.RustWakeups-w.stats.RustWakeups)/n, "rust-wakes/op")
		b.ReportMetric(float64(st.GoParks-w.stats.GoParks)/n, "go-parks/op")
	}
}

// BenchmarkRoundTrip is one request/reply to a no-op Rust handler with a 64 B payload,
// by each way of crossing: the shared rings (rt.Call) and one blocking FFI call per event
// (the direct contender, tandem_bench_invoke; it needs cgo), from one goroutine and from
// GOMAXPROCS goroutines.
func BenchmarkRoundTrip(b *testing.B) {
	b.Logf("spin window: %s; GOMAXPROCS %d", describeSpin(benchConfig(b)), runtime.GOMAXPROCS(0))
	ctx := context.Background()
	parallelism := []struct {
		name string
		n    int
	}{{"parallel", 1}, {"wide", 32}}

	// The same no-op handler registered two ways: as a task per event, and inline on the
	// poller (register_inline), which runs it until its first await without a task.
	for _, handler := range []struct{ name, typ string }{{"task", noopType}, {"inline", noopInlineType}} {
		ev := newEvent()
		ev.Type = handler.typ
		contender(b, "rings/"+handler.name+"/serial", true, func(b *testing.B, rt *tandem.Runtime) {
			rec := newRecorder()
			w := begin(b, rt)
			for range b.N {
				t0 := time.Now()
				reply, err := rt.Call(ctx, ev)
				if err != nil {
					b.Fatalf("Call: %v", err)
				}
				reply.Release()
				rec.record(time.Since(t0))
			}
			w.end(b, rec.hist, rec.err)
		})
		for _, par := range parallelism {
			contender(b, "rings/"+handler.name+"/"+par.name, true, func(b *testing.B, rt *tandem.Runtime) {
				rs := newRecorders(par.n)
				w := begin(b, rt)
				b.SetParallelism(par.n)
				b.RunParallel(func(pb *testing.PB) {
					rec := rs.take()
					for pb.Next() {
						t0 := time.Now()
						reply, err := rt.Call(ctx, ev)
						if err != nil {
							b.Errorf("Call: %v", err)
							return
						}
						reply.Release()
						rec.record(time.Since(t0))
					}
				})
				hist, err := rs.merged()
				w.end(b, hist, err)
			})
		}
	}

	ev := newEvent()
	nativeContender(b, "direct/serial", func(b *testing.B, n *nativeRuntime) {
		rec := newRecorder()
		w := beginNative(b, n)
		for range b.N {
			t0 := time.Now()
			if err := rec.direct(n, ev); err != nil {
				b.Fatalf("direct: %v", err)
			}
			rec.record(time.Since(t0))
		}
		w.end(b, rec.hist, rec.err)
	})
	for _, par := range parallelism {
		nativeContender(b, "direct/"+par.name, func(b *testing.B, n *nativeRuntime) {
			rs := newRecorders(par.n)
			w := beginNative(b, n)
			b.SetParallelism(par.n)
			b.RunParallel(func(pb *testing.PB) {
				rec := rs.take()
				for pb.Next() {
					t0 := time.Now()
					if err := rec.direct(n, ev); err != nil {
						b.Errorf("direct: %v", err)
						return
					}
					rec.record(time.Since(t0))
				}
			})
			hist, err := rs.merged()
			w.end(b, hist, err)
		})
	}
}

// BenchmarkSubmit isolates the Go side's submit path and its allocations:
//   - submit: rt.Submit alone, acks never waited on; its latency is the Go path (p50) and
//     back-pressure once every request slot is in flight (p99). It allocates its *Receipt by design.
//   - submit+wait: rt.Submit then Receipt.Wait, a round trip through the Receipt.
//   - call: rt.Call and Release, whose waiters are pooled: 0 allocs/op is the contract.
func BenchmarkSubmit(b *testing.B) {
	ev := newEvent()
	ctx := context.Background()

	contender(b, "submit", true, func(b *testing.B, rt *tandem.Runtime) {
		rec := newRecorder()
		w := begin(b, rt)
		for range b.N {
			t0 := time.Now()
			if _, err := rt.Submit(ctx, ev); err != nil {
				b.Fatalf("Submit: %v", err)
			}
			rec.record(time.Since(t0))
		}
		w.end(b, rec.hist, rec.err)
		drain(b, rt) // so the next round does not start behind this one's backlog
	})

	contender(b, "submit+wait", true, func(b *testing.B, rt *tandem.Runtime) {
		rec := newRecorder()
		w := begin(b, rt)
		for range b.N {
			t0 := time.Now()
			ack, err := rt.Submit(ctx, ev)
			if err != nil {
				b.Fatalf("Submit: %v", err)
			}
			if err := ack.Wait(ctx); err != nil {
				b.Fatalf("Receipt.Wait: %v", err)
			}
			rec.record(time.Since(t0))
		}
		w.end(b, rec.hist, rec.err)
	})

	contender(b, "call", true, func(b *testing.B, rt *tandem.Runtime) {
		rec := newRecorder()
		w := begin(b, rt)
		for range b.N {
			t0 := time.Now()
			reply, err := rt.Call(ctx, ev)
			if err != nil {
				b.Fatalf("Call: %v", err)
			}
			reply.Release()
			rec.record(time.Since(t0))
		}
		w.end(b, rec.hist, rec.err)
	})
}

// drain waits, outside the timer, until every submitted event has completed.
func drain(b *testing.B, rt *tandem.Runtime) {
	deadline := time.Now().Add(10 * time.Second)
	for rt.Stats().InFlight > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d events still in flight after 10s", rt.Stats().InFlight)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// BenchmarkIdleWake is a round trip that starts with both sides parked: before each op the
// benchmark sleeps (timer stopped) long enough for the Go completion poller and the Rust
// poller to leave their spin windows and block on their eventfds. Without the crossing each
// op pays one wake each way; with it (docs/boundary.md), an inline handler's op wakes
// nobody: the caller runs the submission step and settles its own completion, and a task
// handler's op wakes a tokio worker and Go's poller. eventfd-pingpong-go is the floor for a
// wake each way in Go alone: two goroutines, each blocked in the netpoller on an eventfd of
// its own, wake each other once. The awake variants and direct tell what the gap costs a
// round trip apart from the wakes: the same gap spent with the caller's thread busy, and a
// direct call after either.
//
// Every op costs idleGap of wall time: run it with -benchtime=Nx (README.md).
func BenchmarkIdleWake(b *testing.B) {
	cfg := benchConfig(b)
	gap := max(idleGap, 4*cfg.SpinWindow)
	ctx := context.Background()

	// rings/inline/awake and direct/awake spend the same gap awake (the caller's thread
	// spinning on the clock, the timer stopped; both pollers park as before): what the gap
	// costs a round trip when its thread never sleeps, against what it costs when it does.
	for _, handler := range []struct {
		name, typ string
		awake     bool
	}{{"task", noopType, false}, {"inline", noopInlineType, false}, {"inline/awake", noopInlineType, true}} {
		ev := newEvent()
		ev.Type = handler.typ
		contender(b, "rings/"+handler.name, true, func(b *testing.B, rt *tandem.Runtime) {
			rec := newRecorder()
			w := begin(b, rt)
			for range b.N {
				b.StopTimer()
				pause(gap, handler.awake)
				b.StartTimer()
				t0 := time.Now()
				reply, err := rt.Call(ctx, ev)
				if err != nil {
					b.Fatalf("Call: %v", err)
				}
				reply.Release()
				rec.record(time.Since(t0))
			}
			w.end(b, rec.hist, rec.err)
		})
	}
	inline := newEvent()
	inline.Type = noopInlineType
	for _, awake := range []bool{false, true} {
		name := "direct"
		if awake {
			name += "/awake"
		}
		nativeContender(b, name, func(b *testing.B, n *nativeRuntime) {
			rec := newRecorder()
			w := beginNative(b, n)
			for range b.N {
				b.StopTimer()
				pause(gap, awake)
				b.StartTimer()
				t0 := time.Now()
				if err := rec.direct(n, inline); err != nil {
					b.Fatalf("direct: %v", err)
				}
				rec.record(time.Since(t0))
			}
			w.end(b, rec.hist, rec.err)
		})
	}

	// The floor under "rings": a bare eventfd ping-pong between this goroutine and a tokio
	// task of a runtime (tandem_bench_wake_probe; it needs cgo), both sides parked before each
	// round.
	nativeContender(b, "eventfd-pingpong-go-rust", func(b *testing.B, n *nativeRuntime) {
		rec := newRecorder()
		w := beginNative(b, n)
		samples, err := n.wakeProbe(b.N, gap)
		if err != nil {
			b.Fatalf("wake probe: %v", err)
		}
		for _, d := range samples {
			rec.record(d)
		}
		w.end(b, rec.hist, rec.err)
	})

	contender(b, "eventfd-pingpong-go", false, func(b *testing.B, _ *tandem.Runtime) {
		pp, err := newPingPong()
		if err != nil {
			b.Fatal(err)
		}
		defer pp.close()
		rec := newRecorder()
		var buf [8]byte
		w := begin(b, nil)
		for range b.N {
			b.StopTimer()
			time.Sleep(gap)
			b.StartTimer()
			t0 := time.Now()
			if _, err := pp.ping.Write(eventfdOne[:]); err != nil {
				b.Fatalf("write ping: %v", err)
			}
			if _, err := pp.pong.Read(buf[:]); err != nil {
				b.Fatalf("read pong: %v", err)
			}
			rec.record(time.Since(t0))
		}
		w.end(b, rec.hist, rec.err)
	})
}

// pause returns after d: asleep, or awake with its thread kept busy on the clock all along.
func pause(d time.Duration, awake bool) {
	if !awake {
		time.Sleep(d)
		return
	}
	for t0 := time.Now(); time.Since(t0) < d; {
	}
}

// pingPong is an echo goroutine between two eventfds: it blocks reading ping and answers
// each read with a write to pong. Both fds are non-blocking and wrapped by os.NewFile, so a
// blocked reader is parked in the netpoller, the way tandem's completion poller waits.
type pingPong struct {
	ping, pong *os.File
	done       chan struct{}
}

func newPingPong() (*pingPong, error) {
	ping, err := newEventfd("ping")
	if err != nil {
		return nil, err
	}
	pong, err := newEventfd("pong")
	if err != nil {
		ping.Close()
		return nil, err
	}
	pp := &pingPong{ping: ping, pong: pong, done: make(chan struct{})}
	go pp.echo()
	return pp, nil
}

func (pp *pingPong) echo() {
	defer close(pp.done)
	var buf [8]byte
	for {
		if _, err := pp.ping.Read(buf[:]); err != nil {
			return // closed
		}
		if _, err := pp.pong.Write(eventfdOne[:]); err != nil {
			return
		}
	}
}

// close unblocks the echo goroutine's read (closing a pollable file wakes its readers),
// waits for it, then closes pong.
func (pp *pingPong) close() {
	pp.ping.Close()
	<-pp.done
	pp.pong.Close()
}
