package tandem

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A Call whose context ends says whether its event had been accepted: after acceptance the
// error is ErrAbandoned (the event still settles; only the caller stopped waiting), before
// it (a Block route with no room) the context's error alone, so the caller knows whether to
// send the event again. Both match the context's error with errors.Is.
func TestCallSaysWhetherItsEventWasAccepted(t *testing.T) {
	rt, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}, 2), make(chan struct{})
	err = rt.Handle("held.*", "held", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		started <- struct{}{}
		<-release
		return Ack()
	}), WithWorkers(1, 1), WithQueue(1), WithOverload(Block))
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}

	// Accepted, then abandoned: the Rust handler sleeps past the caller's context.
	ev := event("demo.sleep", "accepted", nil)
	ev.Extensions = map[string]string{"sleep_ms": "100"}
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	_, err = rt.Call(short, ev)
	cancel()
	if !errors.Is(err, ErrAbandoned) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call of an accepted event = %v, want ErrAbandoned and DeadlineExceeded", err)
	}

	// Never accepted: the Go route's one worker is busy and its queue of one is full.
	first := mustSubmit(t, rt, event("held.one", "1", nil))
	<-started
	second := mustSubmit(t, rt, event("held.two", "2", nil))
	short, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	_, err = rt.Call(short, event("held.three", "3", nil))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrAbandoned) {
		t.Fatalf("Call refused for want of room = %v, want DeadlineExceeded without ErrAbandoned", err)
	}
	close(release)
	for _, r := range []*Receipt{first, second} {
		if err := r.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	s := shutdownClean(t, rt)
	if s.Submitted != 3 {
		t.Fatalf("Stats.Submitted = %d, want 3: the refused Call's event was never accepted", s.Submitted)
	}
}
