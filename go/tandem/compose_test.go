package tandem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/internal/engine"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// assertInvariant checks what every composition test ends with: every accepted event was
// acknowledged or dead-lettered, nothing is in flight, and no buffer is outstanding.
func assertInvariant(t *testing.T, rt *Runtime) Stats {
	t.Helper()
	s := shutdownClean(t, rt)
	if s.Completed != s.Submitted {
		t.Errorf("submitted %d, settled %d (acknowledged or dead-lettered)", s.Submitted, s.Completed)
	}
	return s
}

func newRegistered(t *testing.T, cfg Config) *Runtime {
	t.Helper()
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func start(t *testing.T, rt *Runtime) {
	t.Helper()
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
}

func TestGoRouteRepliesAndAcks(t *testing.T) {
	rt := newRegistered(t, Config{})
	err := rt.Handle("greet", "greeter", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return AckReply(append([]byte("hello, "), ev.Data...))
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	ctx := context.Background()
	reply, err := rt.Call(ctx, event("greet", "1", []byte("tandem")))
	if err != nil || string(reply.Data()) != "hello, tandem" {
		t.Fatalf("Call = %q, %v", reply.Data(), err)
	}
	reply.Release()
	r, err := rt.Submit(ctx, event("greet", "2", []byte("go")))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil || string(r.Reply()) != "hello, go" {
		t.Fatalf("Receipt = %q, %v", r.Reply(), err)
	}
	assertInvariant(t, rt)
}

func TestGoHandlerRetriesThenSucceedsWithAttemptsCounted(t *testing.T) {
	rt := newRegistered(t, Config{Retry: retry.Backoff{MaxAttempts: 5, Initial: time.Millisecond}})
	var seen []uint32
	var mu sync.Mutex
	rt.Handle("flaky.go", "flaky", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		mu.Lock()
		seen = append(seen, ev.Attempt)
		mu.Unlock()
		if ev.Attempt < 3 {
			return Retry(0, Errorf("unavailable", "try again"))
		}
		return AckReply([]byte(fmt.Sprint(ev.Attempt)))
	}))
	start(t, rt)
	reply, err := rt.Call(context.Background(), event("flaky.go", "1", nil))
	if err != nil || string(reply.Data()) != "3" {
		t.Fatalf("Call = %q, %v", reply.Data(), err)
	}
	s := assertInvariant(t, rt)
	if fmt.Sprint(seen) != "[1 2 3]" || s.Retried != 2 {
		t.Fatalf("deliveries %v, retried %d", seen, s.Retried)
	}
}

// A Go handler's error message may hold any bytes: its dead letter is written, and the file
// stays readable for the records before and after it.
func TestAGoErrorThatIsNotUTF8IsDeadLetteredReadably(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	sink, err := deadletter.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rt := newRegistered(t, Config{DeadLetters: sink})
	rt.Handle("bad", "bad", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return Term(errors.New("boom \xff" + ev.ID))
	}))
	start(t, rt)
	for _, id := range []string{"1", "2", "3"} {
		if _, err := rt.Call(context.Background(), event("bad", id, nil)); err == nil {
			t.Fatalf("Call %s succeeded", id)
		}
	}
	assertInvariant(t, rt)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := deadletter.ReadFile(path)
	if err != nil || len(f.Records) != 3 {
		t.Fatalf("ReadFile: %v, %d records, want 3", err, len(f.Records))
	}
	if dl := f.Records[1]; dl.EventID != "2" || dl.Error == nil || dl.Error.Message != "boom \uFFFD2" {
		t.Errorf("dead letter %+v, error %+v", dl, dl.Error)
	}
}

