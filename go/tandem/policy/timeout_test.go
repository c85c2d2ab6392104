package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tandemrt/tandem/go/tandem"
)

// slowHandler waits for its context to end, then returns what result makes of its error.
func slowHandler(result func(error) tandem.Result) tandem.Handler {
	return tandem.HandlerFunc(func(ctx context.Context, _ *tandem.Event) tandem.Result {
		<-ctx.Done()
		return result(ctx.Err())
	})
}

func TestTimeoutTurnsAContextErrorIntoRetry(t *testing.T) {
	defer goleak.VerifyNone(t)
	for name, result := range map[string]func(error) tandem.Result{
		"retry": func(err error) tandem.Result { return tandem.Retry(time.Hour, err) },
		"term":  func(err error) tandem.Result { return tandem.Term(err) },
	} {
		res := NewTimeout(time.Millisecond).Wrap(slowHandler(result)).Handle(context.Background(), testEvent("1"))
		if res.Outcome() != tandem.OutcomeRetry || res.After() != 0 {
			t.Errorf("%s: %v after %v, want Retry(0)", name, res.Outcome(), res.After())
		}
		if !errors.Is(res.Err(), context.DeadlineExceeded) {
			t.Errorf("%s: %v does not match context.DeadlineExceeded", name, res.Err())
		}
		env := coded(res.Err())
		if env == nil || env.Code != "timeout" || env.Message == "" {
			t.Errorf("%s: envelope %+v, want code timeout", name, env)
		}
	}
}

func TestTimeoutKeepsALateAck(t *testing.T) {
	res := NewTimeout(time.Millisecond).Wrap(slowHandler(func(error) tandem.Result { return tandem.AckReply([]byte("done")) })).
		Handle(context.Background(), testEvent("1"))
	if res.Outcome() != tandem.OutcomeAck || string(res.Reply()) != "done" {
		t.Fatalf("late ack became %v %q", res.Outcome(), res.Reply())
	}
}

func TestTimeoutLeavesOtherResultsAlone(t *testing.T) {
	boom := errors.New("boom")
	// A failure of its own, after the timeout passed.
	res := NewTimeout(time.Millisecond).Wrap(slowHandler(func(error) tandem.Result { return tandem.Term(boom) })).
		Handle(context.Background(), testEvent("1"))
	if res.Outcome() != tandem.OutcomeTerm || res.Err() != boom {
		t.Fatalf("%v %v, want the handler's Term", res.Outcome(), res.Err())
	}

	// The parent's deadline, not the middleware's.
	parent, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	res = NewTimeout(time.Hour).Wrap(slowHandler(func(err error) tandem.Result { return tandem.Retry(time.Second, err) })).
		Handle(parent, testEvent("2"))
	if res.After() != time.Second || res.Err() != context.DeadlineExceeded {
		t.Fatalf("the parent's deadline: %v after %v (%v), want the handler's result", res.Outcome(), res.After(), res.Err())
	}

	// The parent cancelled (shutdown).
	parent, cancel = context.WithCancel(context.Background())
	cancel()
	res = NewTimeout(time.Hour).Wrap(slowHandler(func(err error) tandem.Result { return tandem.Retry(0, err) })).Handle(parent, testEvent("3"))
	// Uncoded and matching context.Canceled, the runtime gives it the code "cancelled".
	if code := codeOf(res.Err()); code != "" || !errors.Is(res.Err(), context.Canceled) {
		t.Fatalf("a cancelled parent gave %v (code %q), want the handler's context.Canceled", res.Err(), code)
	}
}

func TestTimeoutSetsTheDeadline(t *testing.T) {
	var deadline time.Time
	var ok bool
	h := tandem.HandlerFunc(func(ctx context.Context, _ *tandem.Event) tandem.Result {
		deadline, ok = ctx.Deadline()
		return tandem.Ack()
	})
	before := time.Now()
	NewTimeout(time.Minute).Wrap(h).Handle(context.Background(), testEvent("1"))
	if !ok || deadline.Before(before.Add(time.Minute)) || deadline.After(time.Now().Add(time.Minute)) {
		t.Fatalf("deadline %v (set %v), want a minute from the call", deadline, ok)
	}
	NewTimeout(0).Wrap(h).Handle(context.Background(), testEvent("2"))
	if ok {
		t.Fatal("NewTimeout(0) set a deadline")
	}
}

func TestTimeoutCountsAsABreakerFailure(t *testing.T) {
	b := NewBreaker("b", BreakerSettings{ConsecutiveFailures: 1, Timeout: time.Hour})
	h := tandem.Chain(slowHandler(func(err error) tandem.Result { return tandem.Retry(0, err) }), b.Wrap, NewTimeout(time.Millisecond).Wrap)
	h.Handle(context.Background(), testEvent("1"))
	if s := b.State(); s != "open" {
		t.Fatalf("breaker %s after a timeout, want open", s)
	}
}

func TestTimeoutAdmitsEveryEventUnchanged(t *testing.T) {
	ev := testEvent("1")
	want := *ev
	for _, d := range []time.Duration{0, time.Nanosecond, time.Hour} {
		done, err := NewTimeout(d).Admit(context.Background(), ev)
		if err != nil || done == nil {
			t.Fatalf("NewTimeout(%v).Admit = %v, want admitted with a done", d, err)
		}
		done(errors.New("the handler failed"))
	}
	if ev.ID != want.ID || !ev.Deadline.Equal(want.Deadline) || ev.Attempt != want.Attempt {
		t.Fatalf("Admit changed the submitter's event: %+v, was %+v", ev, want)
	}
}
