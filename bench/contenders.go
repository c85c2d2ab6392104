package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// The contenders' scenarios run the demo library's Rust handlers and, for the pure Go
// contenders, their Go twins below: the same input, the same work, the same reply.
const (
	demoEchoType  = "demo.echo"        // replies with the payload (registered inline)
	demoHashType  = "demo.hash"        // FNV-1a of the payload, folded `rounds` times (a task per event)
	demoSleepType = "demo.sleep"       // awaits a `sleep_ms` timer, then acks (inline until its await)
	demoUpperType = "demo.upper"       // replies with the payload's ASCII letters upper-cased (inline)
	demoNoopType  = "demo.noop.inline" // acks with no reply (inline): the open loop's handler

	// hashRounds folds a 1 KiB payload's FNV-1a 20 times: about 20 µs of CPU per event on
	// the 2-vCPU VM of docs/benchmarks.md (~1 ns per byte, in Go and in Rust alike).
	hashRounds      = 20
	hashPayloadSize = 1 << 10

	// goTypePrefix names the Go routes of the go-pool contender: "bench.go.echo" is
	// demo.echo's twin.
	goTypePrefix = "bench.go."
)

// twinWork is the Go twin of a demo Rust handler: it does the same work on a decoded event
// and returns the same reply.
type twinWork func(ev *tandem.Event) []byte

// goTwins maps each demo Rust handler the contenders call to its Go twin.
var goTwins = map[string]twinWork{
	demoEchoType:  twinEcho,
	demoHashType:  twinHash,
	demoSleepType: twinSleep,
	demoUpperType: twinUpper,
	demoNoopType:  twinNoop,
}

// twinEcho replies with the payload. DecodeEvent already copied it, as demo.echo copies
// its borrowed payload into the reply.
func twinEcho(ev *tandem.Event) []byte { return ev.Data }

// twinUpper is demo.upper: a copy of the payload with its ASCII letters upper-cased.
func twinUpper(ev *tandem.Event) []byte {
	out := make([]byte, len(ev.Data))
	for i, c := range ev.Data {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// twinNoop is demo.noop: it acks with no reply.
func twinNoop(*tandem.Event) []byte { return nil }

// twinHash is demo.hash: the 64-bit FNV-1a of the payload, folded `rounds` times (default 1),
// as 8 big-endian bytes.
func twinHash(ev *tandem.Event) []byte {
	rounds := 1
	if r, err := strconv.ParseUint(ev.Extensions["rounds"], 10, 32); err == nil && r > 0 {
		rounds = int(r)
	}
	h := uint64(0xcbf29ce484222325)
	for range rounds {
		for _, c := range ev.Data {
			h ^= uint64(c)
			h *= 0x100000001b3
		}
	}
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), h)
}

// twinSleep is demo.sleep: it waits `sleep_ms` milliseconds (default 1), then acks.
func twinSleep(ev *tandem.Event) []byte {
	ms := uint64(1)
	if v, err := strconv.ParseUint(ev.Extensions["sleep_ms"], 10, 32); err == nil {
		ms = v
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return nil
}

// goTwinRoute is the Go route type of the Rust handler type typ, for the go-pool contender.
func goTwinRoute(typ string) string { return goTypePrefix + typ[len("demo."):] }

// twinRouteHandler is the go-pool contender's route handler: the event it is given carries
// the encoded envelope as its data (what every other contender moves across), so the
// handler decodes it, as a Rust handler's runtime does, before doing the work.
func twinRouteHandler(work twinWork) tandem.HandlerFunc {
	return func(_ context.Context, carrier *tandem.Event) tandem.Result {
		ev, err := envelope.DecodeEvent(carrier.Data)
		if err != nil {
			return tandem.Term(tandem.Errorf("decode", "%v", err))
		}
		return tandem.AckReply(work(ev))
	}
}

// contenderEvent is a contender scenario's event: type typ, a payload of size bytes
// (0, 1, 2, ... mod 256) and the given extensions.
func contenderEvent(typ string, size int, ext map[string]string) *tandem.Event {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i)
	}
	return &tandem.Event{ID: "bench-1", Source: "/bench", Type: typ, Extensions: ext, Data: data}
}