func TestGoFailuresAreDeadLettered(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 2, Initial: time.Millisecond}})
	rt.Handle("bad", "bad", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return Term(Errorf("invalid", "no good"))
	}))
	rt.Handle("boom", "boom", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		panic("kaboom")
	}))
	rt.Handle("slow", "slow", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		<-ctx.Done()
		return Retry(0, ctx.Err())
	}), WithTimeout(10*time.Millisecond))
	start(t, rt)
	ctx := context.Background()
	for _, c := range []struct {
		typ, code string
		reason    deadletter.Reason
	}{
		{"bad", "invalid", deadletter.ReasonTerm},
		{"boom", "panic", deadletter.ReasonTerm},
		{"slow", "timeout", deadletter.ReasonMaxAttempts},
	} {
		_, err := rt.Call(ctx, event(c.typ, c.typ+"-1", []byte("x")))
		var he *HandlerError
		if !errors.As(err, &he) || he.Code() != c.code || he.DeadLetter != c.reason || he.Envelope.Runtime != "go" || he.Envelope.Handler != c.typ {
			t.Errorf("%s: %v (%+v)", c.typ, err, he)
		}
	}
	assertInvariant(t, rt)
	letters := sink.Records()
	if len(letters) != 3 {
		t.Fatalf("%d dead letters, want 3", len(letters))
	}
	for _, dl := range letters {
		ev, err := envelope.DecodeEvent(dl.Envelope)
		if err != nil || ev.ID != dl.EventID || string(ev.Data) != "x" || dl.Route != dl.EventType {
			t.Errorf("dead letter %+v: envelope %+v, %v", dl, ev, err)
		}
	}
}

// A three-hop chain: a Go handler asks a Rust handler (request/reply over the rings), then
// emits the result to a second Go handler. Correlation and causation follow the chain.
func TestChainGoRustGo(t *testing.T) {
	rt := newRegistered(t, Config{})
	got := make(chan Event, 1)
	rt.Handle("order.placed", "pricing", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		reply, err := Call(ctx, &Event{ID: ev.ID + "/upper", Source: "/pricing", Type: "demo.upper", Data: ev.Data})
		if err != nil {
			return Retry(0, err)
		}
		defer reply.Release()
		if err := Emit(ctx, &Event{ID: ev.ID + "/priced", Source: "/pricing", Type: "order.priced", Data: bytes.Clone(reply.Data())}); err != nil {
			return Retry(0, err)
		}
		return Ack()
	}))
	rt.Handle("order.priced", "shipping", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		got <- cloneEvent(ev)
		return Ack()
	}))
	start(t, rt)
	root := event("order.placed", "o-1", []byte("widget"))
	root.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := mustSubmit(t, rt, root).Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	final := <-got
	if string(final.Data) != "WIDGET" || final.CorrelationID != "o-1" || final.CausationID != "o-1" || final.TraceParent != root.TraceParent {
		t.Fatalf("end of chain: %+v", final)
	}
	assertInvariant(t, rt)
}

func mustSubmit(t *testing.T, rt *Runtime, ev *Event) *Receipt {
	t.Helper()
	r, err := rt.Submit(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFanOutOfOneHundred(t *testing.T) {
	rt := newRegistered(t, Config{})
	var handled atomic.Int64
	var wrongCause atomic.Int64
	done := make(chan struct{})
	rt.Handle("batch.split", "splitter", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		for i := range 100 {
			if err := Emit(ctx, &Event{ID: fmt.Sprintf("%s/%d", ev.ID, i), Source: "/split", Type: "batch.item"}); err != nil {
				return Retry(0, err)
			}
		}
		return Ack()
	}))
	rt.Handle("batch.item", "item", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		if ev.CausationID != "b-1" || ev.CorrelationID != "b-1" {
			wrongCause.Add(1)
		}
		if handled.Add(1) == 100 {
			close(done)
		}
		return Ack()
	}), WithWorkers(2, 8))
	start(t, rt)
	mustSubmit(t, rt, event("batch.split", "b-1", nil))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("only %d of 100 fanned-out events handled", handled.Load())
	}
	if wrongCause.Load() != 0 {
		t.Fatalf("%d children lost their correlation or causation", wrongCause.Load())
	}
	s := assertInvariant(t, rt)
	if s.Submitted != 101 {
		t.Fatalf("submitted %d, want 101 (1 + 100 emitted)", s.Submitted)
	}
}

func TestRequestReplyThroughAChain(t *testing.T) {
	rt := newRegistered(t, Config{})
	rt.Handle("api.shout", "shout", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		reply, err := Call(ctx, &Event{ID: ev.ID + "/u", Source: "/api", Type: "demo.upper", Data: ev.Data})
		if err != nil {
			return Retry(0, err)
		}
		defer reply.Release()
		return AckReply(append(bytes.Clone(reply.Data()), '!'))
	}))
	start(t, rt)
	reply, err := rt.Call(context.Background(), event("api.shout", "1", []byte("hey")))
	if err != nil || string(reply.Data()) != "HEY!" {
		t.Fatalf("Call = %q, %v", reply.Data(), err)
	}
	reply.Release()
	assertInvariant(t, rt)
}

