package tandem

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// The rules of one delivery's lifecycle a user relies on, whichever runtime ran the handler:
// how a delivery fails, when it is retried, and how shutdown settles what is left.

func TestGoexitInAGoHandlerFailsTheDeliveryAndKeepsTheWorker(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 3, Initial: time.Millisecond}})
	var exits atomic.Int32
	rt.Handle("exit", "exiter", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		if string(ev.Data) == "exit" {
			exits.Add(1)
			runtime.Goexit() // what t.FailNow in a handler does
		}
		return AckReply(ev.Data)
	}), WithWorkers(1, 1))
	start(t, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := rt.Call(ctx, event("exit", "1", []byte("exit")))
	var he *HandlerError
	if !errors.As(err, &he) || he.Code() != envelope.CodeGoexit || he.Outcome != OutcomeRetry ||
		he.DeadLetter != deadletter.ReasonMaxAttempts || he.Envelope.Handler != "exiter" {
		t.Fatalf("Call = %v, want a retryable goexit failure dead-lettered after its attempts", err)
	}
	if n := exits.Load(); n != 3 {
		t.Fatalf("the handler ran %d times, want 3: a Goexit is retried like any retryable failure", n)
	}
	// Each Goexit ended a worker; the pool replaced it, so the route still serves.
	if n := rt.Stats().GoWorkers; n != 1 {
		t.Fatalf("%d workers after the Goexits, want 1", n)
	}
	reply, err := rt.Call(ctx, event("exit", "2", []byte("ok")))
	if err != nil || string(reply.Data()) != "ok" {
		t.Fatalf("after the Goexits: %q, %v", reply.Data(), err)
	}
	// A Goexit while shutting down settles too: nothing stays in flight.
	r := mustSubmit(t, rt, event("exit", "3", []byte("exit")))
	assertInvariant(t, rt)
	if err := r.Wait(ctx); !errors.As(err, &he) || !he.Retryable() {
		t.Fatalf("a Goexit at shutdown settled with %v, want retryable", err)
	}
	// Event 3 may have used up its attempts before Shutdown began: only event 1's letter is
	// certain.
	letters := sink.Records()
	if len(letters) == 0 || letters[0].EventID != "1" || letters[0].Error.Code != envelope.CodeGoexit || letters[0].Attempts != 3 {
		t.Fatalf("dead letters %+v", letters)
	}
}

// An event's own deadline bounds all its deliveries: past it, nothing is retried.
func TestAnEventPastItsDeadlineIsDeadLetteredAsExpired(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 5, Initial: 5 * time.Millisecond}})
	var goRuns atomic.Int32
	rt.Handle("late.go", "late", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		goRuns.Add(1)
		time.Sleep(400 * time.Millisecond) // ignores its context
		return Ack()
	}))
	start(t, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		typ, runtime string
		ext          map[string]string
	}{
		{"late.go", "go", nil},
		{"demo.sleep", "rust", map[string]string{"sleep_ms": "400"}},
	} {
		ev := event(c.typ, c.runtime, nil)
		ev.Extensions = c.ext
		ev.Deadline = time.Now().Add(30 * time.Millisecond)
		_, err := rt.Call(ctx, ev)
		var he *HandlerError
		if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonExpired || he.Code() != envelope.CodeTimeout ||
			he.Envelope.Runtime != c.runtime {
			t.Fatalf("%s: Call = %v, want a timeout dead-lettered as expired", c.runtime, err)
		}
	}
	// An event already past its deadline is not run at all.
	ev := event("late.go", "past", nil)
	ev.Deadline = time.Now().Add(-time.Millisecond)
	if _, err := rt.Call(ctx, ev); !errors.As(err, new(*HandlerError)) || !strings.Contains(err.Error(), "before the handler ran") {
		t.Fatalf("an event past its deadline: %v, want a timeout without running", err)
	}
	if n := goRuns.Load(); n != 1 {
		t.Errorf("the Go handler ran %d times, want 1", n)
	}
	s := assertInvariant(t, rt)
	if s.Retried != 0 {
		t.Errorf("%d redeliveries scheduled past an event's deadline", s.Retried)
	}
	letters := sink.Records()
	if len(letters) != 3 {
		t.Fatalf("%d dead letters, want 3", len(letters))
	}
	for _, dl := range letters {
		ev, err := envelope.DecodeEvent(dl.Envelope)
		if dl.Reason != deadletter.ReasonExpired || dl.Attempts != 1 || err != nil || ev.Deadline.IsZero() {
			t.Errorf("dead letter %+v (event %+v, %v)", dl, ev, err)
		}
	}
}

