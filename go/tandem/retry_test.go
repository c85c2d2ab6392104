package tandem

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

func flaky(id string, succeedAt int) *Event {
	ev := event("demo.flaky", id, nil)
	ev.Extensions = map[string]string{"succeed_at": fmt.Sprint(succeedAt)}
	return ev
}

func TestRetriesUntilTheHandlerSucceeds(t *testing.T) {
	rt := newRuntime(t, Config{Retry: retry.Backoff{MaxAttempts: 5, Initial: time.Millisecond}})
	reply, err := rt.Call(context.Background(), flaky("1", 3))
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	// The handler replies with the attempt it succeeded on: attempt counts deliveries.
	if string(reply.Data()) != "3" {
		t.Fatalf("succeeded on attempt %q, want 3", reply.Data())
	}
	reply.Release()
	s := shutdownClean(t, rt)
	if s.Retried != 2 || s.Rust.Received != 3 || s.DeadLettered != 0 {
		t.Fatalf("retried %d, Rust received %d, dead-lettered %d", s.Retried, s.Rust.Received, s.DeadLettered)
	}
}

// Event.Attempt is the delivery number, from 1, in either runtime: a handler sees 1 on the
// first delivery of an event submitted with Attempt 0, and an event that comes with a
// number (a source's redelivery) is delivered as that one.
func TestAttemptIsTheDeliveryNumberFrom1(t *testing.T) {
	rt := newRegistered(t, Config{})
	if err := rt.Handle("go.attempt", "attempt", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return AckReply([]byte(fmt.Sprint(ev.Attempt)))
	})); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	ctx := context.Background()
	for submitted, want := range map[uint32]string{0: "1", 1: "1", 7: "7"} {
		goEv, rustEv := event("go.attempt", "1", nil), flaky("1", 1)
		goEv.Attempt, rustEv.Attempt = submitted, submitted
		for _, ev := range []*Event{goEv, rustEv} {
			reply, err := rt.Call(ctx, ev)
			if err != nil || string(reply.Data()) != want {
				t.Errorf("%s submitted with Attempt %d: the handler saw %q (%v), want %s", ev.Type, submitted, reply.Data(), err, want)
			}
			reply.Release()
		}
	}
	shutdownClean(t, rt)
}

func TestExhaustedRetriesAreDeadLetteredOnceWithTheLastDelivery(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRuntime(t, Config{Retry: retry.Backoff{MaxAttempts: 3, Initial: time.Millisecond}, DeadLetters: sink})
	a, err := rt.Submit(context.Background(), flaky("never", 100))
	if err != nil {
		t.Fatal(err)
	}
	var he *HandlerError
	if err := a.Wait(context.Background()); !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonMaxAttempts {
		t.Fatalf("Wait = %v, want a dead-lettered *HandlerError", err)
	}
	shutdownClean(t, rt)
	letters := sink.Records()
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want 1", len(letters))
	}
	dl := letters[0]
	if dl.Reason != deadletter.ReasonMaxAttempts || dl.Attempts != 3 || dl.EventID != "never" || dl.EventType != "demo.flaky" ||
		dl.Error == nil || dl.Error.Code != "unavailable" || dl.Route != "flaky" {
		t.Fatalf("dead letter %+v", dl)
	}
	// The envelope is the submitter's bytes, never rewritten between deliveries (ABI 2): the
	// delivery count travels beside it, in the slot header and in dl.Attempts.
	ev, err := envelope.DecodeEvent(dl.Envelope)
	if err != nil || ev.ID != "never" || ev.Attempt != 0 || ev.Extensions["succeed_at"] != "100" {
		t.Fatalf("dead letter envelope %+v, %v: want the original event as submitted", ev, err)
	}
}

func TestHandlerAdviceSetsTheEventsAttemptLimit(t *testing.T) {
	// demo.fail "retry" gives no attempts advice: the route's MaxAttempts governs.
	sink := deadletter.NewMemorySink()
	rt := newRuntime(t, Config{Retry: retry.Backoff{MaxAttempts: 4, Initial: time.Millisecond}, DeadLetters: sink})
	_, err := rt.Call(context.Background(), event("demo.fail", "1", []byte("retry")))
	var he *HandlerError
	if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonMaxAttempts {
		t.Fatalf("Call = %v", err)
	}
	shutdownClean(t, rt)
	if got := sink.Records()[0].Attempts; got != 4 {
		t.Fatalf("dead-lettered after %d deliveries, want MaxAttempts 4", got)
	}
}

