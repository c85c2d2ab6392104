package tandem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// recorder is a Go echo handler that counts, per event id, how often it handled it, and
// records its lifecycle calls in order.
type recorder struct {
	name string
	mu   sync.Mutex
	seen map[string]int
	keys map[string]int // partition key -> events
	life []string
	// reply, if set, replaces the echo.
	reply func(ev *Event) Result
}

func newRecorder(name string) *recorder {
	return &recorder{name: name, seen: map[string]int{}, keys: map[string]int{}}
}

func (r *recorder) Handle(ctx context.Context, ev *Event) Result {
	r.mu.Lock()
	r.seen[ev.ID]++
	r.keys[ev.PartitionKey]++
	r.mu.Unlock()
	if r.reply != nil {
		return r.reply(ev)
	}
	return AckReply(append([]byte(nil), ev.Data...))
}

func (r *recorder) lifecycle(step string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.life = append(r.life, step)
	return nil
}

func (r *recorder) Init(context.Context) error   { return r.lifecycle("init") }
func (r *recorder) WarmUp(context.Context) error { return r.lifecycle("warm-up") }
func (r *recorder) Close() error                 { return r.lifecycle("close") }

func (r *recorder) steps() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.life, ",")
}

func (r *recorder) handled() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.seen))
	for k, v := range r.seen {
		out[k] = v
	}
	return out
}

