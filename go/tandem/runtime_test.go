package tandem

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

func TestMain(m *testing.M) {
	// The purego mode loads the cdylib ./build.sh builds; the cgo mode ignores this.
	if os.Getenv("TANDEM_LIB") == "" {
		if p, err := filepath.Abs("../../target/release/libtandem_native.so"); err == nil {
			os.Setenv("TANDEM_LIB", p)
		}
	}
	goleak.VerifyTestMain(m)
}

func newRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	rt, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := rt.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return rt
}

func event(typ, id string, data []byte) *Event {
	return &Event{ID: id, Source: "/test", Type: typ, Data: data}
}

// shutdownClean shuts rt down and asserts that every buffer came back to its owner exactly
// once: no request slot held by Rust, no reply slot lent, no protocol violation, all
// submitted events completed.
func shutdownClean(t *testing.T, rt *Runtime) Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	s := rt.Stats()
	if s.Rust.RequestsHeld != 0 || s.Rust.RepliesLent != 0 {
		t.Errorf("Rust still holds buffers after Shutdown: requests %d, replies %d", s.Rust.RequestsHeld, s.Rust.RepliesLent)
	}
	if s.Rust.CallsPending != 0 || s.Rust.CallRepliesHeld != 0 {
		t.Errorf("Rust calls outstanding after Shutdown: pending %d, replies held %d", s.Rust.CallsPending, s.Rust.CallRepliesHeld)
	}
	if s.Violations != 0 || s.Rust.Violations != 0 {
		t.Errorf("ownership violations: go %d, rust %d", s.Violations, s.Rust.Violations)
	}
	if s.FreeRequestSlots != rt.cfg.MaxInFlight || s.RepliesHeld != 0 || s.InFlight != 0 {
		t.Errorf("Go side not whole: free slots %d of %d, replies held %d, in flight %d",
			s.FreeRequestSlots, rt.cfg.MaxInFlight, s.RepliesHeld, s.InFlight)
	}
	if s.Submitted != s.Completed || s.Rust.Received != s.ToRust {
		t.Errorf("submitted %d, completed %d; published to Rust %d, Rust received %d", s.Submitted, s.Completed, s.ToRust, s.Rust.Received)
	}
	if s.Rust.Releases != s.Rust.Completed-(s.Rust.Completed-s.Rust.Releases) {
		t.Errorf("inconsistent release count %+v", s.Rust)
	}
	if rt.State() != Stopped {
		t.Errorf("state after Shutdown = %s", rt.State())
	}
	return s
}

func TestCallEchoReturnsPayloadInPlace(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	for i := range 100 {
		payload := []byte(fmt.Sprintf("payload-%d", i))
		reply, err := rt.Call(ctx, event("demo.echo", fmt.Sprint(i), payload))
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if !bytes.Equal(reply.Data(), payload) {
			t.Fatalf("reply %q, want %q", reply.Data(), payload)
		}
		reply.Release()
		reply.Release() // a second Release does nothing
	}
	s := shutdownClean(t, rt)
	if s.Rust.Releases != 100 {
		t.Errorf("Rust saw %d reply releases, want 100 (one per reply)", s.Rust.Releases)
	}
}

func TestHandlersComputeExpectedReplies(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	reply, err := rt.Call(ctx, event("demo.upper", "1", []byte("hello, tandem")))
	if err != nil || string(reply.Data()) != "HELLO, TANDEM" {
		t.Fatalf("upper = %q, %v", reply.Data(), err)
	}
	reply.Release()

	data := []byte("the quick brown fox")
	reply, err = rt.Call(ctx, event("demo.hash", "2", data))
	if err != nil {
		t.Fatal(err)
	}
	h := uint64(0xcbf29ce484222325)
	for _, b := range data {
		h ^= uint64(b)
		h *= 0x100000001b3
	}
	if got := binary.BigEndian.Uint64(reply.Data()); got != h {
		t.Fatalf("hash = %x, want FNV-1a %x", got, h)
	}
	reply.Release()

	reply, err = rt.Call(ctx, event("demo.noop", "3", nil))
	if err != nil || len(reply.Data()) != 0 {
		t.Fatalf("noop = %q, %v", reply.Data(), err)
	}
	reply.Release()
	shutdownClean(t, rt)
}