func TestRetryBudgetStopsARetryStorm(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRuntime(t, Config{
		Retry:       retry.Backoff{MaxAttempts: 10, Initial: time.Millisecond},
		RetryBudget: retry.NewBudget(10*time.Second, 0, 0), // no retries at all
		DeadLetters: sink,
	})
	_, err := rt.Call(context.Background(), flaky("1", 2))
	var he *HandlerError
	if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonRetryBudget {
		t.Fatalf("Call = %v, want dead-lettered for the retry budget", err)
	}
	s := shutdownClean(t, rt)
	if s.Retried != 0 || s.Rust.Received != 1 {
		t.Fatalf("retried %d, received %d: the budget must refuse every retry", s.Retried, s.Rust.Received)
	}
}

// The budget earns its retries from every event submitted before a retry asks for one:
// submissions are deposited in batches, and a withdrawal deposits the batch so far first.
func TestRetryBudgetEarnsFromEveryEventSubmittedBefore(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRuntime(t, Config{
		Retry:       retry.Backoff{MaxAttempts: 10, Initial: time.Millisecond},
		RetryBudget: retry.NewBudget(10*time.Second, 0, 0.25), // a retry per four events, no floor
		DeadLetters: sink,
	})
	ctx := context.Background()
	for i := range 3 {
		if _, err := rt.Call(ctx, event("demo.echo", fmt.Sprint(i), []byte("x"))); err != nil {
			t.Fatalf("Call %d: %v", i, err)
		}
	}
	// The fourth event fails once: the four submitted so far earn the one retry it needs.
	if _, err := rt.Call(ctx, flaky("f", 2)); err != nil {
		t.Fatalf("the fourth event's retry was refused: %v", err)
	}
	// The fifth fails once too: five events earn 1.25 retries, and one is spent.
	_, err := rt.Call(ctx, flaky("g", 2))
	var he *HandlerError
	if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonRetryBudget {
		t.Fatalf("the fifth event: Call = %v, want dead-lettered for the retry budget", err)
	}
	if s := shutdownClean(t, rt); s.Retried != 1 || s.Submitted != 5 {
		t.Fatalf("retried %d of %d submitted, want 1 of 5", s.Retried, s.Submitted)
	}
}

func TestTermAndUndecodableEventsAreDeadLettered(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRuntime(t, Config{DeadLetters: sink})
	_, err := rt.Call(context.Background(), event("demo.fail", "t", []byte("term")))
	var he *HandlerError
	if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonTerm {
		t.Fatalf("term: %v", err)
	}
	a, err := rt.submitRaw([]byte{0xa1, 0x00}, "demo.echo")
	if err != nil {
		t.Fatal(err)
	}
	werr := a.Wait(context.Background())
	if !errors.As(werr, &he) || he.DeadLetter != deadletter.ReasonDecode {
		t.Fatalf("undecodable: %v", werr)
	}
	shutdownClean(t, rt)
	letters := sink.Records()
	if len(letters) != 2 || letters[0].Reason != deadletter.ReasonTerm || letters[1].Reason != deadletter.ReasonDecode ||
		string(letters[1].Envelope) != "\xa1\x00" {
		t.Fatalf("dead letters %+v", letters)
	}
}

func TestShutdownSettlesEventsWaitingForARetry(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRuntime(t, Config{Retry: retry.Backoff{MaxAttempts: 5, Initial: time.Hour, Max: time.Hour}, DeadLetters: sink})
	a, err := rt.Submit(context.Background(), flaky("1", 2))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first attempt to fail and be scheduled for a retry", func() bool { return rt.Stats().Retried != 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := rt.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	var he *HandlerError
	if err := a.Wait(context.Background()); !errors.As(err, &he) || !he.Retryable() || he.Code() != "cancelled" || he.DeadLetter != "" {
		t.Fatalf("Wait = %v, want retryable cancelled, not dead-lettered", err)
	}
	s := rt.Stats()
	if s.InFlight != 0 || s.FreeRequestSlots != rt.cfg.MaxInFlight || s.Rust.RequestsHeld != 0 || len(sink.Records()) != 0 {
		t.Fatalf("after shutdown: %+v", s)
	}
}
