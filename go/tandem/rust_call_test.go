package tandem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// Rust handlers call (cx.call) through demo.ask, which calls the type in its `call`
// extension (default demo.upper) with its payload and replies with the callee's reply; a
// callee's terminal failure fails it for good with the callee's code.

func ask(id, callee string, data []byte) *Event {
	ev := event("demo.ask", id, data)
	if callee != "" {
		ev.Extensions = map[string]string{"call": callee}
	}
	return ev
}

func mustCall(t *testing.T, rt *Runtime, ev *Event) []byte {
	t.Helper()
	reply, err := rt.Call(context.Background(), ev)
	if err != nil {
		t.Fatalf("Call %s: %v", ev.Type, err)
	}
	defer reply.Release()
	return bytes.Clone(reply.Data())
}

// A call to a type Go routes to a Rust handler with no policy of its own runs inside Rust,
// and its reply comes back without a trip through Go.
func TestRustCallsRustInsideRust(t *testing.T) {
	rt := newRegistered(t, Config{})
	start(t, rt)
	if got := mustCall(t, rt, ask("a-1", "", []byte("hi"))); string(got) != "HI" {
		t.Fatalf("reply %q, want HI", got)
	}
	s := assertInvariant(t, rt)
	if s.Rust.LocalDispatched != 1 || s.Rust.LocalAcked != 1 || s.Rust.Calls != 0 || s.Submitted != 1 || s.ToRust != 1 {
		t.Fatalf("local %d/%d, calls through Go %d, submitted %d, to Rust %d",
			s.Rust.LocalDispatched, s.Rust.LocalAcked, s.Rust.Calls, s.Submitted, s.ToRust)
	}
}

