package tandem

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// goroutineID is the running goroutine's number, from its stack's first line.
func goroutineID() uint64 {
	var buf [64]byte
	line := buf[:runtime.Stack(buf[:], false)]
	line = bytes.TrimPrefix(line, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(line[:bytes.IndexByte(line, ' ')]), 10, 64)
	return id
}

// A Call to a route WithCallerRuns runs the handler on the caller's goroutine; Submit to the
// same route, and a Call to a route without it, go to a worker.
func TestCallerRunsOnTheCallingGoroutine(t *testing.T) {
	rt := newRegistered(t, Config{})
	ran := make(chan uint64, 1)
	echo := HandlerFunc(func(_ context.Context, ev *Event) Result {
		ran <- goroutineID()
		return AckReply(ev.Data)
	})
	if err := rt.Handle("here.echo", "here-echo", echo, WithCallerRuns()); err != nil {
		t.Fatal(err)
	}
	if err := rt.Handle("worker.echo", "worker-echo", echo); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	me := goroutineID()

	reply, err := rt.Call(context.Background(), event("here.echo", "1", []byte("hi")))
	if err != nil || string(reply.Data()) != "hi" {
		t.Fatalf("Call = %q, %v; want the echo", reply.Data(), err)
	}
	if g := <-ran; g != me {
		t.Fatalf("the handler ran on goroutine %d, the caller is %d", g, me)
	}
	r, err := rt.Submit(context.Background(), event("here.echo", "2", nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g := <-ran; g == me {
		t.Fatal("a submitted event ran on its submitter's goroutine")
	}
	if _, err := rt.Call(context.Background(), event("worker.echo", "3", nil)); err != nil {
		t.Fatal(err)
	}
	if g := <-ran; g == me {
		t.Fatal("a Call to a route without WithCallerRuns ran on the caller's goroutine")
	}
	shutdownClean(t, rt)
}

// Callers running the handler count as the route's workers: with WithWorkers(1, 2), at
// most two handlers run at once, however many Calls wait, and every Call completes.
func TestCallerRunsWithinTheRoutesWorkers(t *testing.T) {
	rt := newRegistered(t, Config{})
	var running, most atomic.Int32
	started, release := make(chan struct{}, 16), make(chan struct{})
	err := rt.Handle("bound.*", "bound", HandlerFunc(func(context.Context, *Event) Result {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
		return Ack()
	}), WithWorkers(1, 2), WithCallerRuns())
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	const calls = 6
	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			_, err := rt.Call(context.Background(), event("bound.x", strconv.Itoa(i), nil))
			errs <- err
		}()
	}
	<-started
	<-started
	time.Sleep(20 * time.Millisecond) // room for a third to start, were the bound broken
	close(release)
	for range calls {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if m := most.Load(); m > 2 {
		t.Fatalf("%d handlers ran at once on a route of at most 2 workers", m)
	}
	shutdownClean(t, rt)
}

// A Call's own run that fails retryably is retried on a worker, and the Call returns the
// retry's outcome.
func TestCallerRunsRetriesOnAWorker(t *testing.T) {
	rt := newRegistered(t, Config{Retry: retry.Backoff{MaxAttempts: 3, Initial: time.Millisecond}})
	var attempts [2]uint64
	var n atomic.Int32
	err := rt.Handle("flaky.once", "flaky", HandlerFunc(func(_ context.Context, ev *Event) Result {
		i := n.Add(1) - 1
		if i < 2 {
			attempts[i] = goroutineID()
		}
		if i == 0 {
			return Retry(0, errors.New("not yet"))
		}
		return AckReply([]byte("done"))
	}), WithCallerRuns())
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	reply, err := rt.Call(context.Background(), event("flaky.once", "1", nil))
	if err != nil || string(reply.Data()) != "done" {
		t.Fatalf("Call = %q, %v; want the second attempt's reply", reply.Data(), err)
	}
	if me := goroutineID(); attempts[0] != me || attempts[1] == me {
		t.Fatalf("attempts ran on goroutines %v; want the caller's (%d), then a worker's", attempts, me)
	}
	shutdownClean(t, rt)
}

// Shutdown waits for a handler its caller runs, as for a worker's: the handler's context
// ends at the deadline, the Call returns the cancellation, and Shutdown returns only after
// the handler has.
func TestShutdownWaitsForACallersRun(t *testing.T) {
	rt := newRegistered(t, Config{})
	started := make(chan struct{})
	var returned atomic.Bool
	err := rt.Handle("slow.one", "slow", HandlerFunc(func(ctx context.Context, _ *Event) Result {
		close(started)
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // a handler slow to see it
		returned.Store(true)
		return Retry(0, ctx.Err())
	}), WithCallerRuns())
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	callErr := make(chan error, 1)
	go func() {
		_, err := rt.Call(context.Background(), event("slow.one", "1", nil))
		callErr <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := rt.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline: one event was in flight", err)
	}
	if !returned.Load() {
		t.Fatal("Shutdown returned before the handler its caller ran")
	}
	var he *HandlerError
	if err := <-callErr; !errors.As(err, &he) || he.Envelope.Code != envelope.CodeCancelled {
		t.Fatalf("Call = %v, want a cancellation", err)
	}
}

// A handler that calls runtime.Goexit on its caller's goroutine ends that goroutine (the
// Call never returns), and its event settles as it would on a worker: retried, then
// dead-lettered; nothing is left in flight.
func TestCallerRunsGoexitEndsTheCaller(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 1}})
	err := rt.Handle("exit.now", "exit", HandlerFunc(func(context.Context, *Event) Result {
		runtime.Goexit()
		return Ack()
	}), WithCallerRuns())
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	var wg sync.WaitGroup
	var returnedFromCall atomic.Bool
	wg.Go(func() {
		rt.Call(context.Background(), event("exit.now", "1", nil)) //nolint:errcheck // never returns
		returnedFromCall.Store(true)
	})
	wg.Wait()
	if returnedFromCall.Load() {
		t.Fatal("the Call returned from a handler that ended its goroutine")
	}
	s := shutdownClean(t, rt)
	if s.DeadLettered != 1 || len(sink.Records()) != 1 || sink.Records()[0].Error.Code != envelope.CodeGoexit {
		t.Fatalf("dead letters: %d (%v); want the one event, code %q", s.DeadLettered, sink.Records(), envelope.CodeGoexit)
	}
}

// A Call to a Go route allocates twice: the delivery (with the copied event and the first
// attempt's handler context inside it) and the copy of the event's data. On a worker or on
// the caller's goroutine alike.
func TestCallToAGoRouteAllocatesTwice(t *testing.T) {
	rt := newRegistered(t, Config{})
	ack := HandlerFunc(func(context.Context, *Event) Result { return Ack() })
	for _, r := range []struct {
		pattern string
		opts    []RouteOption
	}{{"alloc.worker", nil}, {"alloc.caller", []RouteOption{WithCallerRuns()}}} {
		if err := rt.Handle(r.pattern, r.pattern, ack, r.opts...); err != nil {
			t.Fatal(err)
		}
	}
	start(t, rt)
	for _, typ := range []string{"alloc.worker", "alloc.caller"} {
		ev := event(typ, "alloc", make([]byte, 64))
		call := func() {
			if _, err := rt.Call(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
		}
		call() // warm the waiter pool and the route's worker
		if n := testing.AllocsPerRun(200, call); n > 2 {
			t.Errorf("a Call to %s allocates %.1f times per event, want 2", typ, n)
		}
	}
	shutdownClean(t, rt)
}