func TestWildcardRoutesReachEitherRuntime(t *testing.T) {
	rt := newRegistered(t, Config{})
	if err := rt.HandleRust("order.*", "demo.echo"); err != nil {
		t.Fatal(err)
	}
	rt.Handle("user.>", "users", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return AckReply([]byte("go:" + ev.Type))
	}))
	start(t, rt)
	ctx := context.Background()
	reply, err := rt.Call(ctx, event("order.created", "1", []byte("to rust")))
	if err != nil || string(reply.Data()) != "to rust" {
		t.Fatalf("order.created = %q, %v", reply.Data(), err)
	}
	reply.Release()
	reply, err = rt.Call(ctx, event("user.profile.updated", "2", nil))
	if err != nil || string(reply.Data()) != "go:user.profile.updated" {
		t.Fatalf("user.profile.updated = %q, %v", reply.Data(), err)
	}
	if _, err := rt.Call(ctx, event("invoice.sent", "3", nil)); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("unrouted: %v", err)
	}
	assertInvariant(t, rt)
}

func TestGoRouteShedsWithADeadLetter(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink})
	release := make(chan struct{})
	rt.Handle("slow", "slow", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		<-release
		return Ack()
	}), WithWorkers(1, 1), WithQueue(1), WithOverload(Shed))
	start(t, rt)
	ctx := context.Background()
	var receipts []*Receipt
	shed := 0
	for i := range 5 {
		r, err := rt.Submit(ctx, event("slow", fmt.Sprint(i), nil))
		switch {
		case errors.Is(err, ErrShed) && errors.Is(err, ErrOverloaded):
			shed++
		case err != nil:
			t.Fatal(err)
		default:
			receipts = append(receipts, r)
		}
	}
	close(release)
	for _, r := range receipts {
		if err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	assertInvariant(t, rt)
	if shed == 0 || len(sink.Records()) != shed || len(receipts)+shed != 5 {
		t.Fatalf("shed %d, dead letters %d, accepted %d", shed, len(sink.Records()), len(receipts))
	}
	for _, dl := range sink.Records() {
		if dl.Reason != deadletter.ReasonShed {
			t.Fatalf("dead letter reason %q", dl.Reason)
		}
	}
}

type lifecycleHandler struct {
	calls   *[]string
	warmErr error
}

func (h lifecycleHandler) Handle(ctx context.Context, ev *Event) Result { return Ack() }
func (h lifecycleHandler) Init(ctx context.Context) error {
	*h.calls = append(*h.calls, "init")
	return nil
}
func (h lifecycleHandler) WarmUp(ctx context.Context) error {
	*h.calls = append(*h.calls, "warmup")
	return h.warmErr
}
func (h lifecycleHandler) Close() error {
	*h.calls = append(*h.calls, "close")
	return nil
}

func TestLifecycleCallsInitWarmUpCloseAndNamesAFailure(t *testing.T) {
	var calls []string
	rt := newRegistered(t, Config{})
	if rt.State() != Registered {
		t.Fatalf("state %s", rt.State())
	}
	rt.Handle("life", "life", lifecycleHandler{calls: &calls})
	start(t, rt)
	if rt.State() != Running {
		t.Fatalf("state %s", rt.State())
	}
	if err := rt.Handle("late", "late", lifecycleHandler{calls: &calls}); !errors.Is(err, ErrInvalidRoute) {
		t.Fatalf("route added after Start: %v", err)
	}
	assertInvariant(t, rt)
	if fmt.Sprint(calls) != "[init warmup close]" {
		t.Fatalf("lifecycle calls %v", calls)
	}

	calls = nil
	rt = newRegistered(t, Config{})
	rt.Handle("cold", "cold-cache", lifecycleHandler{calls: &calls, warmErr: errors.New("cache unreachable")})
	err := rt.Start()
	if !errors.Is(err, ErrStart) || !bytes.Contains([]byte(err.Error()), []byte("cold-cache")) {
		t.Fatalf("Start = %v, want ErrStart naming cold-cache", err)
	}
	if rt.State() != Failed {
		t.Fatalf("state %s", rt.State())
	}
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rt.State() != Stopped {
		t.Fatalf("state after Shutdown %s", rt.State())
	}
}

