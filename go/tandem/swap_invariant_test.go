package tandem_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/chaos"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// A route's handler moves between runtimes again and again, by swaps and by splits, while
// events that ack, retry and fail for good flow through it: retries cross from one runtime to
// the other. The Go handler behaves as the Rust one (demo.fail), so every event's answer is
// known whatever ran it; the chaos harness's invariants hold over the run (every event
// accounted for once, the runtime counted the same, every dead letter in the sink, nothing
// outstanding after Shutdown).
func TestSwapsAndSplitsUnderMixedLoadKeepTheInvariants(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt, err := tandem.New(tandem.Config{DeadLetters: sink, RetryBudget: retry.NewBudget(time.Second, 1<<20, 1)})
	if err != nil {
		t.Fatal(err)
	}
	fail := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		switch string(ev.Data) {
		case "retry":
			return tandem.Retry(time.Millisecond, tandem.Errorf("unavailable", "asked to fail with retry"))
		case "term":
			return tandem.Term(tandem.Errorf("invalid", "asked to fail for good"))
		}
		return tandem.Ack()
	})
	if err := rt.Register("fail-go", fail, tandem.WithWorkers(2, 8)); err != nil {
		t.Fatal(err)
	}
	if err := rt.HandleRust("mixed", "demo.fail", tandem.WithRetry(retry.Backoff{MaxAttempts: 4, Initial: time.Millisecond})); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	goT, rustT := tandem.GoTarget("fail-go"), tandem.RustTarget("demo.fail")
	changes := []func() error{
		func() error { return rt.Swap("mixed", goT) },
		func() error {
			return rt.SetWeights("mixed", []tandem.Weighted{{Target: goT, Weight: 1}, {Target: rustT, Weight: 1}})
		},
		func() error { return rt.Swap("mixed", rustT) },
		func() error {
			return rt.SetWeights("mixed", []tandem.Weighted{{Target: goT, Weight: 3}, {Target: rustT, Weight: 1}}, tandem.Sticky())
		},
	}
	stop := make(chan struct{})
	var swapper sync.WaitGroup
	var nchanges atomic.Int64
	swapper.Add(1)
	go func() {
		defer swapper.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
			if err := changes[i%len(changes)](); err != nil {
				t.Error(err)
				return
			}
			nchanges.Add(1)
		}
	}()

	var tally chaos.Tally
	var mu sync.Mutex
	var wg sync.WaitGroup
	kinds := []string{"ok", "retry", "term", "ok"}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				data := kinds[(g+i)%len(kinds)]
				ev := &tandem.Event{ID: fmt.Sprintf("%d-%d", g, i), Source: "/test", Type: "mixed", Data: []byte(data)}
				rec, err := rt.Submit(context.Background(), ev)
				mu.Lock()
				tally.Offered++
				mu.Unlock()
				if err != nil {
					mu.Lock()
					tally.Rejected++
					mu.Unlock()
					continue
				}
				err = rec.Wait(context.Background())
				var he *tandem.HandlerError
				mu.Lock()
				switch {
				case err == nil && data == "ok":
					tally.Acked++
				case errors.As(err, &he) && he.DeadLetter != "" && data != "ok":
					tally.DeadLettered++
				default:
					tally.Unclear++
					tally.UnclearExample = fmt.Sprintf("%s (%s): %v", ev.ID, data, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	swapper.Wait()
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := rt.Stats()
	tally.Runtime = chaos.RuntimeCounts{Submitted: s.Submitted, DeadLettered: s.DeadLettered, Cancelled: s.Cancelled,
		Retried: s.Retried, RequestsHeld: s.Rust.RequestsHeld, RepliesLent: s.Rust.RepliesLent,
		RepliesHeld: uint64(s.RepliesHeld), InFlight: s.InFlight, Violations: s.Violations, RustViolations: s.Rust.Violations}
	n := uint64(len(sink.Records()))
	tally.Sink = chaos.SinkCounts{Writes: n, Stored: n}
	if err := chaos.Broken(chaos.Check(tally)); err != nil {
		t.Fatal(err)
	}
	if tally.Offered != 2000 || tally.Acked != 1000 || tally.DeadLettered != 1000 || s.Retried == 0 || nchanges.Load() < 10 {
		t.Fatalf("offered %d, acked %d, dead-lettered %d, retried %d, %d route changes", tally.Offered, tally.Acked,
			tally.DeadLettered, s.Retried, nchanges.Load())
	}
	info, err := rt.Route("mixed")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range info.Handlers {
		if h.Dispatched == 0 || h.InFlight != 0 {
			t.Errorf("%v: dispatched %d, in flight %d after Shutdown", h.Target, h.Dispatched, h.InFlight)
		}
	}
}