// errNeedsCgo is why the direct and callback contenders and the wake probe are skipped: they
// call bench-only exports of the library through cgo (native_cgo.go).
var errNeedsCgo = errors.New("needs cgo: it calls the library's bench-only exports (built without cgo or with -tags tandem_purego)")

// nativeCounts is how often the direct and callback contenders crossed the boundary: calls
// from Go into Rust, and callbacks from Rust (a tokio worker) into Go.
type nativeCounts struct {
	calls, callbacks uint64
}

// replyLenCheck is the check a benchmark makes on every reply, in place (the rings' reply is
// only readable until it is released): its length.
func replyLenCheck(want int) func(reply []byte) error {
	return func(reply []byte) error {
		if len(reply) != want {
			return fmt.Errorf("reply of %d bytes, want %d", len(reply), want)
		}
		return nil
	}
}

// firstFailure keeps the first error any goroutine reports.
type firstFailure struct {
	mu  sync.Mutex
	err error
}

func (f *firstFailure) set(err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstFailure) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// osThreadCount is this process's OS thread count (Threads: in /proc/self/status).
func osThreadCount() (int, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("Threads:")); ok {
			return strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("/proc/self/status has no Threads line")
}

// threadPeak records the peak OS thread count while it runs, polling every period.
type threadPeak struct {
	stop chan struct{}
	done chan struct{}
	peak int
	err  error
}

func watchThreadPeak(period time.Duration) *threadPeak {
	s := &threadPeak{stop: make(chan struct{}), done: make(chan struct{})}
	s.peak, s.err = osThreadCount()
	go func() {
		defer close(s.done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				n, err := osThreadCount()
				if err != nil {
					s.err = err
					return
				}
				s.peak = max(s.peak, n)
			}
		}
	}()
	return s
}

// finish stops the sampler and returns the peak it saw, including a last sample.
func (s *threadPeak) finish() (int, error) {
	close(s.stop)
	<-s.done
	if s.err != nil {
		return 0, s.err
	}
	n, err := osThreadCount()
	if err != nil {
		return 0, err
	}
	return max(s.peak, n), nil
}

// reapIdleThreads ends idle OS threads of the Go runtime until the process is back to about
// target threads: each round runs a goroutine that locks its thread and exits, which ends
// that thread. Go keeps an idle thread for every goroutine that was ever blocked in a cgo
// call at the same time as the others, so after the direct contender's 10,000 concurrent
// calls it holds hundreds; the benchmarks after it should not inherit them.
func reapIdleThreads(target int) (int, error) {
	n, err := osThreadCount()
	for err == nil && n > target {
		batch := min(n-target, 256)
		var wg sync.WaitGroup
		for range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			}()
		}
		wg.Wait()
		before := n
		if n, err = osThreadCount(); err == nil && n >= before {
			// A goroutine's thread exits only after its deferred calls; give it a moment.
			time.Sleep(time.Millisecond)
			if n, err = osThreadCount(); err == nil && n >= before {
				return n, nil // nothing more to reap
			}
		}
	}
	return n, err
}

// The contenders: every way this suite knows of getting an event from a goroutine to a
// handler and its reply back, each carrying the same envelope (CBOR, encoded by tandem's Go
// encoder) with the same payload, so the codec is paid by everyone.
//
//   - rings: rt.Call over tandem's shared rings (0 FFI calls per event); demo.echo and
//     demo.sleep are registered inline, demo.hash as a task per event.
//   - direct: one cgo call per event that block_on's the handler on tokio (native_cgo.go);
//     the calling OS thread is held until the handler finishes. Needs cgo: skipped in the
//     purego mode.
//   - callback: one cgo call per event that spawns the handler on tokio and returns; the
//     tokio worker that finishes it calls back into Go (native_cgo.go), which wakes the
//     caller through a channel. Needs cgo: skipped in the purego mode.
//   - go-pool: the same handler written in Go, behind tandem's own Go route (rt.Handle, a
//     goroutine pool), called with rt.Call. The caller encodes the envelope and the route's
//     handler decodes it, as the Rust side does.
//   - go-direct: encode, envelope.DecodeEvent and the Go handler inline on the caller's
//     goroutine: no runtime, no pool, no hand-off. The floor.
var contenderDefs = []contenderDef{
	{"rings", startRings},
	{"direct", startDirect},
	{"callback", startCallback},
	{"go-pool", startGoPool},
	{"go-direct", startGoDirect},
}

