package tandem

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// With the Rust poller parked, a batch's events wait for the batch's end and then run in one
// call into the library, whatever their number: one crossing, no thread woken.
func TestBatchCrossesOnceForItsEvents(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	for round, typ := range []string{"demo.noop.inline", "demo.noop", "demo.echo"} {
		waitParked(t, rt)
		before := rt.Stats()
		var receipts []*Receipt
		rt.Batch(func(b *Batch) {
			for i := range 16 {
				r, err := b.Submit(ctx, event(typ, fmt.Sprint(round, "-", i), []byte("x")))
				if err != nil {
					t.Fatalf("%s: Submit: %v", typ, err)
				}
				receipts = append(receipts, r)
			}
			select {
			case <-receipts[0].Done():
				t.Errorf("%s: an event of an open batch settled: the batch crossed early", typ)
			default:
			}
		})
		for i, r := range receipts {
			if err := r.Wait(settleCtx(t)); err != nil {
				t.Fatalf("%s: event %d: %v", typ, i, err)
			}
		}
		after := rt.Stats()
		if d := after.Crossings - before.Crossings; d != 1 {
			t.Errorf("%s: 16 events in a batch made %d crossings, want 1", typ, d)
		}
		if d := after.FFICalls - before.FFICalls - 1; d != 1 { // - 1: Stats' own call
			t.Errorf("%s: 16 events in a batch made %d FFI calls, want 1", typ, d)
		}
		if d := after.RustWakeups - before.RustWakeups; d != 0 {
			t.Errorf("%s: the batch woke the Rust poller %d times", typ, d)
		}
	}
	shutdownClean(t, rt)
}

// A batch that needs a request slot while its own events hold them all crosses first, so
// it never waits on the events it holds back: 64 events through 4 slots all settle.
func TestBatchNeverWaitsOnEventsItHolds(t *testing.T) {
	rt := newRuntime(t, Config{MaxInFlight: 4})
	ctx := context.Background()
	waitParked(t, rt)
	var receipts []*Receipt
	rt.Batch(func(b *Batch) {
		for i := range 64 {
			r, err := b.Submit(ctx, event("demo.noop", fmt.Sprint(i), nil))
			if err != nil {
				t.Fatalf("Submit %d: %v", i, err)
			}
			receipts = append(receipts, r)
		}
	})
	for i, r := range receipts {
		if err := r.Wait(settleCtx(t)); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	shutdownClean(t, rt)
}

// Bad input in a batch is refused alone, with the error Submit gives, and the batch's other
// events settle; a batch kept past its function refuses everything; a panicking function
// still crosses for what it submitted, and the panic goes on.
func TestBatchRefusalsAndEnd(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	var kept *Batch
	var receipts []*Receipt
	rt.Batch(func(b *Batch) {
		kept = b
		r, err := b.Submit(ctx, event("demo.noop", "1", nil))
		if err != nil {
			t.Fatal(err)
		}
		receipts = append(receipts, r)
		if _, err := b.Submit(ctx, &Event{ID: "no-type", Source: "/test"}); !errors.Is(err, envelope.ErrInvalidEvent) {
			t.Errorf("an event without a type: %v, want ErrInvalidEvent", err)
		}
		if _, err := b.Submit(ctx, event("no.such.route", "2", nil)); !errors.Is(err, ErrNoRoute) {
			t.Errorf("an unroutable event: %v, want ErrNoRoute", err)
		}
		if err := b.SubmitFrom(ctx, event("demo.noop", "3", nil), nil); err == nil {
			t.Error("SubmitFrom with a nil Redelivery was accepted")
		}
	})
	if err := receipts[0].Wait(settleCtx(t)); err != nil {
		t.Fatalf("the batch's good event: %v", err)
	}
	if _, err := kept.Submit(ctx, event("demo.noop", "4", nil)); !errors.Is(err, ErrBatchEnded) {
		t.Errorf("Submit on an ended batch: %v, want ErrBatchEnded", err)
	}
	if err := kept.SubmitFrom(ctx, event("demo.noop", "5", nil), nil); !errors.Is(err, ErrBatchEnded) {
		t.Errorf("SubmitFrom on an ended batch: %v, want ErrBatchEnded", err)
	}

	waitParked(t, rt)
	receipts = receipts[:0]
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the function's panic was swallowed")
			}
		}()
		rt.Batch(func(b *Batch) {
			for i := range 3 {
				r, err := b.Submit(ctx, event("demo.noop.inline", fmt.Sprint("p", i), nil))
				if err != nil {
					t.Fatal(err)
				}
				receipts = append(receipts, r)
			}
			panic("the batch's function fails")
		})
	}()
	for i, r := range receipts {
		if err := r.Wait(settleCtx(t)); err != nil {
			t.Fatalf("event %d of the panicking batch: %v", i, err)
		}
	}
	if s := shutdownClean(t, rt); s.InFlight != 0 {
		t.Errorf("%d events in flight after shutdown", s.InFlight)
	}
}

// A runtime shut down while a batch holds events back still settles them (acknowledged, or
// a *HandlerError when cut short): stopping Rust wakes its poller, which takes what waits in
// the ring. The batch's end, after the runtime is gone, calls and wakes nothing.
func TestBatchOutlivedByItsRuntime(t *testing.T) {
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	waitParked(t, rt)
	var receipts []*Receipt
	rt.Batch(func(b *Batch) {
		for i := range 4 {
			r, err := b.Submit(ctx, event("demo.noop.inline", fmt.Sprint(i), nil))
			if err != nil {
				t.Fatal(err)
			}
			receipts = append(receipts, r)
		}
		sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_ = rt.Shutdown(sctx) // the grace may pass: the batch holds its events
		if _, err := b.Submit(ctx, event("demo.noop.inline", "late", nil)); !errors.Is(err, ErrClosed) {
			t.Errorf("a submission after Shutdown: %v, want ErrClosed", err)
		}
	})
	for i, r := range receipts {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.Wait(wctx)
		cancel()
		var he *HandlerError
		if err != nil && !errors.As(err, &he) {
			t.Fatalf("event %d never settled: %v", i, err)
		}
	}
	if s := rt.Stats(); s.InFlight != 0 || s.Rust.RequestsHeld != 0 {
		t.Errorf("after the batch: %d in flight, %d request slots held by Rust", s.InFlight, s.Rust.RequestsHeld)
	}
}

// settleCtx bounds a wait for an event that must settle: a batch that held its events back
// for good fails the test here rather than hanging it.
func settleCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