// A Rust handler calls a Go handler: the reply comes back, and the called event carries the
// caller's correlation id, the caller as its cause, its trace context and its deadline.
func TestRustCallsGo(t *testing.T) {
	rt := newRegistered(t, Config{})
	seen := make(chan Event, 1)
	deadlines := make(chan time.Time, 1)
	err := rt.Handle("greet", "greeter", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		seen <- cloneEvent(ev)
		d, _ := ctx.Deadline()
		deadlines <- d
		return AckReply(append([]byte("hello, "), ev.Data...))
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	due := time.Now().Add(time.Minute)
	caller := ask("a-2", "greet", []byte("rust"))
	caller.CorrelationID = "order-9"
	caller.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	caller.Deadline = due
	if got := mustCall(t, rt, caller); string(got) != "hello, rust" {
		t.Fatalf("reply %q", got)
	}
	ev := <-seen
	if ev.CausationID != "a-2" || ev.CorrelationID != "order-9" || ev.ID != "a-2/ask" {
		t.Fatalf("called event ids: %+v", ev)
	}
	if !strings.Contains(ev.TraceParent, "0af7651916cd43dd8448eb211c80319c") {
		t.Fatalf("traceparent %q does not continue the caller's trace", ev.TraceParent)
	}
	if d := <-deadlines; d.IsZero() || d.After(due) {
		t.Fatalf("callee deadline %v, want at most the caller's %v", d, due)
	}
	s := assertInvariant(t, rt)
	if s.Rust.Calls != 1 || s.Submitted != 2 {
		t.Fatalf("calls %d, submitted %d", s.Rust.Calls, s.Submitted)
	}
}

// admitCounter is a policy that only counts: a route with a policy of Go's own is never
// taken inside Rust.
type admitCounter struct{ n atomic.Int64 }

func (p *admitCounter) Wrap(next Handler) Handler { return next }
func (p *admitCounter) Admit(ctx context.Context, ev *Event) (func(error), error) {
	p.n.Add(1)
	return func(error) {}, nil
}

// A Rust handler calls a Rust handler whose route has a Go policy: the call goes through Go,
// which runs the policy and publishes the event to Rust again.
func TestRustCallsRustThroughGo(t *testing.T) {
	rt := newRegistered(t, Config{})
	var p admitCounter
	if err := rt.HandleRust("upper.guarded", "demo.upper", WithPolicy(&p)); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	if got := mustCall(t, rt, ask("a-3", "upper.guarded", []byte("via go"))); string(got) != "VIA GO" {
		t.Fatalf("reply %q", got)
	}
	s := assertInvariant(t, rt)
	if p.n.Load() != 1 || s.Rust.Calls != 1 || s.Rust.LocalDispatched != 0 || s.ToRust != 2 {
		t.Fatalf("admitted %d, calls %d, local %d, to Rust %d", p.n.Load(), s.Rust.Calls, s.Rust.LocalDispatched, s.ToRust)
	}
}

// The callee fails twice, then succeeds: Go retries it (a Rust callee's first failure inside
// Rust, handed to Go; a Go callee's in Go) and the caller gets the reply of the attempt that
// succeeded.
func TestRustCallRetriesTheCalleeThenReplies(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{Retry: retry.Backoff{MaxAttempts: 5, Initial: time.Millisecond}, DeadLetters: sink})
	err := rt.Handle("flaky.go", "flaky-go", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		if ev.Attempt < 3 {
			return Retry(time.Millisecond, errors.New("not yet"))
		}
		return AckReply([]byte("go " + strconv.Itoa(int(ev.Attempt))))
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	if got := mustCall(t, rt, ask("a-4", "demo.flaky", nil)); string(got) != "3" {
		t.Fatalf("Rust callee: reply %q, want the third attempt's", got)
	}
	if got := mustCall(t, rt, ask("a-5", "flaky.go", nil)); string(got) != "go 3" {
		t.Fatalf("Go callee: reply %q, want the third attempt's", got)
	}
	s := assertInvariant(t, rt)
	if s.Retried != 4 || s.Rust.LocalForwarded != 1 || s.Rust.Calls != 2 || len(sink.Records()) != 0 {
		t.Fatalf("retried %d, forwarded %d, calls %d, dead letters %d", s.Retried, s.Rust.LocalForwarded, s.Rust.Calls, len(sink.Records()))
	}
}

// The callee fails for good: it is dead-lettered once, and its error envelope reaches the
// caller, which fails with the callee's code.
func TestRustCallTermReachesTheCaller(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink})
	goFail := atomic.Int64{}
	err := rt.Handle("refuse", "refuser", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		goFail.Add(1)
		return Term(&CodedError{Code: "invalid_input", Message: "not today"})
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	for _, tc := range []struct{ callee, data, code, runtime, handler string }{
		{"demo.fail", "term", "invalid", "rust", "fail"},
		{"refuse", "", "invalid_input", "go", "refuser"},
	} {
		_, err := rt.Call(context.Background(), ask("t-"+tc.callee, tc.callee, []byte(tc.data)))
		var he *HandlerError
		if !errors.As(err, &he) || he.Envelope.Code != tc.code || he.Outcome != OutcomeTerm {
			t.Fatalf("%s: Call = %v, want a terminal %s", tc.callee, err, tc.code)
		}
		want := tc.runtime + " handler \"" + tc.handler + "\""
		if !strings.Contains(he.Envelope.Message, want) {
			t.Fatalf("%s: message %q does not name the callee (%s)", tc.callee, he.Envelope.Message, want)
		}
	}
	s := assertInvariant(t, rt)
	byType := map[string]int{}
	for _, r := range sink.Records() {
		byType[r.EventType]++
	}
	if byType["demo.fail"] != 1 || byType["refuse"] != 1 || goFail.Load() != 1 {
		t.Fatalf("dead letters by type %v, Go callee runs %d: each callee once", byType, goFail.Load())
	}
	if s.Rust.Calls != 2 {
		t.Fatalf("calls %d", s.Rust.Calls)
	}
}

// A type no route takes, and a reply too large for a reply slot: typed errors, nothing
// dead-lettered for the refused call.
func TestRustCallRefusalsAreTyped(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink, MaxReplySize: 1024})
	err := rt.Handle("big", "big", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return AckReply(make([]byte, 4096))
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	for callee, code := range map[string]string{"nobody.home": "no_route", "big": "reply_too_large"} {
		_, err := rt.Call(context.Background(), ask("r-"+callee, callee, nil))
		var he *HandlerError
		if !errors.As(err, &he) || he.Envelope.Code != code {
			t.Fatalf("%s: Call = %v, want code %s", callee, err, code)
		}
	}
	assertInvariant(t, rt)
	for _, r := range sink.Records() {
		if r.EventType == "nobody.home" {
			t.Fatalf("a refused call was dead-lettered: %+v", r)
		}
	}
}