// contenderDef is a contender by name, and how to set it up for one sub-benchmark.
type contenderDef struct {
	name  string
	start func(cfg tandem.Config) (*session, error)
}

// caller is one goroutine's way to make one request/reply with a contender; it runs check
// on the reply in place and returns its error. Not safe for concurrent use: every goroutine
// gets its own.
type caller func(ev *tandem.Event) error

// session is one contender set up for one sub-benchmark: its runtime, if it has one, and
// its counters.
type session struct {
	rt     *tandem.Runtime
	native *nativeRuntime
	// stop, if set, tears down what the session started instead (the sidecar's process).
	stop func() error
	// newCaller makes a caller whose scratch buffers hold bufSize bytes; viaSubmit asks the
	// contenders with an asynchronous API (rings, go-pool) for rt.Submit and Receipt.Wait
	// instead of rt.Call.
	newCaller func(check func([]byte) error, bufSize int, viaSubmit bool) caller
}

// crossings returns the FFI calls into Rust and the callbacks from Rust into Go so far.
// Reading a runtime's count costs one FFI call, made after it is counted (Stats reads Rust's
// counters): the later of two readings counts the earlier's, readCalls of them.
func (s *session) crossings() (calls, callbacks uint64) {
	if s.native != nil {
		c := s.native.counts()
		return c.calls, c.callbacks
	}
	if s.rt != nil {
		return s.rt.Stats().FFICalls, 0
	}
	return 0, 0
}

// readCalls is the FFI calls one crossings reading makes.
func (s *session) readCalls() uint64 {
	if s.native == nil && s.rt != nil {
		return 1
	}
	return 0
}

func (s *session) close() error {
	if s.stop != nil {
		return s.stop()
	}
	if s.native != nil {
		return s.native.close()
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
	n, err := newNativeRuntime(cfg)
	if err != nil {
		return nil, err
	}
	return &session{native: n, newCaller: func(check func([]byte) error, bufSize int, _ bool) caller {
		env := make([]byte, 0, bufSize)
		dst := make([]byte, 0, bufSize)
		return func(ev *tandem.Event) error {
			var err error
			if env, err = envelope.AppendEvent(env[:0], ev); err != nil {
				return err
			}
			out, err := n.invoke(env, dst)
			if err != nil {
				return err
			}
			if cap(out) > cap(dst) {
				dst = out[:0] // a reply outgrew dst: keep the larger buffer
			}
			return check(out)
		}
	}}, nil
}

func startCallback(cfg tandem.Config) (*session, error) {
	n, err := newNativeRuntime(cfg)
	if err != nil {
		return nil, err
	}
	return &session{native: n, newCaller: func(check func([]byte) error, bufSize int, _ bool) caller {
		env := make([]byte, 0, bufSize)
		dst := make([]byte, 0, bufSize)
		return func(ev *tandem.Event) error {
			var err error
			if env, err = envelope.AppendEvent(env[:0], ev); err != nil {
				return err
			}
			out, err := n.spawnCall(env, dst)
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
			if env, err = envelope.AppendEvent(env[:0], ev); err != nil {
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
			if env, err = envelope.AppendEvent(env[:0], ev); err != nil {
				return err
			}
			dec, err := envelope.DecodeEvent(env)
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

// eventfdOne is an eventfd increment of 1, in host byte order (little-endian on amd64
// and arm64, the platforms tandem builds for).
var eventfdOne = [8]byte{1}

// newEventfd makes a non-blocking, close-on-exec eventfd wrapped by os.NewFile, so a reader
// blocked on it is parked in the netpoller, the way tandem's completion poller waits.
func newEventfd(name string) (*os.File, error) {
	fd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return nil, os.NewSyscallError("eventfd2", errno)
	}
	// os.NewFile registers a non-blocking fd with the netpoller.
	return os.NewFile(fd, "eventfd-"+name), nil
}