// info is rt.Route(pattern), failing the test on an error.
func info(t *testing.T, rt *Runtime, pattern string) RouteInfo {
	t.Helper()
	ri, err := rt.Route(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return ri
}

// counts finds the primary counters of target in ri.
func counts(ri RouteInfo, target Target) HandlerCounts {
	for _, h := range ri.Handlers {
		if h.Target == target && !h.Shadow {
			return h
		}
	}
	return HandlerCounts{Target: target}
}

// Each pair of runtimes: a route under concurrent Calls is swapped from one handler to
// another. Every event is answered once with its own reply, handled by exactly one handler
// exactly once; both handlers took events; the old handler drains to no event in flight
// and, a Go one, is closed once; the accounting invariant holds.
func TestSwapUnderLoadLosesAndRepeatsNothing(t *testing.T) {
	cases := []struct {
		name, pattern string
		// setup adds the route (or uses a Rust type's own) and registers both handlers.
		setup    func(t *testing.T, rt *Runtime, goOld, goNew *recorder) (from, to Target)
		rustType string // the type a Rust route's events carry
	}{
		{"go to go", "swap.gg", func(t *testing.T, rt *Runtime, a, b *recorder) (Target, Target) {
			must(t, rt.Handle("swap.gg", "gg-old", a))
			must(t, rt.Register("gg-new", b))
			return GoTarget("gg-old"), GoTarget("gg-new")
		}, ""},
		{"go to rust", "swap.gr", func(t *testing.T, rt *Runtime, a, _ *recorder) (Target, Target) {
			must(t, rt.Handle("swap.gr", "gr-old", a))
			return GoTarget("gr-old"), RustTarget("demo.echo")
		}, ""},
		{"rust to go", "demo.echo", func(t *testing.T, rt *Runtime, _, b *recorder) (Target, Target) {
			must(t, rt.Register("rg-new", b))
			return RustTarget("demo.echo"), GoTarget("rg-new")
		}, ""},
		{"rust to rust, two versions of one handler", "demo.echo", func(t *testing.T, rt *Runtime, _, _ *recorder) (Target, Target) {
			return RustTarget("demo.echo"), RustTarget("demo.echo.v2")
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := newRegistered(t, Config{})
			goOld, goNew := newRecorder("old"), newRecorder("new")
			from, to := c.setup(t, rt, goOld, goNew)
			start(t, rt)
			// Callers run until the swap is made and as many events again have been answered,
			// so that events are in flight on both handlers around it.
			const callers = 8
			var wg sync.WaitGroup
			var answered, wrong atomic.Int64
			done := make(chan struct{})
			for g := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-done:
							return
						default:
						}
						id := fmt.Sprintf("%d-%d", g, i)
						reply, err := rt.Call(context.Background(), event(c.pattern, id, []byte(id)))
						if err != nil || string(reply.Data()) != id {
							wrong.Add(1)
							t.Errorf("%s: %q, %v", id, reply.Data(), err)
						}
						reply.Release()
						answered.Add(1)
					}
				}()
			}
			waitFor(t, "load before the swap", func() bool { return answered.Load() >= 400 })
			if err := rt.Swap(c.pattern, to); err != nil {
				t.Fatal(err)
			}
			atSwap := answered.Load()
			waitFor(t, "load after the swap", func() bool { return answered.Load() >= atSwap+400 })
			close(done)
			wg.Wait()
			n := answered.Load()
			if wrong.Load() != 0 {
				t.Fatalf("%d of %d answers wrong", wrong.Load(), n)
			}
			ri := info(t, rt, c.pattern)
			if len(ri.Targets) != 1 || ri.Targets[0].Target != to {
				t.Fatalf("route targets %v, want %v", ri.Targets, to)
			}
			old, now := counts(ri, from), counts(ri, to)
			if old.Dispatched == 0 || now.Dispatched == 0 {
				t.Errorf("dispatched: old %d, new %d: both should have taken events", old.Dispatched, now.Dispatched)
			}
			if got := old.Acked + now.Acked; got != uint64(n) || old.Dispatched+now.Dispatched != uint64(n) {
				t.Errorf("acked %d + %d, dispatched %d + %d, want %d each", old.Acked, now.Acked, old.Dispatched, now.Dispatched, n)
			}
			for _, r := range []*recorder{goOld, goNew} {
				for id, k := range r.handled() {
					if k != 1 {
						t.Errorf("%s handled %s %d times", r.name, id, k)
					}
				}
			}
			for id := range goOld.handled() {
				if goNew.handled()[id] != 0 {
					t.Errorf("%s handled by both", id)
				}
			}
			waitFor(t, "the old handler to drain", func() bool { return counts(info(t, rt, c.pattern), from).InFlight == 0 })
			if !from.IsRust() {
				waitFor(t, "the old Go handler to close", func() bool { return goOld.steps() == "init,warm-up,close" })
			}
			s := assertInvariant(t, rt)
			if s.Submitted != uint64(n) || s.DeadLettered != 0 {
				t.Errorf("submitted %d, dead-lettered %d", s.Submitted, s.DeadLettered)
			}
			// Closed once by its drain, not again by Shutdown.
			if !from.IsRust() && goOld.steps() != "init,warm-up,close" {
				t.Errorf("old Go handler's lifecycle %q", goOld.steps())
			}
			if !to.IsRust() && goNew.steps() != "init,warm-up,close" {
				t.Errorf("new Go handler's lifecycle %q", goNew.steps())
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A retry goes to the handler the route names at the retry: Go to Rust, and Rust to Go.
func TestARetryAfterASwapGoesToTheNewHandler(t *testing.T) {
	slow := WithRetry(retry.Backoff{Initial: 300 * time.Millisecond, Jitter: 0.01, MaxAttempts: 5})
	t.Run("go to rust", func(t *testing.T) {
		rt := newRegistered(t, Config{})
		old := newRecorder("old")
		old.reply = func(*Event) Result { return Retry(0, Errorf("unavailable", "not today")) }
		must(t, rt.Handle("flip", "flip-go", old, slow))
		start(t, rt)
		rec := mustSubmit(t, rt, event("flip", "f-1", []byte("payload")))
		waitFor(t, "the first attempt to fail", func() bool { return counts(info(t, rt, "flip"), GoTarget("flip-go")).Retried == 1 })
		must(t, rt.Swap("flip", RustTarget("demo.echo")))
		if err := rec.Wait(context.Background()); err != nil || string(rec.Reply()) != "payload" {
			t.Fatalf("after the swap: %q, %v", rec.Reply(), err)
		}
		ri := info(t, rt, "flip")
		if g, r := counts(ri, GoTarget("flip-go")), counts(ri, RustTarget("demo.echo")); g.Dispatched != 1 || r.Dispatched != 1 || r.Acked != 1 {
			t.Fatalf("go %+v, rust %+v: one attempt each", g, r)
		}
		assertInvariant(t, rt)
	})
	t.Run("rust to go", func(t *testing.T) {
		rt := newRegistered(t, Config{})
		fixer := newRecorder("fixer")
		fixer.reply = func(ev *Event) Result { return AckReply([]byte(fmt.Sprint("attempt ", ev.Attempt))) }
		must(t, rt.HandleRust("flop", "demo.fail", slow))
		must(t, rt.Register("fixer", fixer))
		start(t, rt)
		rec := mustSubmit(t, rt, event("flop", "f-2", []byte("retry")))
		waitFor(t, "the first attempt to fail", func() bool { return counts(info(t, rt, "flop"), RustTarget("demo.fail")).Retried == 1 })
		must(t, rt.Swap("flop", GoTarget("fixer")))
		if err := rec.Wait(context.Background()); err != nil || string(rec.Reply()) != "attempt 2" {
			t.Fatalf("after the swap: %q, %v", rec.Reply(), err)
		}
		if fixer.handled()["f-2"] != 1 {
			t.Fatalf("the Go handler saw the event %d times", fixer.handled()["f-2"])
		}
		s := assertInvariant(t, rt)
		if s.Retried != 1 || s.DeadLettered != 0 {
			t.Fatalf("retried %d, dead-lettered %d", s.Retried, s.DeadLettered)
		}
	})
}

// A split sends each target its share of the events, within five standard deviations of
// the binomial, across runtimes; a new split applies at once.
func TestWeightsSplitTrafficAndChangeLive(t *testing.T) {
	rt := newRegistered(t, Config{})
	goSide := newRecorder("go")
	must(t, rt.Register("split-go", goSide))
	start(t, rt)
	must(t, rt.SetWeights("demo.echo", []Weighted{{RustTarget("demo.echo"), 3}, {GoTarget("split-go"), 1}}))
	const n = 4000
	send := func(from int) {
		for i := range n {
			id := fmt.Sprint(from + i)
			reply, err := rt.Call(context.Background(), event("demo.echo", id, []byte(id)))
			if err != nil || string(reply.Data()) != id {
				t.Fatalf("%s: %q, %v", id, reply.Data(), err)
			}
			reply.Release()
		}
	}
	within := func(got uint64, p float64) {
		t.Helper()
		mean, sd := n*p, math.Sqrt(n*p*(1-p))
		if math.Abs(float64(got)-mean) > 5*sd {
			t.Errorf("the Go handler took %d of %d, want %.0f ± %.0f", got, n, mean, 5*sd)
		}
	}
	send(0)
	first := counts(info(t, rt, "demo.echo"), GoTarget("split-go")).Dispatched
	within(first, 0.25)
	must(t, rt.SetWeights("demo.echo", []Weighted{{RustTarget("demo.echo"), 1}, {GoTarget("split-go"), 1}}))
	send(n)
	within(counts(info(t, rt, "demo.echo"), GoTarget("split-go")).Dispatched-first, 0.5)
	// Weight 0 takes nothing.
	must(t, rt.SetWeights("demo.echo", []Weighted{{RustTarget("demo.echo"), 1}, {GoTarget("split-go"), 0}}))
	before := counts(info(t, rt, "demo.echo"), GoTarget("split-go")).Dispatched
	send(2 * n)
	if after := counts(info(t, rt, "demo.echo"), GoTarget("split-go")).Dispatched; after != before {
		t.Errorf("a weight of 0 took %d events", after-before)
	}
	ri := info(t, rt, "demo.echo")
	if len(ri.Targets) != 2 || ri.Targets[1].Weight != 0 || ri.Sticky {
		t.Errorf("route info %+v", ri.Targets)
	}
	s := assertInvariant(t, rt)
	if s.Submitted != 3*n {
		t.Errorf("submitted %d", s.Submitted)
	}
}

// With Sticky, the events of one partition key go to one target while the weights stay;
// raising one target's weight moves keys only to it, and about as many as its share grew.
func TestStickyKeysKeepTheirTarget(t *testing.T) {
	rt := newRegistered(t, Config{})
	a, b := newRecorder("a"), newRecorder("b")
	must(t, rt.Handle("sticky", "a", a))
	must(t, rt.Register("b", b))
	start(t, rt)
	must(t, rt.SetWeights("sticky", []Weighted{{GoTarget("a"), 1}, {GoTarget("b"), 1}}, Sticky()))
	const keys, each = 300, 4
	send := func(round int) {
		for k := range keys {
			for i := range each {
				ev := event("sticky", fmt.Sprintf("%d-%d-%d", round, k, i), nil)
				ev.PartitionKey = fmt.Sprint("key-", k)
				if _, err := rt.Call(context.Background(), ev); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	owner := func() map[string]string {
		out := map[string]string{}
		for _, r := range []*recorder{a, b} {
			r.mu.Lock()
			for k, v := range r.keys {
				if v%each != 0 {
					t.Errorf("key %s: %d events on %s, not a whole round", k, v, r.name)
				}
				if _, dup := out[k]; dup {
					t.Errorf("key %s went to both targets", k)
				}
				out[k] = r.name
			}
			r.keys = map[string]int{}
			r.mu.Unlock()
		}
		return out
	}
	send(0)
	before := owner()
	if len(before) != keys {
		t.Fatalf("%d keys seen", len(before))
	}
	onA := 0
	for _, o := range before {
		if o == "a" {
			onA++
		}
	}
	if onA < keys/4 || onA > 3*keys/4 {
		t.Errorf("%d of %d keys on a at 1:1", onA, keys)
	}
	must(t, rt.SetWeights("sticky", []Weighted{{GoTarget("a"), 1}, {GoTarget("b"), 2}}, Sticky()))
	send(1)
	after := owner()
	moved := 0
	for k, o := range after {
		if o != before[k] {
			moved++
			if o != "b" {
				t.Errorf("key %s moved from b to a when only b's weight grew", k)
			}
		}
	}
	// b's share grows from 1/2 to 2/3: a sixth of the keys move, give or take.
	if moved == 0 || moved > keys/3 {
		t.Errorf("%d of %d keys moved; about %d expected", moved, keys, keys/6)
	}
	if !info(t, rt, "sticky").Sticky {
		t.Error("the route does not say it is sticky")
	}
	assertInvariant(t, rt)
}

// A shadow gets a copy of each event: mismatches are counted, sampled with both replies and
// logged at the rate allowed; matches are counted; none of it shows in the submitter's
// accounting.
func TestShadowCountsAndSamplesMismatches(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	rt := newRegistered(t, Config{Logger: zap.New(core)})
	start(t, rt)
	must(t, rt.Shadow("demo.echo", RustTarget("demo.upper"), WithMismatchLog(time.Hour, 3, 4)))
	for i := range 10 {
		for _, data := range []string{"abcdef", "123"} {
			reply, err := rt.Call(context.Background(), event("demo.echo", fmt.Sprint(data, i), []byte(data)))
			if err != nil || string(reply.Data()) != data {
				t.Fatalf("primary: %q, %v", reply.Data(), err)
			}
			reply.Release()
		}
	}
	waitFor(t, "every copy to be compared", func() bool {
		s := info(t, rt, "demo.echo").Shadowed
		return s.Offered == 20 && s.Matched+s.Mismatched+s.Dropped == 20
	})
	ri := info(t, rt, "demo.echo")
	if s := ri.Shadowed; s.Matched != 10 || s.Mismatched != 10 || s.Dropped != 0 {
		t.Fatalf("shadow %+v", s)
	}
	if ri.Shadow != RustTarget("demo.upper") {
		t.Errorf("shadow %v", ri.Shadow)
	}
	for _, h := range ri.Handlers {
		if h.Shadow && (h.Target != RustTarget("demo.upper") || h.Dispatched != 20 || h.Acked != 20) {
			t.Errorf("the shadow's counts %+v", h)
		}
	}
	samples := ri.Shadowed.Samples
	if len(samples) != 10 {
		t.Fatalf("%d samples", len(samples))
	}
	m := samples[0]
	if string(m.Primary.Reply) != "abcd" || string(m.Got.Reply) != "ABCD" || m.Shadow != RustTarget("demo.upper") ||
		m.EventType != "demo.echo" || m.Primary.Outcome != OutcomeAck {
		t.Errorf("sample %+v (replies cut to 4 bytes)", m)
	}
	logged := logs.FilterMessage("tandem: shadow mismatch").All()
	if len(logged) != 3 {
		t.Errorf("%d mismatches logged, want the burst of 3", len(logged))
	}
	if f := logged[0].ContextMap(); f["primary_reply"] != "abcd" || f["shadow_reply"] != "ABCD" {
		t.Errorf("logged %v", f)
	}
	s := assertInvariant(t, rt)
	if s.Submitted != 20 || s.Shadow.Offered != 20 || s.Shadow.Mismatched != 10 {
		t.Errorf("submitted %d, shadow %+v: shadows are counted apart", s.Submitted, s.Shadow)
	}
	if s.Rust.Received != s.ToRust || s.ToRust != 40 {
		t.Errorf("to Rust %d, received %d: each primary and each shadow once", s.ToRust, s.Rust.Received)
	}
}

// A comparator decides what matches.
func TestShadowComparator(t *testing.T) {
	rt := newRegistered(t, Config{})
	upper := newRecorder("upper")
	upper.reply = func(ev *Event) Result { return AckReply(bytes.ToUpper(ev.Data)) }
	must(t, rt.Register("go-upper", upper))
	start(t, rt)
	must(t, rt.Shadow("demo.echo", GoTarget("go-upper"), WithComparator(func(p, s ShadowResult) bool {
		return p.Outcome == s.Outcome && bytes.EqualFold(p.Reply, s.Reply)
	})))
	for i := range 5 {
		if _, err := rt.Call(context.Background(), event("demo.echo", fmt.Sprint(i), []byte("mixed Case"))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the copies", func() bool { return info(t, rt, "demo.echo").Shadowed.Matched == 5 })
	if s := info(t, rt, "demo.echo").Shadowed; s.Mismatched != 0 {
		t.Errorf("%+v", s)
	}
	assertInvariant(t, rt)
}

// A failing shadow and a slow one leave the primary's outcome, replies, retries and dead
// letters as they are: the primaries are all answered while the shadow is still blocked,
// the shadow runs each copy once (no retry, no dead letter), and its failures are
// mismatches only.
func TestAFailingOrSlowShadowLeavesThePrimaryAlone(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink})
	gate := make(chan struct{})
	var runs atomic.Int64
	shadow := newRecorder("shadow")
	shadow.reply = func(*Event) Result {
		runs.Add(1)
		<-gate
		return Retry(time.Millisecond, Errorf("unavailable", "the shadow always fails"))
	}
	must(t, rt.Register("bad-shadow", shadow, WithWorkers(4, 4)))
	must(t, rt.Handle("primary", "primary", newRecorder("primary")))
	start(t, rt)
	must(t, rt.Shadow("primary", GoTarget("bad-shadow")))
	const n = 20
	for i := range n {
		reply, err := rt.Call(context.Background(), event("primary", fmt.Sprint(i), []byte("p")))
		if err != nil || string(reply.Data()) != "p" {
			t.Fatalf("primary %d: %q, %v", i, reply.Data(), err)
		}
	}
	// Every primary answered while the shadow's runs are blocked.
	close(gate)
	waitFor(t, "every copy to be compared or dropped", func() bool {
		s := info(t, rt, "primary").Shadowed
		return s.Offered == n && s.Matched+s.Mismatched+s.Dropped == n
	})
	s := info(t, rt, "primary").Shadowed
	if s.Matched != 0 || s.Mismatched+s.Dropped != n || uint64(runs.Load()) != s.Mismatched {
		t.Fatalf("shadow %+v, %d runs: each copy that ran, once, and a mismatch", s, runs.Load())
	}
	st := assertInvariant(t, rt)
	if st.Retried != 0 || st.DeadLettered != 0 || len(sink.Records()) != 0 || st.Submitted != n {
		t.Fatalf("retried %d, dead-lettered %d (sink %d), submitted %d: the shadow's failures count nowhere else",
			st.Retried, st.DeadLettered, len(sink.Records()), st.Submitted)
	}
}

// A shadow that cannot keep up: its queue fills, and the copies past it are dropped and
// counted, while the primaries are answered.
func TestAFullShadowQueueDropsAndCounts(t *testing.T) {
	rt := newRegistered(t, Config{})
	gate := make(chan struct{})
	blocked := newRecorder("blocked")
	blocked.reply = func(ev *Event) Result {
		<-gate
		return AckReply(ev.Data)
	}
	must(t, rt.Register("blocked", blocked, WithWorkers(1, 1), WithQueue(1)))
	start(t, rt)
	must(t, rt.Shadow("demo.echo", GoTarget("blocked"), WithShadowQueue(2)))
	const n = 30
	for i := range n {
		if _, err := rt.Call(context.Background(), event("demo.echo", fmt.Sprint(i), []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	// One copy runs, one waits in the pool's queue, two in the shadow's: the rest drop.
	waitFor(t, "the copies past the queue to drop", func() bool { return info(t, rt, "demo.echo").Shadowed.Dropped >= n-4 })
	close(gate)
	waitFor(t, "every copy to settle", func() bool {
		s := info(t, rt, "demo.echo").Shadowed
		return s.Matched+s.Mismatched+s.Dropped == n
	})
	s := info(t, rt, "demo.echo").Shadowed
	if s.Mismatched != 0 || s.Matched == 0 || s.Matched > 4 {
		t.Fatalf("shadow %+v", s)
	}
	if st := assertInvariant(t, rt); st.Shadow.Dropped != s.Dropped {
		t.Fatalf("Stats.Shadow %+v", st.Shadow)
	}
}

// A Rust shadow that fails for good is a mismatch, never a dead letter; removing the shadow
// stops the copies.
func TestARustShadowNeverDeadLetters(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink})
	must(t, rt.Handle("orders", "orders", newRecorder("orders")))
	start(t, rt)
	must(t, rt.Shadow("orders", RustTarget("demo.fail")))
	for i := range 5 {
		if _, err := rt.Call(context.Background(), event("orders", fmt.Sprint(i), []byte("term"))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the copies", func() bool { return info(t, rt, "orders").Shadowed.Mismatched == 5 })
	m := info(t, rt, "orders").Shadowed.Samples[0]
	if m.Got.Outcome != OutcomeTerm || m.Got.Code != "invalid" || m.Primary.Outcome != OutcomeAck {
		t.Errorf("sample %+v", m)
	}
	must(t, rt.Unshadow("orders"))
	if _, err := rt.Call(context.Background(), event("orders", "after", []byte("term"))); err != nil {
		t.Fatal(err)
	}
	if s := info(t, rt, "orders").Shadowed; s.Offered != 5 || info(t, rt, "orders").Shadow != (Target{}) {
		t.Errorf("after Unshadow: %+v", s)
	}
	st := assertInvariant(t, rt)
	if st.DeadLettered != 0 || len(sink.Records()) != 0 {
		t.Fatalf("dead-lettered %d", st.DeadLettered)
	}
}

// Events a Rust handler emits follow the route: to a Go handler after a swap to Go, back
// inside Rust after a swap back, and to another Rust handler, still inside Rust, after a
// Rust-to-Rust swap.
func TestEmittedEventsReachTheSwappedHandler(t *testing.T) {
	rt := newRegistered(t, Config{})
	goEcho := newRecorder("go-echo")
	must(t, rt.Register("go-echo", goEcho))
	sink := make(chan string, 4)
	must(t, rt.Handle("hop.done", "sink", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		sink <- ev.ID
		return Ack()
	})))
	start(t, rt)
	relay := func(id string) {
		t.Helper()
		ev := event("demo.relay", id, []byte("x"))
		ev.Extensions = map[string]string{"next": "demo.echo,hop.done"}
		if _, err := rt.Call(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	// To Go: the relay's follow-up of type demo.echo reaches the Go handler.
	must(t, rt.Swap("demo.echo", GoTarget("go-echo")))
	relay("r1")
	waitFor(t, "the Go handler to get the emitted event", func() bool { return goEcho.handled()["r1/relay"] == 1 })
	// Back to Rust: the follow-up stays in Rust, acked there; the Go handler sees nothing.
	must(t, rt.Swap("demo.echo", RustTarget("demo.echo")))
	local := rt.Stats().Rust.LocalAcked
	relay("r2")
	waitFor(t, "the echo to run inside Rust", func() bool { return rt.Stats().Rust.LocalAcked == local+1 })
	// To another Rust handler: demo.relay, which passes the event on to the Go sink.
	must(t, rt.Swap("demo.echo", RustTarget("demo.relay")))
	dispatched := rt.Stats().Rust.LocalDispatched
	relay("r3")
	select {
	case id := <-sink:
		if id != "r3/relay/relay" {
			t.Fatalf("sink got %s", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Rust-to-Rust swap did not reach the new handler")
	}
	if got := rt.Stats().Rust.LocalDispatched; got != dispatched+1 {
		t.Errorf("locally dispatched %d, want %d: the new Rust handler runs inside Rust", got, dispatched+1)
	}
	if len(goEcho.handled()) != 1 {
		t.Errorf("the Go handler handled %v", goEcho.handled())
	}
	assertInvariant(t, rt)
}

// A Go handler registered while running opens (Init, WarmUp) before its first event, closes
// once drained when no route names it, and opens again when routed again.
func TestAGoHandlerOpensBeforeTrafficAndClosesWhenDrained(t *testing.T) {
	rt := newRegistered(t, Config{})
	a := newRecorder("a")
	must(t, rt.Handle("life.route", "a", a))
	start(t, rt)
	b := newRecorder("b")
	b.reply = func(ev *Event) Result {
		if steps := strings.Split(b.stepsLocked(), ","); steps[len(steps)-1] != "warm-up" {
			return Term(fmt.Errorf("handled after %v", steps))
		}
		return Ack()
	}
	must(t, rt.Register("b", b))
	if b.steps() != "" {
		t.Fatalf("registered while running, opened at once: %q", b.steps())
	}
	must(t, rt.Swap("life.route", GoTarget("b")))
	if b.steps() != "init,warm-up" {
		t.Fatalf("after the swap: %q", b.steps())
	}
	if _, err := rt.Call(context.Background(), event("life.route", "1", nil)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to close", func() bool { return a.steps() == "init,warm-up,close" })
	must(t, rt.Swap("life.route", GoTarget("a")))
	if a.steps() != "init,warm-up,close,init,warm-up" {
		t.Fatalf("a routed again: %q", a.steps())
	}
	waitFor(t, "b to close", func() bool { return b.steps() == "init,warm-up,close" })
	if _, err := rt.Call(context.Background(), event("life.route", "2", nil)); err != nil {
		t.Fatal(err)
	}
	assertInvariant(t, rt)
	if a.steps() != "init,warm-up,close,init,warm-up,close" || b.steps() != "init,warm-up,close" {
		t.Fatalf("after Shutdown: a %q, b %q", a.steps(), b.steps())
	}
}

func (r *recorder) stepsLocked() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.life, ",")
}

// failingWarmUp fails its warm-up.
type failingWarmUp struct{ *recorder }

func (failingWarmUp) WarmUp(context.Context) error { return errors.New("cold") }

// Bad input to route changes: each is refused with a typed error, and the route is left as
// it was.
func TestRouteChangesRefuseBadInput(t *testing.T) {
	rt := newRegistered(t, Config{})
	must(t, rt.Handle("orders", "orders", newRecorder("orders")))
	bad := newRecorder("bad")
	must(t, rt.Register("spare", newRecorder("spare")))
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"unknown route", rt.Swap("nope", GoTarget("orders")), ErrUnknownRoute},
		{"a type, not a route's pattern", rt.Swap("orders.x", GoTarget("orders")), ErrUnknownRoute},
		{"unknown Go handler", rt.Swap("orders", GoTarget("nobody")), ErrUnknownTarget},
		{"unknown Rust handler", rt.Swap("orders", RustTarget("demo.nothing")), ErrUnknownTarget},
		{"a Go name as a Rust handler", rt.Swap("orders", RustTarget("orders")), ErrUnknownTarget},
		{"the zero target", rt.Swap("orders", Target{}), ErrUnknownTarget},
		{"no weights", rt.SetWeights("orders", nil), ErrInvalidWeights},
		{"zero total", rt.SetWeights("orders", []Weighted{{GoTarget("orders"), 0}, {GoTarget("spare"), 0}}), ErrInvalidWeights},
		{"negative", rt.SetWeights("orders", []Weighted{{GoTarget("orders"), 2}, {GoTarget("spare"), -1}}), ErrInvalidWeights},
		{"a target twice", rt.SetWeights("orders", []Weighted{{GoTarget("orders"), 1}, {GoTarget("orders"), 1}}), ErrInvalidWeights},
		{"too heavy", rt.SetWeights("orders", []Weighted{{GoTarget("orders"), 1 << 31}, {GoTarget("spare"), 1 << 31}}), ErrInvalidWeights},
		{"unknown shadow", rt.Shadow("orders", GoTarget("nobody")), ErrUnknownTarget},
		{"shadow of an unknown route", rt.Shadow("nope", GoTarget("spare")), ErrUnknownRoute},
		{"negative shadow queue", rt.Shadow("orders", GoTarget("spare"), WithShadowQueue(-1)), ErrInvalidRoute},
		{"register nil", rt.Register("x", nil), ErrInvalidRoute},
		{"register no name", rt.Register("", bad), ErrInvalidRoute},
		{"register a taken name", rt.Register("orders", bad), ErrInvalidRoute},
		{"register with a route's option", rt.Register("y", bad, WithTimeout(time.Second)), ErrInvalidRoute},
		{"register with a policy", rt.Register("z", bad, WithPolicy(&countingPolicy{})), ErrInvalidRoute},
		{"a pattern routed twice", rt.Handle("orders", "orders-2", bad), ErrInvalidRoute},
		{"the name it would have taken is free", rt.Register("orders-2", bad), nil},
		{"Route of an unknown pattern", func() error { _, err := rt.Route("nope"); return err }(), ErrUnknownRoute},
	}
	for _, c := range cases {
		if c.want == nil && c.err != nil || !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
	// A handler whose warm-up fails is not routed: ErrStart names it, the route stays.
	start(t, rt)
	cold := newRecorder("cold")
	must(t, rt.Register("cold", failingWarmUp{cold}))
	unused := newRecorder("unused")
	must(t, rt.Register("unused", unused))
	err := rt.Swap("orders", GoTarget("cold"))
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), `"cold"`) {
		t.Errorf("a failed warm-up: %v", err)
	}
	if ri := info(t, rt, "orders"); len(ri.Targets) != 1 || ri.Targets[0].Target != GoTarget("orders") {
		t.Errorf("route after a refused change: %+v", ri.Targets)
	}
	if _, err := rt.Call(context.Background(), event("orders", "1", nil)); err != nil {
		t.Fatal(err)
	}
	assertInvariant(t, rt)
	// The failed open closed what its Init opened, once; a handler registered while running
	// and never routed was never opened, so never closed.
	if cold.steps() != "init,close" || unused.steps() != "" {
		t.Errorf("lifecycles: cold %q, unused %q", cold.steps(), unused.steps())
	}
	if err := rt.Swap("orders", GoTarget("spare")); !errors.Is(err, ErrClosed) {
		t.Errorf("Swap after Shutdown: %v", err)
	}
	if err := rt.Register("late", bad); !errors.Is(err, ErrClosed) {
		t.Errorf("Register after Shutdown: %v", err)
	}
}

// Route changes race with each other and with traffic: the race detector and the
// invariant check them.
func TestConcurrentRouteChanges(t *testing.T) {
	rt := newRegistered(t, Config{})
	must(t, rt.Register("c-go", newRecorder("c-go")))
	start(t, rt)
	targets := []Target{RustTarget("demo.echo"), RustTarget("demo.echo.v2"), GoTarget("c-go")}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch i % 3 {
				case 0:
					err = rt.Swap("demo.echo", targets[(g+i)%3])
				case 1:
					err = rt.SetWeights("demo.echo", []Weighted{{targets[g], 1}, {targets[(g+1)%3], 2}}, Sticky())
				case 2:
					err = rt.Shadow("demo.echo", targets[(g+2)%3], WithShadowQueue(4))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 600 {
		id := fmt.Sprint(i)
		reply, err := rt.Call(context.Background(), event("demo.echo", id, []byte(id)))
		if err != nil || string(reply.Data()) != id {
			t.Fatalf("%s: %q, %v", id, reply.Data(), err)
		}
		reply.Release()
	}
	close(stop)
	wg.Wait()
	must(t, rt.Unshadow("demo.echo"))
	s := info(t, rt, "demo.echo").Shadowed
	if s.Mismatched != 0 {
		t.Errorf("echo and its second version disagreed: %+v", s)
	}
	st := assertInvariant(t, rt)
	if st.Submitted != 600 {
		t.Errorf("submitted %d", st.Submitted)
	}
	if st.Shadow.Offered != st.Shadow.Matched+st.Shadow.Mismatched+st.Shadow.Dropped {
		t.Errorf("shadow copies unaccounted for after Shutdown: %+v", st.Shadow)
	}
}

// countingBothWays counts the events its Wrap sees (a Go target) and those Admit sees (a
// Rust target).
type countingBothWays struct{ wrapped, admitted atomic.Int64 }

func (p *countingBothWays) Wrap(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, ev *Event) Result {
		p.wrapped.Add(1)
		return next.Handle(ctx, ev)
	})
}

func (p *countingBothWays) Admit(context.Context, *Event) (func(error), error) {
	p.admitted.Add(1)
	return func(error) {}, nil
}

// A route's middleware and policies stay with the route: they admit the events of its Rust
// handler, and wrap the Go handler it is moved to; the global middleware wraps a Go handler
// moved onto a Rust type's own route; a shadow's copies pass no policy; a Go handler's logger
// names the handler running.
func TestTheRouteKeepsItsPoliciesAcrossASwap(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	rt := newRegistered(t, Config{Logger: zap.New(core)})
	var global atomic.Int64
	rt.Use(func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, ev *Event) Result {
			global.Add(1)
			return next.Handle(ctx, ev)
		})
	})
	p := &countingBothWays{}
	must(t, rt.HandleRust("pay", "demo.echo", WithPolicy(p)))
	must(t, rt.Register("pay-go", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		Logger(ctx).Info("handling")
		return AckReply(ev.Data)
	})))
	start(t, rt)
	call := func(typ string) {
		t.Helper()
		if _, err := rt.Call(context.Background(), event(typ, "x", nil)); err != nil {
			t.Fatal(err)
		}
	}
	call("pay")
	must(t, rt.Swap("pay", GoTarget("pay-go")))
	call("pay")
	if p.admitted.Load() != 1 || p.wrapped.Load() != 1 || global.Load() != 1 {
		t.Fatalf("admitted %d, wrapped %d, global %d: one event each way", p.admitted.Load(), p.wrapped.Load(), global.Load())
	}
	if l := logs.FilterMessage("handling").All(); len(l) != 1 || l[0].ContextMap()["handler"] != "pay-go" || l[0].ContextMap()["route"] != "pay" {
		t.Fatalf("the handler's log: %v", l)
	}
	must(t, rt.Swap("demo.echo", GoTarget("pay-go")))
	call("demo.echo")
	if global.Load() != 2 || p.wrapped.Load() != 1 {
		t.Fatalf("global %d, wrapped %d: the Rust type's own route has no policy", global.Load(), p.wrapped.Load())
	}
	must(t, rt.Shadow("pay", RustTarget("demo.echo")))
	call("pay")
	waitFor(t, "the copy", func() bool { return info(t, rt, "pay").Shadowed.Matched == 1 })
	if p.admitted.Load() != 1 || p.wrapped.Load() != 2 {
		t.Fatalf("admitted %d, wrapped %d: the shadow's copy passes no policy", p.admitted.Load(), p.wrapped.Load())
	}
	assertInvariant(t, rt)
}