// A retry is not scheduled when its backoff would bring it back after the event's deadline;
// one that lands in time is.
func TestARetryLandingAfterTheDeadlineIsNotScheduled(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 3, Initial: 200 * time.Millisecond}})
	var runs atomic.Int32
	rt.Handle("dep.down", "dep", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		runs.Add(1)
		return Retry(0, Errorf("unavailable", "the dependency is down"))
	}))
	start(t, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := event("dep.down", "soon", nil)
	ev.Deadline = time.Now().Add(100 * time.Millisecond) // before the first retry's 200 ms
	_, err := rt.Call(ctx, ev)
	var he *HandlerError
	if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonExpired || he.Code() != "unavailable" {
		t.Fatalf("Call = %v, want the handler's failure dead-lettered as expired", err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times, want 1: no retry was due before the deadline", n)
	}
	ev = event("dep.down", "later", nil)
	ev.Deadline = time.Now().Add(time.Minute)
	if _, err := rt.Call(ctx, ev); !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonMaxAttempts {
		t.Fatalf("Call = %v, want max_attempts: retries within the deadline go ahead", err)
	}
	if s := assertInvariant(t, rt); s.Retried != 2 {
		t.Fatalf("retried %d, want 2 (the event with time left)", s.Retried)
	}
}

// WithTimeout means the same in both runtimes: a handler that returns after its delivery's
// deadline has timed out, whatever it returns (Rust stops polling it then).
func TestALateOutcomePastWithTimeoutIsARetryableTimeout(t *testing.T) {
	rt := newRegistered(t, Config{Retry: retry.Backoff{MaxAttempts: 1}})
	late := func(res Result) Handler {
		return HandlerFunc(func(ctx context.Context, ev *Event) Result {
			time.Sleep(60 * time.Millisecond) // ignores its context
			return res
		})
	}
	rt.Handle("late.ack", "late-ack", late(AckReply([]byte("too late"))), WithTimeout(20*time.Millisecond))
	rt.Handle("late.term", "late-term", late(Term(Errorf("invalid", "no good"))), WithTimeout(20*time.Millisecond))
	rt.Handle("quick.ack", "quick-ack", late(Ack()), WithTimeout(time.Second))
	start(t, rt)
	ctx := context.Background()
	for _, typ := range []string{"late.ack", "late.term"} {
		_, err := rt.Call(ctx, event(typ, "1", nil))
		var he *HandlerError
		if !errors.As(err, &he) || he.Code() != envelope.CodeTimeout || he.Outcome != OutcomeRetry ||
			he.DeadLetter != deadletter.ReasonMaxAttempts || he.Envelope.Runtime != "go" {
			t.Fatalf("%s: Call = %v, want a retryable timeout", typ, err)
		}
	}
	if _, err := rt.Call(ctx, event("quick.ack", "1", nil)); err != nil {
		t.Fatalf("an Ack within the timeout: %v", err)
	}
	assertInvariant(t, rt)
}

// An event whose retry shutdown prevents settles as cancelled, whichever runtime failed it,
// and each event shutdown cancels counts once.
func TestShutdownCancelsPendingRedeliveriesAsCancelled(t *testing.T) {
	rt := newRegistered(t, Config{Retry: retry.Backoff{MaxAttempts: 5, Initial: 50 * time.Millisecond}})
	rt.Handle("dep.down", "dep", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return Retry(0, Errorf("unavailable", "the dependency is down"))
	}))
	start(t, rt)
	receipts := []*Receipt{mustSubmit(t, rt, event("dep.down", "go", nil)), mustSubmit(t, rt, flaky("rust", 100))}
	waitFor(t, "both events to wait for a redelivery", func() bool { return rt.Stats().Retried == 2 })
	// A graceful shutdown: the redeliveries come during the drain and fail again.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rt.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	for _, r := range receipts {
		var he *HandlerError
		if err := r.Wait(ctx); !errors.As(err, &he) || he.Code() != envelope.CodeCancelled || !he.Retryable() ||
			he.DeadLetter != "" || !strings.Contains(he.Envelope.Message, "unavailable") {
			t.Fatalf("Wait = %v, want retryable cancelled naming the last failure", err)
		}
	}
	if s := rt.Stats(); s.Cancelled != 2 || s.InFlight != 0 {
		t.Fatalf("cancelled %d, in flight %d: want 2 and 0", s.Cancelled, s.InFlight)
	}
}

func TestEveryEventCancelledInAGoRouteCountsOnce(t *testing.T) {
	rt := newRegistered(t, Config{})
	started := make(chan struct{}, 10)
	rt.Handle("hang", "hang", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		started <- struct{}{}
		<-ctx.Done()
		return Retry(0, ctx.Err())
	}), WithWorkers(3, 3))
	start(t, rt)
	var receipts []*Receipt
	for i := range 5 {
		receipts = append(receipts, mustSubmit(t, rt, event("hang", string(rune('a'+i)), nil)))
	}
	for range 3 {
		<-started // three run, two wait in the queue
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := rt.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	for _, r := range receipts {
		var he *HandlerError
		if err := r.Wait(context.Background()); !errors.As(err, &he) || he.Code() != envelope.CodeCancelled || !he.Retryable() {
			t.Fatalf("settled with %v, want retryable cancelled", err)
		}
	}
	if s := rt.Stats(); s.Cancelled != 5 || s.Completed != 5 || s.InFlight != 0 {
		t.Fatalf("cancelled %d, completed %d, in flight %d: want 5, 5, 0", s.Cancelled, s.Completed, s.InFlight)
	}
}

func TestStartTwiceSaysTheRuntimeIsAlreadyStarted(t *testing.T) {
	rt := newRuntime(t, Config{})
	err := rt.Start()
	if !errors.Is(err, ErrAlreadyStarted) || errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("a second Start = %v, want ErrAlreadyStarted", err)
	}
	if rt.State() != Running {
		t.Fatalf("state after a second Start = %s, want running", rt.State())
	}
	shutdownClean(t, rt)
	if err := rt.Start(); !errors.Is(err, ErrClosed) || errors.Is(err, ErrAlreadyStarted) || !strings.Contains(err.Error(), "after Shutdown") {
		t.Fatalf("Start after Shutdown = %v, want ErrClosed", err)
	}
}
