package tandem

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

// stalledSink is a dead-letter sink that never stores anything: each Write waits for its
// context to end and fails with the context's error, recording which error that was.
type stalledSink struct {
	entered chan struct{}
	once    sync.Once
	mu      sync.Mutex
	ends    []error
}

func (s *stalledSink) Write(ctx context.Context, r *deadletter.Record) error {
	s.once.Do(func() { close(s.entered) })
	<-ctx.Done()
	s.mu.Lock()
	s.ends = append(s.ends, ctx.Err())
	s.mu.Unlock()
	return ctx.Err()
}

// A dead-letter sink that stalls must not hold Shutdown past its context: the writes still
// queued or in progress at Shutdown's deadline are cut short (their context cancelled), and
// each of their records is logged with its envelope, so none is lost. Found by the chaos
// harness (a sink delaying half its writes by 200 ms: a restart's Shutdown with 10 ms of
// grace took 5.6 s, and every Submit meanwhile failed with ErrClosed).
func TestShutdownDoesNotWaitOutAStalledDeadLetterSink(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	sink := &stalledSink{entered: make(chan struct{})}
	rt, err := New(Config{DeadLetters: sink, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	err = rt.Handle("doomed.*", "doomed", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return Term(Errorf("invalid", "never valid"))
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	const n = 3
	receipts := make([]*Receipt, n)
	for i := range receipts {
		receipts[i] = mustSubmit(t, rt, event("doomed.event", fmt.Sprint("d-", i), nil))
	}
	<-sink.entered // the first dead letter is being written, the others queue behind it

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = rt.Shutdown(ctx)

	// Every write ended because Shutdown's deadline cut it short, none by running out the
	// engine's own per-write timeout.
	sink.mu.Lock()
	ends := append([]error(nil), sink.ends...)
	sink.mu.Unlock()
	if len(ends) != n {
		t.Fatalf("the sink was given %d records, want %d", len(ends), n)
	}
	for i, e := range ends {
		if !errors.Is(e, context.Canceled) {
			t.Errorf("write %d ended with %v, want it cancelled at Shutdown's deadline", i, e)
		}
	}
	// None is lost: each record is in the log, and each receipt says it was dead-lettered.
	if got := logs.FilterMessage("tandem: dead-lettered").Len() + len(logs.FilterFieldKey("envelope").All()); got < n {
		t.Errorf("%d of %d dead letters logged with their envelope", got, n)
	}
	for i, r := range receipts {
		var he *HandlerError
		if err := r.Wait(context.Background()); !errors.As(err, &he) || he.DeadLetter == "" {
			t.Errorf("receipt %d: %v, want a dead letter", i, err)
		}
	}
}