// Route changes made before Start apply from the first event; a runtime shut down without
// starting stops the shadow it was given (goleak checks it at the end).
func TestRouteChangesBeforeStart(t *testing.T) {
	idle := newRegistered(t, Config{})
	must(t, idle.Shadow("demo.echo", RustTarget("demo.echo.v2")))
	must(t, idle.Shutdown(context.Background()))

	rt := newRegistered(t, Config{})
	b := newRecorder("b")
	must(t, rt.Register("b", b))
	must(t, rt.Swap("demo.upper", GoTarget("b")))
	must(t, rt.Shadow("demo.upper", RustTarget("demo.upper")))
	start(t, rt)
	if b.steps() != "init,warm-up" {
		t.Fatalf("lifecycle %q", b.steps())
	}
	reply, err := rt.Call(context.Background(), event("demo.upper", "1", []byte("go")))
	if err != nil || string(reply.Data()) != "go" {
		t.Fatalf("%q, %v: the Go handler answers", reply.Data(), err)
	}
	waitFor(t, "the copy", func() bool { return info(t, rt, "demo.upper").Shadowed.Mismatched == 1 })
	if m := info(t, rt, "demo.upper").Shadowed.Samples[0]; string(m.Got.Reply) != "GO" {
		t.Errorf("sample %+v", m)
	}
	assertInvariant(t, rt)
}