// The caller's deadline bounds the callee: a Go callee that would run on sees its context
// end by then, the caller fails, and every buffer comes back.
func TestRustCallDeadlineBoundsTheCallee(t *testing.T) {
	rt := newRegistered(t, Config{DeadLetters: deadletter.NewMemorySink()})
	ended := make(chan time.Time, 1)
	deadlines := make(chan time.Time, 1)
	err := rt.Handle("slow", "slow", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		d, _ := ctx.Deadline()
		deadlines <- d
		<-ctx.Done()
		ended <- time.Now()
		return Retry(0, ctx.Err())
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	due := time.Now().Add(300 * time.Millisecond)
	caller := ask("d-1", "slow", nil)
	caller.Deadline = due
	if _, err := rt.Call(context.Background(), caller); err == nil {
		t.Fatal("the call outlived its deadline")
	}
	if d := <-deadlines; d.IsZero() || d.After(due) {
		t.Fatalf("callee deadline %v, want at most the caller's %v", d, due)
	}
	select {
	case at := <-ended:
		if at.After(due.Add(5 * time.Second)) {
			t.Fatalf("callee ended at %v, long after the deadline %v", at, due)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the callee's context never ended")
	}
	s := assertInvariant(t, rt)
	if s.Rust.Calls != 1 {
		t.Fatalf("calls %d", s.Rust.Calls)
	}
}

// The caller is cut short mid-call (its route's timeout, shorter than the callee's own
// deadline): Rust tells Go, the callee's context ends, it is not retried, and nothing leaks.
func TestRustCallerCancelledMidCallEndsTheCallee(t *testing.T) {
	rt := newRegistered(t, Config{Retry: retry.Backoff{MaxAttempts: 1}, DeadLetters: deadletter.NewMemorySink()})
	started := make(chan struct{}, 4)
	ended := make(chan error, 4)
	var runs atomic.Int64
	err := rt.Handle("stuck", "stuck", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		runs.Add(1)
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return Retry(0, ctx.Err())
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.HandleRust("ask.short", "demo.ask", WithTimeout(200*time.Millisecond), WithRetry(retry.Backoff{MaxAttempts: 1})); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	caller := ask("c-1", "stuck", nil)
	caller.Type = "ask.short"
	r := mustSubmit(t, rt, caller)
	<-started
	if err := r.Wait(context.Background()); err == nil {
		t.Fatal("the caller outlived its timeout")
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the callee's context never ended")
	}
	waitFor(t, "the call to settle", func() bool { return rt.Stats().InFlight == 0 })
	s := assertInvariant(t, rt)
	if runs.Load() != 1 || s.Rust.Calls != 1 {
		t.Fatalf("callee runs %d, calls %d", runs.Load(), s.Rust.Calls)
	}
}

// Shutdown with calls pending: each caller's event settles (none lost), each callee's
// context ends, and every slot and reply comes back.
func TestShutdownSettlesPendingRustCalls(t *testing.T) {
	rt := newRegistered(t, Config{DeadLetters: deadletter.NewMemorySink()})
	err := rt.Handle("wait", "waiter", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		<-ctx.Done()
		return Retry(0, ctx.Err())
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	var receipts []*Receipt
	for _, id := range []string{"s-1", "s-2", "s-3"} {
		receipts = append(receipts, mustSubmit(t, rt, ask(id, "wait", nil)))
	}
	waitFor(t, "three calls in flight", func() bool { return rt.Stats().Rust.CallsPending == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = rt.Shutdown(ctx) // cut short: the events still in flight are cancelled, retryable
	for _, r := range receipts {
		select {
		case <-r.Done():
		default:
			t.Fatal("a caller's event never settled")
		}
	}
	s := rt.Stats()
	if s.Rust.RequestsHeld != 0 || s.Rust.RepliesLent != 0 || s.Rust.CallsPending != 0 || s.Rust.CallRepliesHeld != 0 {
		t.Fatalf("Rust not whole: %+v", s.Rust)
	}
	if s.Violations != 0 || s.Rust.Violations != 0 || s.InFlight != 0 || s.RepliesHeld != 0 || s.FreeRequestSlots != rt.cfg.MaxInFlight {
		t.Fatalf("Go not whole: violations %d/%d, in flight %d, replies %d, free slots %d",
			s.Violations, s.Rust.Violations, s.InFlight, s.RepliesHeld, s.FreeRequestSlots)
	}
	if s.Submitted != s.Completed {
		t.Fatalf("submitted %d, completed %d", s.Submitted, s.Completed)
	}
}

// Many Rust callers at once, each calling a Rust handler through Go, with few request slots:
// a waiting caller holds its slot and its callee needs one, yet every call ends (replied, or
// refused as overloaded and retried until its attempts run out), none hangs, and every slot
// comes back. Without the bound on waiting calls this settled 1 call in 100 s.
func TestRustCallsUnderLoadNeverDeadlock(t *testing.T) {
	rt := newRegistered(t, Config{MaxInFlight: 16})
	var p admitCounter
	if err := rt.HandleRust("upper.guarded", "demo.upper", WithPolicy(&p)); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	const goroutines, calls = 16, 10
	var ok, overloaded atomic.Int64
	hung := make(chan error, goroutines*calls)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				reply, err := rt.Call(ctx, ask(fmt.Sprint(g, "-", i), "upper.guarded", []byte("x")))
				cancel()
				var he *HandlerError
				switch {
				case err == nil:
					if string(reply.Data()) == "X" {
						ok.Add(1)
					}
					reply.Release()
				case errors.As(err, &he) && strings.Contains(he.Envelope.Message, "too many calls waiting on Go"):
					overloaded.Add(1)
				default:
					hung <- err
				}
			}
		}()
	}
	wg.Wait()
	close(hung)
	for err := range hung {
		t.Errorf("a call neither replied nor was refused as overloaded: %v", err)
	}
	if ok.Load() == 0 || ok.Load()+overloaded.Load() != goroutines*calls {
		t.Fatalf("replied %d, overloaded %d, of %d", ok.Load(), overloaded.Load(), goroutines*calls)
	}
	s := assertInvariant(t, rt)
	if s.Rust.Calls != uint64(p.n.Load()) {
		t.Fatalf("calls through Go %d, callees admitted %d", s.Rust.Calls, p.n.Load())
	}
}

// The caller stops waiting on its own (a timeout around the call, as a select! drops its
// future), well before any deadline: Rust tells Go, the Go callee's context ends with
// context.Canceled, it is not retried, and nothing leaks.
func TestRustCallerGivingUpCancelsTheGoCallee(t *testing.T) {
	rt := newRegistered(t, Config{DeadLetters: deadletter.NewMemorySink()})
	ended := make(chan error, 1)
	var runs atomic.Int64
	err := rt.Handle("stuck", "stuck", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		runs.Add(1)
		<-ctx.Done()
		ended <- ctx.Err()
		return Retry(0, ctx.Err())
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	caller := ask("g-1", "stuck", nil)
	caller.Extensions["give_up_ms"] = "100"
	if got := mustCall(t, rt, caller); string(got) != "gave up" {
		t.Fatalf("reply %q", got)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the callee's context ended with %v, want context.Canceled (no deadline was set)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the callee's context never ended")
	}
	waitFor(t, "the callee to settle", func() bool { return rt.Stats().InFlight == 0 })
	s := assertInvariant(t, rt)
	if runs.Load() != 1 || s.Rust.Calls != 1 || s.Retried != 0 {
		t.Fatalf("callee runs %d, calls %d, retried %d", runs.Load(), s.Rust.Calls, s.Retried)
	}
}

// The same with a Rust callee reached through Go: Go asks Rust to cancel it
// (TANDEM_SQE_CANCEL), so it stops at once instead of sleeping its minute out.
func TestRustCallerGivingUpCancelsTheRustCallee(t *testing.T) {
	rt := newRegistered(t, Config{DeadLetters: deadletter.NewMemorySink()})
	var p admitCounter
	if err := rt.HandleRust("sleep.guarded", "demo.sleep", WithPolicy(&p)); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	caller := ask("g-2", "sleep.guarded", nil)
	caller.Extensions["give_up_ms"] = "100"
	caller.Extensions["sleep_ms"] = "60000" // passed on to the callee
	began := time.Now()
	if got := mustCall(t, rt, caller); string(got) != "gave up" {
		t.Fatalf("reply %q", got)
	}
	waitFor(t, "the Rust callee to be cancelled", func() bool { return rt.Stats().InFlight == 0 })
	if waited := time.Since(began); waited > 30*time.Second {
		t.Fatalf("the callee ran %v: it was not cancelled", waited)
	}
	s := assertInvariant(t, rt)
	if p.n.Load() != 1 || s.Rust.Calls != 1 || s.Retried != 0 || s.Cancelled != 1 {
		t.Fatalf("admitted %d, calls %d, retried %d, cancelled %d", p.n.Load(), s.Rust.Calls, s.Retried, s.Cancelled)
	}
}
