package tandem

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// A Call whose event ran and was acknowledged inside its own Submit is settled there, with
// no synchronisation; one acknowledged later (a handler that waits, a retry run from the
// retry schedule) or one that failed is settled through the waiter's atomics. Calls of every
// kind, one after another on one goroutine, share pooled waiters: each must get its own
// outcome and nothing of the one before.
func TestCallsSettledInOrAfterTheirSubmitKeepNothingForTheNext(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 3, Initial: time.Millisecond}})
	start(t, rt)
	defer assertInvariant(t, rt)
	ctx := context.Background()
	runs := rt.Stats().Rust.Runs
	for i := range 200 {
		id := fmt.Sprint(i)
		switch i % 4 {
		case 0: // inline, acknowledged during the Call's own call into the library
			payload := []byte("echo-" + id)
			reply, err := rt.Call(ctx, event("demo.echo", id, payload))
			if err != nil || string(reply.Data()) != string(payload) {
				t.Fatalf("call %d: demo.echo = %q, %v", i, reply.Data(), err)
			}
			reply.Release()
		case 1: // fails for good during the call: settled through the waiter
			_, err := rt.Call(ctx, event("demo.fail", id, []byte("term")))
			var he *HandlerError
			if !errors.As(err, &he) || he.Code() != "invalid" {
				t.Fatalf("call %d: demo.fail = %v, want its terminal error", i, err)
			}
		case 2: // waits: acknowledged later, through the completion ring
			ev := event("demo.sleep", id, nil)
			ev.Extensions = map[string]string{"sleep_ms": "1"}
			reply, err := rt.Call(ctx, ev)
			if err != nil || len(reply.Data()) != 0 {
				t.Fatalf("call %d: demo.sleep = %q, %v", i, reply.Data(), err)
			}
			reply.Release()
		case 3: // a retry from the schedule acknowledges it, off the Call's goroutine
			ev := event("demo.flaky", id, nil)
			ev.Extensions = map[string]string{"succeed_at": "2"}
			reply, err := rt.Call(ctx, ev)
			if err != nil || string(reply.Data()) != "2" {
				t.Fatalf("call %d: demo.flaky = %q, %v, want the second attempt's reply", i, reply.Data(), err)
			}
			reply.Release()
		}
	}
	if n := rt.Stats().Rust.Runs - runs; n < 100 {
		t.Fatalf("%d of 200 Calls ran their event on their own thread: the test must exercise that path", n)
	}
	if n := len(sink.Records()); n != 50 {
		t.Fatalf("%d dead letters, want one per demo.fail", n)
	}
}