func TestShutdownCancelsRunningGoHandlersAsRetryable(t *testing.T) {
	rt := newRegistered(t, Config{})
	started := make(chan struct{}, 10)
	rt.Handle("hang", "hang", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		started <- struct{}{}
		<-ctx.Done()
		return Retry(0, ctx.Err())
	}), WithWorkers(1, 1))
	start(t, rt)
	var receipts []*Receipt
	for i := range 3 {
		receipts = append(receipts, mustSubmit(t, rt, event("hang", fmt.Sprint(i), nil)))
	}
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := rt.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	for _, r := range receipts {
		var he *HandlerError
		if err := r.Wait(context.Background()); !errors.As(err, &he) || !he.Retryable() || he.DeadLetter != "" {
			t.Fatalf("settled with %v, want retryable and not dead-lettered", err)
		}
	}
	s := rt.Stats()
	if s.InFlight != 0 || s.Completed != s.Submitted {
		t.Fatalf("after shutdown: %+v", s)
	}
}

func TestRustRouteTimeoutCancelsTheTask(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{DeadLetters: sink})
	if err := rt.HandleRust("nap.*", "demo.sleep", WithTimeout(20*time.Millisecond), WithRetry(retry.Backoff{MaxAttempts: 1})); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	ev := event("nap.long", "1", nil)
	ev.Extensions = map[string]string{"sleep_ms": "60000"}
	_, err := rt.Call(context.Background(), ev)
	var he *HandlerError
	if !errors.As(err, &he) || he.Code() != "timeout" || he.DeadLetter != deadletter.ReasonMaxAttempts || he.Envelope.Runtime != "rust" {
		t.Fatalf("Call = %v, want a Rust timeout, dead-lettered", err)
	}
	assertInvariant(t, rt)
}

// Go → Rust → Go, with the Rust handler emitting the follow-up itself (demo.relay emits an
// event of the type in its "next" extension, upper-casing the payload).
func TestChainWithARustHandlerEmitting(t *testing.T) {
	rt := newRegistered(t, Config{})
	got := make(chan Event, 1)
	rt.Handle("signup.received", "intake", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		next := &Event{ID: ev.ID + "/normalize", Source: "/intake", Type: "demo.relay", Data: ev.Data,
			Extensions: map[string]string{"next": "signup.normalized"}}
		if err := Emit(ctx, next); err != nil {
			return Retry(0, err)
		}
		return Ack()
	}))
	rt.Handle("signup.normalized", "welcome", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		got <- cloneEvent(ev)
		return Ack()
	}))
	start(t, rt)
	root := event("signup.received", "s-1", []byte("ada"))
	root.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if err := mustSubmit(t, rt, root).Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	var final Event
	select {
	case final = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the event the Rust handler emitted never reached the Go handler")
	}
	if final.ID != "s-1/normalize/relay" || string(final.Data) != "ADA" || final.CorrelationID != "s-1" ||
		final.CausationID != "s-1/normalize" || final.TraceParent != root.TraceParent || final.Source != "/intake" {
		t.Fatalf("end of chain: %+v", final)
	}
	s := assertInvariant(t, rt)
	if s.Emitted != 1 || s.Rust.Emitted != 1 || s.Submitted != 3 {
		t.Fatalf("emitted go %d rust %d, submitted %d (root, Go→Rust, Rust→Go)", s.Emitted, s.Rust.Emitted, s.Submitted)
	}
}

