package tandem

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// slowHandler waits for its context to end, then returns what result makes of its error.
func slowHandler(result func(error) Result) Handler {
	return HandlerFunc(func(ctx context.Context, _ *Event) Result {
		<-ctx.Done()
		return result(ctx.Err())
	})
}

func TestTimeoutTurnsAContextErrorIntoRetry(t *testing.T) {
	defer goleak.VerifyNone(t)
	for name, result := range map[string]func(error) Result{
		"retry": func(err error) Result { return Retry(time.Hour, err) },
		"term":  func(err error) Result { return Term(err) },
	} {
		res := Timeout(time.Millisecond)(slowHandler(result)).Handle(context.Background(), testEvent("1"))
		if res.Outcome() != OutcomeRetry || res.After() != 0 {
			t.Errorf("%s: %v after %v, want Retry(0)", name, res.Outcome(), res.After())
		}
		if !errors.Is(res.Err(), context.DeadlineExceeded) {
			t.Errorf("%s: %v does not match context.DeadlineExceeded", name, res.Err())
		}
		env := errorEnvelope(res.Err(), "slow")
		if env.Code != "timeout" || env.Message == "" {
			t.Errorf("%s: envelope %+v, want code timeout", name, env)
		}
	}
}

func TestTimeoutKeepsALateAck(t *testing.T) {
	res := Timeout(time.Millisecond)(slowHandler(func(error) Result { return AckReply([]byte("done")) })).
		Handle(context.Background(), testEvent("1"))
	if res.Outcome() != OutcomeAck || string(res.Reply()) != "done" {
		t.Fatalf("late ack became %v %q", res.Outcome(), res.Reply())
	}
}

func TestTimeoutLeavesOtherResultsAlone(t *testing.T) {
	boom := errors.New("boom")
	// A failure of its own, after the timeout passed.
	res := Timeout(time.Millisecond)(slowHandler(func(error) Result { return Term(boom) })).
		Handle(context.Background(), testEvent("1"))
	if res.Outcome() != OutcomeTerm || res.Err() != boom {
		t.Fatalf("%v %v, want the handler's Term", res.Outcome(), res.Err())
	}

	// The parent's deadline, not the middleware's.
	parent, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	res = Timeout(time.Hour)(slowHandler(func(err error) Result { return Retry(time.Second, err) })).
		Handle(parent, testEvent("2"))
	if res.After() != time.Second || res.Err() != context.DeadlineExceeded {
		t.Fatalf("the parent's deadline: %v after %v (%v), want the handler's result", res.Outcome(), res.After(), res.Err())
	}

	// The parent cancelled (shutdown).
	parent, cancel = context.WithCancel(context.Background())
	cancel()
	res = Timeout(time.Hour)(slowHandler(func(err error) Result { return Retry(0, err) })).Handle(parent, testEvent("3"))
	if code := errorEnvelope(res.Err(), "h").Code; code != "cancelled" {
		t.Fatalf("a cancelled parent gave code %q, want cancelled", code)
	}
}

func TestTimeoutSetsTheDeadline(t *testing.T) {
	var deadline time.Time
	var ok bool
	h := HandlerFunc(func(ctx context.Context, _ *Event) Result {
		deadline, ok = ctx.Deadline()
		return Ack()
	})
	before := time.Now()
	Timeout(time.Minute)(h).Handle(context.Background(), testEvent("1"))
	if !ok || deadline.Before(before.Add(time.Minute)) || deadline.After(time.Now().Add(time.Minute)) {
		t.Fatalf("deadline %v (set %v), want a minute from the call", deadline, ok)
	}
	Timeout(0)(h).Handle(context.Background(), testEvent("2"))
	if ok {
		t.Fatal("Timeout(0) set a deadline")
	}
}

func TestTimeoutCountsAsABreakerFailure(t *testing.T) {
	b := CircuitBreaker("b", BreakerSettings{ConsecutiveFailures: 1, Timeout: time.Hour})
	h := Chain(slowHandler(func(err error) Result { return Retry(0, err) }), MiddlewareOf(b), Timeout(time.Millisecond))
	h.Handle(context.Background(), testEvent("1"))
	if s := b.State(); s != "open" {
		t.Fatalf("breaker %s after a timeout, want open", s)
	}
}