// A shadow's run emits nothing, in either runtime, and knows it is a shadow's: the primary
// sends the follow-ups, once.
func TestAShadowEmitsNothing(t *testing.T) {
	rt := newRegistered(t, Config{})
	var sunk atomic.Int64
	must(t, rt.Handle("hop.done", "sink", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		sunk.Add(1)
		return Ack()
	})))
	var shadows, primaries atomic.Int64
	goRelay := HandlerFunc(func(ctx context.Context, ev *Event) Result {
		if IsShadow(ctx) {
			shadows.Add(1)
		} else {
			primaries.Add(1)
		}
		if err := Emit(ctx, event("hop.done", ev.ID+"/relay", nil)); err != nil {
			return Term(err)
		}
		return Ack()
	})
	must(t, rt.Register("go-relay", goRelay))
	start(t, rt)
	if IsShadow(context.Background()) {
		t.Fatal("IsShadow outside a handler")
	}
	relay := func(id string) {
		t.Helper()
		ev := event("demo.relay", id, []byte("x"))
		ev.Extensions = map[string]string{"next": "hop.done"}
		if _, err := rt.Call(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	// The Rust relay is the primary, the Go relay its shadow; then the other way round.
	must(t, rt.Shadow("demo.relay", GoTarget("go-relay")))
	relay("a")
	waitFor(t, "the copy", func() bool { return info(t, rt, "demo.relay").Shadowed.Matched == 1 })
	must(t, rt.Swap("demo.relay", GoTarget("go-relay")))
	must(t, rt.Shadow("demo.relay", RustTarget("demo.relay")))
	relay("b")
	waitFor(t, "the copy", func() bool { return info(t, rt, "demo.relay").Shadowed.Matched == 2 })
	waitFor(t, "the follow-ups", func() bool { return sunk.Load() == 2 })
	st := assertInvariant(t, rt)
	if sunk.Load() != 2 || shadows.Load() != 1 || primaries.Load() != 1 || st.Submitted != 4 {
		t.Fatalf("follow-ups %d (one per event), Go runs: %d shadow, %d primary; submitted %d",
			sunk.Load(), shadows.Load(), primaries.Load(), st.Submitted)
	}
}

// An event in flight when its route is swapped finishes on the old handler, while new events
// already go to the new one; the old handler closes only once that event has finished.
func TestAnEventInFlightFinishesOnTheOldHandler(t *testing.T) {
	rt := newRegistered(t, Config{})
	gate, entered := make(chan struct{}), make(chan struct{})
	old := newRecorder("old")
	old.reply = func(ev *Event) Result {
		close(entered)
		<-gate
		return AckReply([]byte("old"))
	}
	fresh := newRecorder("new")
	fresh.reply = func(*Event) Result { return AckReply([]byte("new")) }
	must(t, rt.Handle("drain", "old", old))
	must(t, rt.Register("new", fresh))
	start(t, rt)
	slow := mustSubmit(t, rt, event("drain", "slow", nil))
	<-entered
	must(t, rt.Swap("drain", GoTarget("new")))
	reply, err := rt.Call(context.Background(), event("drain", "quick", nil))
	if err != nil || string(reply.Data()) != "new" {
		t.Fatalf("a new event during the drain: %q, %v", reply.Data(), err)
	}
	if c := counts(info(t, rt, "drain"), GoTarget("old")); c.InFlight != 1 || old.steps() != "init,warm-up" {
		t.Fatalf("old handler: %d in flight, lifecycle %q: open until its event finishes", c.InFlight, old.steps())
	}
	close(gate)
	if err := slow.Wait(context.Background()); err != nil || string(slow.Reply()) != "old" {
		t.Fatalf("the event in flight: %q, %v", slow.Reply(), err)
	}
	waitFor(t, "the old handler to close", func() bool { return old.steps() == "init,warm-up,close" })
	if c := counts(info(t, rt, "drain"), GoTarget("old")); c.InFlight != 0 || c.Acked != 1 {
		t.Fatalf("old handler after the drain: %+v", c)
	}
	assertInvariant(t, rt)
}