// Rust → Rust → Go: a relay emits to a second Rust handler (an alias route, which Rust takes
// itself), which emits the last hop to a Go handler. The route travels in the "next"
// extension.
func TestChainRustToRust(t *testing.T) {
	rt := newRegistered(t, Config{})
	got := make(chan Event, 1)
	if err := rt.HandleRust("hop.two", "demo.relay"); err != nil {
		t.Fatal(err)
	}
	rt.Handle("hop.done", "sink", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		got <- cloneEvent(ev)
		return Ack()
	}))
	start(t, rt)
	first := event("demo.relay", "r-1", []byte("x"))
	first.Extensions = map[string]string{"next": "hop.two,hop.done"}
	mustSubmit(t, rt, first)
	var final Event
	select {
	case final = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the chain never reached its Go end")
	}
	if final.ID != "r-1/relay/relay" || final.CausationID != "r-1/relay" || final.CorrelationID != "r-1" || string(final.Data) != "X" {
		t.Fatalf("end of chain: %+v", final)
	}
	// The alias route stays in Rust (its handler runs the hop without a trip through Go);
	// only the last hop, to Go, is emitted to Go.
	s := assertInvariant(t, rt)
	if s.Rust.Emitted != 1 || s.Rust.Received != 1 || s.Rust.LocalDispatched != 1 || s.Submitted != 2 {
		t.Fatalf("rust emitted %d, received %d, dispatched locally %d, submitted %d", s.Rust.Emitted, s.Rust.Received, s.Rust.LocalDispatched, s.Submitted)
	}
}

func TestInProgressExtendsAGoHandlersDeadline(t *testing.T) {
	rt := newRegistered(t, Config{Retry: retry.Backoff{MaxAttempts: 1}})
	// The handler works past the deadline it was given; one that reports progress first
	// pushes that deadline back. No timer of the test's races the route's.
	patient := HandlerFunc(func(ctx context.Context, ev *Event) Result {
		given, ok := ctx.Deadline()
		if !ok {
			return Term(errors.New("no deadline"))
		}
		if ev.Subject == "report" {
			if err := InProgress(ctx, time.Minute); err != nil {
				return Retry(0, err)
			}
		}
		select {
		case <-time.After(time.Until(given) + 10*time.Millisecond):
		case <-ctx.Done():
			return Retry(0, ctx.Err())
		}
		return Ack()
	})
	rt.Handle("work", "patient", patient, WithTimeout(100*time.Millisecond))
	start(t, rt)
	ctx := context.Background()
	ev := event("work", "1", nil)
	ev.Subject = "report" // reports progress, then works past its 100 ms timeout
	if _, err := rt.Call(ctx, ev); err != nil {
		t.Fatalf("a handler reporting progress timed out: %v", err)
	}
	_, err := rt.Call(ctx, event("work", "2", nil)) // silent: times out
	var he *HandlerError
	if !errors.As(err, &he) || he.Code() != "timeout" {
		t.Fatalf("a silent slow handler: %v, want a timeout", err)
	}
	if err := InProgress(ctx, time.Second); !errors.Is(err, ErrNoHandlerContext) {
		t.Fatalf("InProgress outside a handler: %v", err)
	}
	assertInvariant(t, rt)
}

func TestGoWorkerPoolGrowsUnderLoadAndShrinksWhenIdle(t *testing.T) {
	rt := newRegistered(t, Config{})
	release := make(chan struct{})
	rt.Handle("job", "job", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		<-release
		return Ack()
	}), WithWorkers(1, 4), WithIdleTimeout(20*time.Millisecond))
	start(t, rt)
	if n := rt.Stats().GoWorkers; n != 1 {
		t.Fatalf("%d workers at rest, want the minimum 1", n)
	}
	var receipts []*Receipt
	for i := range 6 {
		receipts = append(receipts, mustSubmit(t, rt, event("job", fmt.Sprint(i), nil)))
	}
	waitFor(t, "the pool to grow to its maximum", func() bool { return rt.Stats().GoWorkers == 4 })
	close(release)
	for _, r := range receipts {
		if err := r.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the pool to shrink back", func() bool { return rt.Stats().GoWorkers == 1 })
	assertInvariant(t, rt)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// An event a Rust handler emits for a Rust route stays in Rust: no trip through Go.
func TestRustToRustStaysInRust(t *testing.T) {
	rt := newRegistered(t, Config{})
	got := make(chan Event, 1)
	rt.Handle("hop.done", "sink", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		got <- cloneEvent(ev)
		return Ack()
	}))
	start(t, rt)
	first := event("demo.relay", "l-1", []byte("q"))
	first.Extensions = map[string]string{"next": "demo.relay,hop.done"}
	mustSubmit(t, rt, first)
	var final Event
	select {
	case final = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the chain never reached its Go end")
	}
	if final.CausationID != "l-1/relay" || final.CorrelationID != "l-1" || string(final.Data) != "Q" {
		t.Fatalf("end of chain: %+v", final)
	}
	s := assertInvariant(t, rt)
	// Go saw the root and the last hop; the middle hop never left Rust.
	if s.Rust.LocalDispatched != 1 || s.Rust.LocalAcked != 1 || s.Rust.Emitted != 1 || s.Submitted != 2 || s.ToRust != 1 {
		t.Fatalf("local %d/%d, emitted to Go %d, submitted %d, to Rust %d",
			s.Rust.LocalDispatched, s.Rust.LocalAcked, s.Rust.Emitted, s.Submitted, s.ToRust)
	}
}

