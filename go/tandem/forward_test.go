package tandem

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/retry"
)

// Forward runs an event on the other runtime once and keeps its outcome: the reply of an
// ack, a retry's delay and envelope (for the forwarding runtime to schedule), a term's
// envelope naming the handler that failed (for it to dead-letter), and a retry when the
// other runtime has no route; the other runtime neither retries nor dead-letters.
func TestForwardKeepsTheOtherRuntimesOutcome(t *testing.T) {
	back := newRuntime(t, Config{Retry: retry.Backoff{MaxAttempts: 5}})
	defer shutdownClean(t, back)
	ev := event("demo.upper", "1", []byte("abc"))
	got, err := Forward(back).Handle(context.Background(), ev).Reply(), error(nil)
	if string(got) != "ABC" || err != nil {
		t.Fatalf("an ack: %q, %v", got, err)
	}
	r := Forward(back).Handle(context.Background(), event("demo.fail", "2", []byte("retry")))
	var he *HandlerError
	if r.Outcome() != OutcomeRetry || r.After() != 10*time.Millisecond || !errors.As(r.Err(), &he) || he.Envelope.Runtime != "rust" || he.Code() != "unavailable" {
		t.Fatalf("a retry: %v after %v: %v", r.Outcome(), r.After(), r.Err())
	}
	r = Forward(back).Handle(context.Background(), event("demo.fail", "3", []byte("term")))
	if r.Outcome() != OutcomeTerm || !errors.As(r.Err(), &he) || he.Code() != "invalid" || he.Envelope.Handler == "" {
		t.Fatalf("a term: %v: %v", r.Outcome(), r.Err())
	}
	r = Forward(back).Handle(context.Background(), event("nobody.home", "4", nil))
	if r.Outcome() != OutcomeRetry || !errors.Is(r.Err(), ErrNoRoute) {
		t.Fatalf("no route on the other runtime: %v: %v", r.Outcome(), r.Err())
	}
	if st := back.Stats(); st.Retried != 0 || st.DeadLettered != 0 {
		t.Fatalf("the other runtime retried %d and dead-lettered %d: one delivery each, none", st.Retried, st.DeadLettered)
	}
}
