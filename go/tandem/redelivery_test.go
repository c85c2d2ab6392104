package tandem

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// broker plays a source that redelivers its events itself, as a JetStream consumer does:
// it delivers an event again (Attempt counted on) when the runtime hands it back, and
// records each event's final outcome.
type broker struct {
	t       *testing.T
	rt      *Runtime
	last    uint32
	ev      Event
	settled chan error
	backs   []time.Duration
}

func (b *broker) LastAttempt() uint32 { return b.last }
func (b *broker) Settled(err error)   { b.settled <- err }
func (b *broker) Redeliver(after time.Duration, err error) {
	var he *HandlerError
	if !errors.As(err, &he) || !he.Retryable() || he.DeadLetter != "" {
		b.t.Errorf("Redeliver with %v, want a retryable *HandlerError", err)
	}
	b.backs = append(b.backs, after)
	b.ev.Attempt++
	go func() {
		if err := b.rt.SubmitFrom(context.Background(), &b.ev, b); err != nil {
			b.t.Errorf("redelivery: %v", err)
		}
	}()
}

// A retry of an event from a redelivering source goes back to the source with the route's
// delay; the source's last attempt caps the route's schedule; the outcome, and each dead
// letter, reach the source once. Go and Rust routes alike.
func TestSubmitFromHandsRetriesBackToTheSource(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt, err := New(Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 5, Initial: time.Millisecond, Max: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	failures := 0
	if err := rt.Handle("go.flaky", "flaky", HandlerFunc(func(_ context.Context, ev *Event) Result {
		if ev.Attempt < 3 {
			failures++
			return Retry(0, Errorf("unavailable", "attempt %d", ev.Attempt))
		}
		return Ack()
	}), WithWorkers(1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	defer shutdownClean(t, rt)

	run := func(typ string, data string, last uint32) (*broker, error) {
		b := &broker{t: t, rt: rt, last: last, settled: make(chan error, 1),
			ev: Event{ID: typ + data, Source: "/broker", Type: typ, Data: []byte(data), Attempt: 1}}
		if err := rt.SubmitFrom(context.Background(), &b.ev, b); err != nil {
			t.Fatalf("SubmitFrom: %v", err)
		}
		select {
		case err := <-b.settled:
			return b, err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %q never settled", typ, data)
		}
		return nil, nil
	}

	b, err := run("go.flaky", "", 0)
	if err != nil || len(b.backs) != 2 || failures != 2 {
		t.Fatalf("Go route: settled %v after %d hand-backs, %d failures; want an ack after 2 of each", err, len(b.backs), failures)
	}
	b, err = run("demo.fail", "retry", 3)
	var he *HandlerError
	if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonMaxAttempts || len(b.backs) != 2 || b.ev.Attempt != 3 {
		t.Fatalf("Rust route, source's last attempt 3: settled %v after %d hand-backs at attempt %d; want max_attempts after 2", err, len(b.backs), b.ev.Attempt)
	}
	for _, after := range b.backs {
		if after != 10*time.Millisecond {
			t.Fatalf("hand-back after %v, want the handler's 10ms", after)
		}
	}
	b, err = run("demo.fail", "term", 0)
	if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonTerm || len(b.backs) != 0 {
		t.Fatalf("Term: settled %v after %d hand-backs; want a term dead letter at once", err, len(b.backs))
	}
	if n := len(sink.Records()); n != 2 {
		t.Fatalf("%d dead letters, want 2 (max_attempts and term)", n)
	}
	if st := rt.Stats(); st.HandedBack != 4 || st.Retried != 0 {
		t.Fatalf("HandedBack %d, Retried %d; want 4 hand-backs and no redelivery scheduled here", st.HandedBack, st.Retried)
	}
	if err := rt.SubmitFrom(context.Background(), &Event{ID: "1", Source: "/s", Type: "go.flaky"}, nil); err == nil {
		t.Fatal("SubmitFrom with a nil Redelivery succeeded")
	}
}