// A local event that fails comes to Go, which retries it through the rings.
func TestFailedLocalEventsAreRetriedByGo(t *testing.T) {
	sink := deadletter.NewMemorySink()
	rt := newRegistered(t, Config{Retry: retry.Backoff{MaxAttempts: 5, Initial: time.Millisecond}, DeadLetters: sink})
	start(t, rt)
	first := event("demo.relay", "f-1", nil)
	first.Extensions = map[string]string{"next": "demo.flaky"} // flaky succeeds on attempt 3
	mustSubmit(t, rt, first)
	waitFor(t, "the flaky event to succeed", func() bool {
		s := rt.Stats()
		return s.Rust.LocalForwarded == 1 && s.Retried == 2 && s.InFlight == 0
	})
	s := assertInvariant(t, rt)
	if s.DeadLettered != 0 || len(sink.Records()) != 0 {
		t.Fatalf("dead-lettered %d", s.DeadLettered)
	}
}

func TestASecondSettleIsAViolationNotADoubleCount(t *testing.T) {
	rt := newRuntime(t, Config{})
	r := &Receipt{w: receiptWaiter{e: rt.e, ch: make(chan struct{})}}
	r.w.Settle(nil, engine.ReplyOf([]byte("first")))
	r.w.Settle(errors.New("second"), engine.ReplyOf([]byte("second")))
	if err := r.Wait(context.Background()); err != nil || string(r.Reply()) != "first" {
		t.Fatalf("receipt = %q, %v: the first settle must stand", r.Reply(), err)
	}
	if v := rt.Stats().Violations; v != 1 {
		t.Fatalf("violations %d, want 1", v)
	}
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := rt.Stats(); s.Violations != 1 || s.Rust.Violations != 0 || s.InFlight != 0 {
		t.Fatalf("after shutdown: violations go %d rust %d, in flight %d", s.Violations, s.Rust.Violations, s.InFlight)
	}
}

// Each event goes to its own type's route whatever the type of the event before it on the
// same processor (intake keeps each processor's last exact match): exact routes in either
// runtime, a wildcard, a type no route matches, in runs and alternating.
func TestEventsOfMixedTypesEachFindTheirRoute(t *testing.T) {
	rt := newRegistered(t, Config{})
	for _, name := range []string{"mix.a", "mix.b", "mix.*"} {
		err := rt.Handle(name, "h-"+name, HandlerFunc(func(ctx context.Context, ev *Event) Result {
			return AckReply([]byte(name))
		}))
		if err != nil {
			t.Fatal(err)
		}
	}
	start(t, rt)
	defer shutdownClean(t, rt)
	want := map[string]string{"mix.a": "mix.a", "mix.b": "mix.b", "mix.c": "mix.*", "demo.upper": "X", "nomix": ""}
	order := []string{"mix.a", "mix.a", "mix.b", "mix.a", "mix.c", "mix.c", "mix.a", "demo.upper", "mix.b", "nomix", "mix.b", "mix.a"}
	for round := range 50 {
		for i, typ := range order {
			reply, err := rt.Call(context.Background(), event(typ, fmt.Sprint(round, i), []byte("x")))
			if want[typ] == "" {
				if !errors.Is(err, ErrNoRoute) {
					t.Fatalf("%s: %v, want ErrNoRoute", typ, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			if got := string(reply.Data()); got != want[typ] {
				t.Fatalf("round %d, %s went to the route of %q", round, typ, got)
			}
			reply.Release()
		}
	}
}