func TestSubmitManyGoroutinesEveryAckSettlesOnce(t *testing.T) {
	rt := newRuntime(t, Config{MaxInFlight: 64})
	ctx := context.Background()
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acks := make([]*Receipt, 0, each)
			for i := range each {
				typ := []string{"demo.noop", "demo.echo", "demo.hash"}[i%3]
				a, err := rt.Submit(ctx, event(typ, fmt.Sprintf("%d-%d", g, i), []byte("x")))
				if err != nil {
					errs <- err
					return
				}
				acks = append(acks, a)
			}
			for _, a := range acks {
				if err := a.Wait(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s := shutdownClean(t, rt)
	if s.Submitted != goroutines*each {
		t.Fatalf("submitted %d, want %d", s.Submitted, goroutines*each)
	}
}

func TestAckCopiesReply(t *testing.T) {
	rt := newRuntime(t, Config{})
	a, err := rt.Submit(context.Background(), event("demo.echo", "1", []byte("kept")))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(a.Reply()) != "kept" {
		t.Fatalf("Receipt.Reply = %q", a.Reply())
	}
	shutdownClean(t, rt)
	if string(a.Reply()) != "kept" {
		t.Fatal("Receipt's reply copy must outlive Shutdown")
	}
}

func TestHandlerFailuresArriveAsHandlerError(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRuntime(t, Config{Retry: retry.Backoff{MaxAttempts: 2, Initial: time.Millisecond}, DeadLetters: sink})
	ctx := context.Background()

	_, err := rt.Call(ctx, event("demo.fail", "1", []byte("term")))
	var he *HandlerError
	if !errors.As(err, &he) {
		t.Fatalf("term: err = %v, want *HandlerError", err)
	}
	if he.Outcome != OutcomeTerm || he.Retryable() || he.Code() != "invalid" || he.Envelope.Runtime != "rust" || he.Envelope.Handler != "fail" || he.EventType != "demo.fail" {
		t.Fatalf("term: %+v", he)
	}

	if he.DeadLetter != deadletter.ReasonTerm {
		t.Fatalf("term: dead letter reason %q", he.DeadLetter)
	}

	_, err = rt.Call(ctx, event("demo.fail", "2", []byte("retry")))
	if !errors.As(err, &he) || he.Outcome != OutcomeRetry || he.RetryAfter != 10*time.Millisecond || he.Code() != "unavailable" || he.DeadLetter != deadletter.ReasonMaxAttempts {
		t.Fatalf("retry: %v (%+v)", err, he)
	}
	s := shutdownClean(t, rt)
	if s.Retried != 1 || s.DeadLettered != 2 || len(sink.Records()) != 2 {
		t.Fatalf("retried %d, dead-lettered %d, sink %d", s.Retried, s.DeadLettered, len(sink.Records()))
	}
}

func TestHandlerPanicIsContained(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	for i := range 3 {
		_, err := rt.Call(ctx, event("demo.panic", fmt.Sprint(i), []byte("panic")))
		var he *HandlerError
		if !errors.As(err, &he) || he.Code() != "panic" || he.Outcome != OutcomeTerm {
			t.Fatalf("panic: err = %v", err)
		}
	}
	// The runtime keeps serving after the panics.
	reply, err := rt.Call(ctx, event("demo.echo", "after", []byte("alive")))
	if err != nil || string(reply.Data()) != "alive" {
		t.Fatalf("after panic: %q, %v", reply.Data(), err)
	}
	reply.Release()
	s := shutdownClean(t, rt)
	if s.Rust.Panics != 3 {
		t.Fatalf("Rust counted %d panics, want 3", s.Rust.Panics)
	}
}

func TestBadInputGetsTypedErrors(t *testing.T) {
	rt := newRuntime(t, Config{MaxEventSize: 1024})
	ctx := context.Background()

	if _, err := rt.Submit(ctx, event("no.such.type", "1", nil)); !errors.Is(err, ErrNoRoute) {
		t.Errorf("unknown type: %v, want ErrNoRoute", err)
	}
	if _, err := rt.Submit(ctx, event("demo.echo", "2", make([]byte, 2048))); !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("oversize: %v, want ErrEventTooLarge", err)
	}
	if _, err := rt.Submit(ctx, &Event{Source: "/t", Type: "demo.echo"}); !errors.Is(err, envelope.ErrInvalidEvent) {
		t.Errorf("missing id: %v, want envelope.ErrInvalidEvent", err)
	}
	// None of the refusals consumed a slot or reached Rust.
	s := shutdownClean(t, rt)
	if s.Submitted != 0 || s.Rust.Received != 0 {
		t.Errorf("refused events reached Rust: %+v", s)
	}
	if _, err := rt.Submit(ctx, event("demo.echo", "3", nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Shutdown: %v, want ErrClosed", err)
	}
	if _, err := rt.Call(ctx, event("demo.echo", "4", nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("Call after Shutdown: %v, want ErrClosed", err)
	}
}

// A malformed envelope can only come from a broken encoder; Rust must refuse it with a
// "decode" error, release the slot, and go on.
func TestMalformedEnvelopeIsTerminalDecodeError(t *testing.T) {
	rt := newRuntime(t, Config{})
	a, err := rt.submitRaw([]byte{0xa1, 0x00}, "demo.echo")
	if err != nil {
		t.Fatal(err)
	}
	werr := a.Wait(context.Background())
	var he *HandlerError
	if !errors.As(werr, &he) || he.Code() != "decode" || he.Outcome != OutcomeTerm {
		t.Fatalf("malformed: %v", werr)
	}
	shutdownClean(t, rt)
}

func TestConfigAndRoutingErrors(t *testing.T) {
	if _, err := New(Config{RustTypes: []string{"demo.echo", "not.registered"}}); !errors.Is(err, ErrNoRoute) {
		t.Errorf("unknown Rust type: %v, want ErrNoRoute", err)
	}
	if _, err := New(Config{MaxEventSize: 10}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("tiny MaxEventSize: %v, want ErrInvalidConfig", err)
	}
	rt, err := New(Config{RustTypes: []string{"demo.echo"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Submit(context.Background(), event("demo.noop", "1", nil)); !errors.Is(err, ErrNoRoute) {
		t.Errorf("type not in RustTypes: %v, want ErrNoRoute", err)
	}
	shutdownClean(t, rt)
}

func TestRefusesLibraryOfAnotherABIVersion(t *testing.T) {
	restore := abi.PretendVersion(abi.Version + 1)
	defer restore()
	_, err := New(Config{})
	if !errors.Is(err, ErrABIMismatch) {
		t.Fatalf("New = %v, want ErrABIMismatch", err)
	}
}

func TestOverloadPolicies(t *testing.T) {
	rt := newRuntime(t, Config{MaxInFlight: 2, Overload: Reject})
	ctx := context.Background()
	slow := func(id string) *Event {
		ev := event("demo.sleep", id, nil)
		ev.Extensions = map[string]string{"sleep_ms": "300"}
		return ev
	}
	a1, err1 := rt.Submit(ctx, slow("1"))
	a2, err2 := rt.Submit(ctx, slow("2"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := rt.Submit(ctx, slow("3")); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("third submit with Reject: %v, want ErrOverloaded", err)
	}
	for _, a := range []*Receipt{a1, a2} {
		if err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	shutdownClean(t, rt)

	rt = newRuntime(t, Config{MaxInFlight: 1, Overload: Block})
	a, err := rt.Submit(ctx, slow("1"))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := rt.Submit(short, slow("2")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked submit: %v, want DeadlineExceeded", err)
	}
	if err := a.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	shutdownClean(t, rt)
}

func TestShutdownDeadlineCancelsInFlightAsRetryable(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	var acks []*Receipt
	for i := range 20 {
		ev := event("demo.sleep", fmt.Sprint(i), nil)
		ev.Extensions = map[string]string{"sleep_ms": "60000"}
		a, err := rt.Submit(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, a)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := rt.Shutdown(short)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	for _, a := range acks {
		var he *HandlerError
		if err := a.Wait(ctx); !errors.As(err, &he) || he.Code() != "cancelled" || !he.Retryable() {
			t.Fatalf("in-flight event settled with %v, want retryable cancelled", err)
		}
	}
	s := rt.Stats()
	if s.Cancelled != 20 || s.Rust.RequestsHeld != 0 || s.Rust.RepliesLent != 0 || s.Violations+s.Rust.Violations != 0 {
		t.Fatalf("after cancelled shutdown: %+v", s)
	}
	if err2 := rt.Shutdown(ctx); err2 != err {
		t.Fatalf("second Shutdown = %v, want the first result %v", err2, err)
	}
}

func TestCallContextEndsWhileHandlerRuns(t *testing.T) {
	rt := newRuntime(t, Config{})
	ev := event("demo.sleep", "1", nil)
	ev.Extensions = map[string]string{"sleep_ms": "100"}
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := rt.Call(short, ev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want DeadlineExceeded", err)
	}
	// The event still settles and its slot comes back; shutdownClean waits for it.
	shutdownClean(t, rt)
}

func TestReplyHeldAcrossShutdownIsTakenBack(t *testing.T) {
	rt := newRuntime(t, Config{})
	reply, err := rt.Call(context.Background(), event("demo.echo", "1", []byte("held")))
	if err != nil {
		t.Fatal(err)
	}
	shutdownClean(t, rt)
	defer func() {
		if recover() == nil {
			t.Fatal("Reply.Data after Shutdown must panic, not read freed memory")
		}
	}()
	_ = reply.Data()
}

func TestReleaseAfterShutdownIsHarmless(t *testing.T) {
	rt := newRuntime(t, Config{})
	reply, err := rt.Call(context.Background(), event("demo.echo", "1", []byte("held")))
	if err != nil {
		t.Fatal(err)
	}
	s := shutdownClean(t, rt)
	reply.Release()
	if after := rt.Stats(); after.Violations != s.Violations {
		t.Fatal("a Release after Shutdown counted as a violation")
	}
}

// An idle runtime parks both pollers. An event then crosses instead of waking the Rust
// poller; submitted without waiting on it (Submit), its task handler goes to a task, which
// wakes a tokio worker, and its completion, published by that worker, wakes Go's poller
// through its eventfd.
func TestIdleRuntimeParksBothSides(t *testing.T) {
	rt := newRuntime(t, Config{SpinWindow: 20 * time.Microsecond})
	ctx := context.Background()
	for i := range 5 {
		receipt, err := rt.Submit(ctx, event("demo.noop", fmt.Sprint(i), nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := receipt.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		waitParked(t, rt)
	}
	s := rt.Stats()
	// The first call may find the Rust poller still in its spin window after Start.
	if s.Rust.Parks == 0 || s.GoParks == 0 || s.Crossings < 4 || s.Rust.GoWakeups == 0 || s.Rust.TaskWakes < 4 {
		t.Fatalf("idle pollers did not park, cross and wake: %+v", s)
	}
	shutdownClean(t, rt)
}

// Under load the rings carry events with few calls into the library. On a machine with cores
// to spare the pollers stay awake and events go through the rings with no call at all: the
// crossings are the moments a poller had dozed off. On a small one the Rust poller does not
// spin under load (it would take a core from the handlers and the callers); submitters cross
// instead, each crossing draining what the others published meanwhile, and no thread is woken
// for it.
func TestRingsMakeNoFFICallPerEventUnderLoad(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	// Stats reads Rust's counters with one FFI call, after it read FFICalls.
	before := rt.Stats().FFICalls + 1
	const goroutines, each = 32, 300
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				reply, err := rt.Call(ctx, event("demo.echo", fmt.Sprint(g, i), []byte("x")))
				if err != nil {
					t.Error(err)
					return
				}
				reply.Release()
			}
		}()
	}
	wg.Wait()
	s := rt.Stats()
	calls, events := s.FFICalls-before, uint64(goroutines*each)
	t.Logf("%d events on %d cores: %d FFI calls, %d crossings, %d handovers to the Rust poller",
		events, runtime.NumCPU(), calls, s.Crossings, s.Rust.Handovers)
	if calls != s.Crossings {
		t.Fatalf("%d FFI calls, %d crossings: every call under load must be a crossing", calls, s.Crossings)
	}
	// Typically 1 in 200 to 1 in 500 with cores to spare; the bound leaves room for a noisy
	// machine, where a starved poller parks more often. Race builds are too slow to count.
	switch {
	case raceDetector:
	case runtime.NumCPU() >= 4 && calls > events/50:
		t.Fatalf("%d events made %d FFI calls, want at most 1 in 50 with the pollers awake", events, calls)
	}
	if s.RustWakeups != 0 {
		t.Fatalf("Go woke the Rust poller %d times: a crossing discharges every wake-up duty", s.RustWakeups)
	}
	shutdownClean(t, rt)
}

// At idle both pollers are parked. A Call then neither wakes the Rust poller nor waits for
// Go's: it crosses once (one call into the library runs its event on the caller's thread,
// past the rings, inline or task handler, since the caller waits anyway) and settles its own
// completion. Releasing a reply wakes nobody and makes no call: the release waits in the
// ring until a crossing takes it.
func TestIdleCallCrossesInsteadOfWaking(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	idleCall := func(what string, ev *Event, want string) {
		t.Helper()
		waitParked(t, rt)
		before := rt.Stats()
		reply, err := rt.Call(ctx, ev)
		if err != nil || string(reply.Data()) != want {
			t.Fatalf("%s: %q, %v", what, reply.Data(), err)
		}
		reply.Release()
		after := rt.Stats()
		if d := after.Crossings - before.Crossings; d != 1 {
			t.Errorf("%s: %d crossings, want 1", what, d)
		}
		if d := after.FFICalls - before.FFICalls - 1; d != 1 { // - 1: Stats' own call
			t.Errorf("%s: %d FFI calls, want 1", what, d)
		}
		if d := after.CompletionsByCaller - before.CompletionsByCaller; d != 1 {
			t.Errorf("%s: the caller settled %d completions itself, want 1", what, d)
		}
		if d := after.Rust.Runs - before.Rust.Runs; d != 1 {
			t.Errorf("%s: %d runs past the rings, want 1", what, d)
		}
		if d := after.RustWakeups - before.RustWakeups; d != 0 {
			t.Errorf("%s woke the Rust poller %d times", what, d)
		}
		if d := after.Rust.GoWakeups - before.Rust.GoWakeups; d != 0 {
			t.Errorf("%s woke the Go poller %d times", what, d)
		}
		if d := after.Rust.TaskWakes - before.Rust.TaskWakes; d != 0 {
			t.Errorf("%s woke a tokio worker %d times", what, d)
		}
	}
	for i := range 5 {
		id := fmt.Sprint(i)
		idleCall("idle inline call "+id, event("demo.noop.inline", id, nil), "")
		idleCall("idle task call "+id, event("demo.noop", id, nil), "")
		idleCall("idle echo "+id, event("demo.echo", id, []byte("idle")), "idle")
	}
	s := shutdownClean(t, rt)
	if s.Rust.Releases != 5 {
		t.Fatalf("Rust took back %d reply slots, want the 5 echoes' (lazy releases are consumed by Shutdown at the latest)", s.Rust.Releases)
	}
}

// A Call that runs its event past the rings gets its outcome the way it would through them:
// a handler that waits completes through the completion ring, and one that emitted events
// first has them routed before its outcome settles the Call (they are published first, so
// its outcome follows them through the ring). A Submit, which nobody waits on, goes through
// the rings as ever.
func TestACallsRunKeepsWhatTheRingsPromise(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	runs := func() uint64 { return rt.Stats().Rust.Runs }

	waitParked(t, rt)
	before := runs()
	reply, err := rt.Call(ctx, event("demo.sleep", "s", []byte("1")))
	if err != nil {
		t.Fatalf("a handler that waits: %v", err)
	}
	reply.Release()
	if d := runs() - before; d != 1 {
		t.Fatalf("%d runs for a Call at idle, want 1", d)
	}

	waitParked(t, rt)
	relay := event("demo.relay", "r", []byte("x"))
	relay.Extensions = map[string]string{"next": "test.unrouted"} // to Go, which dead-letters it
	emitted := rt.Stats().Emitted
	reply, err = rt.Call(ctx, relay)
	if err != nil {
		t.Fatalf("a handler that emits: %v", err)
	}
	reply.Release()
	if d := rt.Stats().Emitted - emitted; d != 1 {
		t.Fatalf("the Call returned with %d of its handler's emitted events routed, want 1 (they come first)", d)
	}

	waitParked(t, rt)
	before = runs()
	r, err := rt.Submit(ctx, event("demo.echo", "sub", []byte("s")))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil || string(r.Reply()) != "s" {
		t.Fatalf("submitted echo: %q, %v", r.Reply(), err)
	}
	if d := runs() - before; d != 0 {
		t.Fatalf("a Submit ran %d events past the rings, want none", d)
	}
	shutdownClean(t, rt)
}

// An idle runtime burns no CPU: both pollers park (the spinning windows are microseconds; the
// eventfd waits cost nothing) and stay parked, and tokio's workers sleep. Measured on the
// runtime's own threads and counters, not the process's CPU use, which other work (the GC,
// the test binary, a loaded machine) would blur: a quiet half second must not wake or re-park
// a poller, nor give the Rust workers more than a tenth of it.
func TestIdleRuntimeUsesNoCPU(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	for i := range 100 {
		reply, err := rt.Call(ctx, event("demo.echo", fmt.Sprint(i), []byte("x")))
		if err != nil {
			t.Fatal(err)
		}
		reply.Release()
	}
	waitParked(t, rt)
	before, ticks := rt.Stats(), rustWorkerTicks(t)
	// Not a timing assertion: the pause only gives a spinning thread the time to show.
	time.Sleep(500 * time.Millisecond)
	after, used := rt.Stats(), rustWorkerTicks(t)-ticks
	t.Logf("idle: the Rust workers used %d clock ticks in half a second", used)
	if goParked, rustParked := rt.e.PollersParked(); !goParked || !rustParked {
		t.Errorf("a poller left its park while idle: Go parked %v, Rust parked %v", goParked, rustParked)
	}
	if before.GoParks != after.GoParks || before.Rust.Parks != after.Rust.Parks ||
		before.RustWakeups != after.RustWakeups || before.Rust.GoWakeups != after.Rust.GoWakeups {
		t.Errorf("idle pollers woke: before %+v, after %+v", before, after)
	}
	if used > userHZ/2/10 { // a tenth of half a second
		t.Errorf("the idle Rust workers used %d clock ticks in half a second", used)
	}
	shutdownClean(t, rt)
}

// waitParked waits until both pollers have parked, as they do once their spin windows pass
// with nothing to do.
func waitParked(t *testing.T, rt *Runtime) {
	t.Helper()
	waitFor(t, "both pollers to park", func() bool {
		goParked, rustParked := rt.e.PollersParked()
		return goParked && rustParked
	})
}

// userHZ is the unit of a thread's CPU time in /proc: clock ticks per second (USER_HZ).
const userHZ = 100

// rustWorkerTicks is the CPU time, in clock ticks (USER_HZ), the process's tokio worker threads
// ("tandem-worker") have used, read from /proc/self/task/*/stat.
func rustWorkerTicks(t *testing.T) int64 {
	t.Helper()
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil || len(stats) == 0 {
		t.Fatalf("no thread stats in /proc: %v", err)
	}
	var ticks int64
	var workers int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited
		}
		// pid (comm) state ppid ...: utime and stime are the 12th and 13th fields after comm.
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open || string(b[open+1:end]) != "tandem-worker" {
			continue
		}
		f := strings.Fields(string(b[end+1:]))
		if len(f) < 13 {
			t.Fatalf("%s: %q", p, b)
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %q", p, b)
		}
		ticks += utime + stime
		workers++
	}
	if workers == 0 {
		t.Fatal("no tandem-worker thread found")
	}
	return ticks
}

// Every bad input gets a log line besides its typed error.
func TestBadInputIsLogged(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	rt := newRuntime(t, Config{MaxEventSize: 1024, Logger: zap.New(core)})
	ctx := context.Background()
	rt.Submit(ctx, event("no.such.type", "1", nil))
	rt.Submit(ctx, event("demo.echo", "2", make([]byte, 2048)))
	rt.Submit(ctx, &Event{Source: "/t", Type: "demo.echo"})
	rt.Call(ctx, event("demo.panic", "3", []byte("panic")))
	a, err := rt.submitRaw([]byte{0xff}, "demo.echo")
	if err != nil {
		t.Fatal(err)
	}
	a.Wait(context.Background())
	shutdownClean(t, rt)
	rt.Submit(ctx, event("demo.echo", "4", nil))
	for _, msg := range []string{
		"tandem: no route",
		"tandem: event too large",
		"tandem: invalid event",
		"tandem: Rust handler panicked",
		"tandem: Rust refused an event",
		"tandem: submit refused: not running",
	} {
		if logs.FilterMessage(msg).Len() == 0 {
			t.Errorf("no log line %q", msg)
		}
	}
}

// Traffic that comes and goes makes the pollers park and wake all the time, so events take
// every path at once: crossings racing the poller for the consumer's role, completions
// settled by their caller or by the poller. Every reply must be the right one, every event
// settled once, every buffer back.
func TestCrossingUnderIntermittentLoad(t *testing.T) {
	rt := newRuntime(t, Config{MaxInFlight: 64, ReplySlots: 64})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 300 {
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
				}
				typ := []string{"demo.echo", "demo.noop", "demo.upper", "demo.noop.inline"}[r.IntN(4)]
				data := fmt.Sprintf("g%d-%d", g, i)
				reply, err := rt.Call(ctx, event(typ, data, []byte(data)))
				if err != nil {
					errs <- fmt.Errorf("%s %s: %w", typ, data, err)
					return
				}
				want := ""
				switch typ {
				case "demo.echo":
					want = data
				case "demo.upper":
					want = strings.ToUpper(data)
				}
				if got := string(reply.Data()); got != want {
					errs <- fmt.Errorf("%s %s: reply %q, want %q", typ, data, got, want)
				}
				reply.Release()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := shutdownClean(t, rt)
	if s.Submitted != 8*300 {
		t.Fatalf("submitted %d, want %d", s.Submitted, 8*300)
	}
	t.Logf("crossings %d, completions settled by their caller %d, Rust wake-ups %d, Go wake-ups %d",
		s.Crossings, s.CompletionsByCaller, s.RustWakeups, s.Rust.GoWakeups)
}

// Calls that run their events past the rings race Shutdown, retries among them (demo.flaky
// fails its first two attempts, and a retry is published from a timer, outside intake): each
// Call ends with its reply, a handler's error (a retry the budget or the drain cut short),
// or a refusal once the runtime stopped (ErrClosed, nothing accepted); none hangs, and every
// buffer comes back.
func TestCallsThatRunTheirEventsRaceShutdown(t *testing.T) {
	rt := newRuntime(t, Config{})
	var wg sync.WaitGroup
	var replies, refused, failed atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				ev := event("demo.echo", fmt.Sprintf("g%d-%d", g, i), []byte("x"))
				if i%3 == 0 {
					ev = event("demo.flaky", fmt.Sprintf("g%d-%d", g, i), nil)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				reply, err := rt.Call(ctx, ev)
				cancel()
				var he *HandlerError
				switch {
				case err == nil:
					reply.Release()
					replies.Add(1)
				case errors.Is(err, ErrClosed):
					refused.Add(1)
					return
				case errors.As(err, &he):
					failed.Add(1)
				default:
					t.Errorf("%s: %v", ev.Type, err)
					return
				}
			}
		})
	}
	waitFor(t, "calls running", func() bool { return replies.Load() > 200 })
	s := shutdownClean(t, rt)
	wg.Wait()
	if refused.Load() != 8 {
		t.Fatalf("%d callers were refused, want all 8 once the runtime stopped", refused.Load())
	}
	if s.Rust.Runs == 0 {
		t.Fatal("no Call ran its event past the rings: the race was not exercised")
	}
	t.Logf("%d replies, %d handler errors, %d runs", replies.Load(), failed.Load(), s.Rust.Runs)
}
