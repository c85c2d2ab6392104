package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandemrt/tandem/go/internal/natsembed"
	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/cloudevents"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	tjs "github.com/tandemrt/tandem/go/tandem/jetstream"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// natsServer runs a real nats-server with JetStream on a loopback port for the test, and
// returns a JetStream client of it.
func natsServer(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := natsembed.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv.JS
}

func stream(t *testing.T, js jetstream.JetStream, name string, subjects ...string) {
	t.Helper()
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: name, Subjects: subjects, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
}

func publish(t *testing.T, js jetstream.JetStream, subject string, ev *tandem.Event) {
	t.Helper()
	h, body, err := cloudevents.EncodeMessage(ev, cloudevents.Binary)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Header: nats.Header(h), Data: body}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Each outcome maps onto JetStream's acknowledgement: an ack acks; a retry goes back to
// the server with its delay and comes again as the next delivery; a Term, a message past
// MaxDeliver and a message that is not an event are terminated, and the dead-letter
// stream holds exactly those. Go and Rust handlers alike.
func TestSourceMapsOutcomesOntoAcknowledgements(t *testing.T) {
	js := natsServer(t)
	ctx := context.Background()
	stream(t, js, "EVENTS", "ev.>")
	stream(t, js, "DLQ", "dlq.>")
	if _, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "workers",
		AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 3, AckWait: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	sink := &tjs.DeadLetterSink{JS: js, Subject: "dlq.events"}
	rt, err := tandem.New(tandem.Config{DeadLetters: sink, Retry: retry.Backoff{MaxAttempts: 10, Initial: time.Millisecond, Max: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		attempts = map[string][]uint32{}
		acked    atomic.Int64
	)
	record := func(ev *tandem.Event) {
		mu.Lock()
		attempts[ev.ID] = append(attempts[ev.ID], ev.Attempt)
		mu.Unlock()
	}
	handle := func(pattern string, h func(*tandem.Event) tandem.Result) {
		if err := rt.Handle(pattern, pattern, tandem.HandlerFunc(func(_ context.Context, ev *tandem.Event) tandem.Result {
			record(ev)
			return h(ev)
		})); err != nil {
			t.Fatal(err)
		}
	}
	handle("test.ok", func(*tandem.Event) tandem.Result { acked.Add(1); return tandem.Ack() })
	handle("test.flaky", func(ev *tandem.Event) tandem.Result {
		if ev.Attempt < 2 {
			return tandem.Retry(20*time.Millisecond, tandem.Errorf("unavailable", "first delivery fails"))
		}
		acked.Add(1)
		return tandem.Ack()
	})
	handle("test.bad", func(*tandem.Event) tandem.Result { return tandem.Term(tandem.Errorf("invalid", "never")) })
	handle("test.always", func(*tandem.Event) tandem.Result {
		return tandem.Retry(time.Millisecond, tandem.Errorf("unavailable", "always"))
	})
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())

	const oks = 50
	for i := range oks {
		publish(t, js, "ev.ok", &tandem.Event{ID: fmt.Sprint("ok-", i), Source: "/test", Type: "test.ok"})
	}
	publish(t, js, "ev.flaky", &tandem.Event{ID: "flaky", Source: "/test", Type: "test.flaky"})
	publish(t, js, "ev.bad", &tandem.Event{ID: "bad", Source: "/test", Type: "test.bad"})
	publish(t, js, "ev.always", &tandem.Event{ID: "always", Source: "/test", Type: "test.always"})
	publish(t, js, "ev.upper", &tandem.Event{ID: "upper", Source: "/test", Type: "demo.upper", Data: []byte("x")})
	if _, err := js.Publish(ctx, "ev.garbage", []byte("not an event")); err != nil {
		t.Fatal(err)
	}

	src, err := tjs.NewSource(ctx, rt, js, tjs.SourceConfig{Stream: "EVENTS", Consumer: "workers", MaxInFlight: 8, DeadLetters: sink, FetchWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- src.Run(runCtx) }()

	// 50 oks, flaky, upper acked; bad, always, garbage terminated.
	waitFor(t, "every message settled", func() bool {
		st := src.Stats()
		return st.Acked == oks+2 && st.Terminated == 3
	})
	stop()
	if err := <-ran; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	st := src.Stats()
	if st.NakedWithDelay != 3 || st.Undecodable != 1 || st.InFlight != 0 || st.AckErrors != 0 {
		t.Fatalf("source stats %+v: want 3 naks with delay (flaky once, always twice), 1 undecodable, none in flight", st)
	}
	mu.Lock()
	if got := attempts["flaky"]; !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("flaky delivered as attempts %v, want [1 2]", got)
	}
	if got := attempts["always"]; !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Errorf("always delivered as attempts %v, want [1 2 3] (MaxDeliver 3)", got)
	}
	mu.Unlock()
	info, err := js.Consumer(ctx, "EVENTS", "workers")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := info.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.NumAckPending != 0 || ci.NumPending != 0 {
		t.Fatalf("consumer: %d pending acks, %d pending messages; want none", ci.NumAckPending, ci.NumPending)
	}
	letters, err := tjs.ReadDeadLetters(ctx, js, "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]deadletter.Reason{}
	for _, l := range letters {
		reasons[l.EventID] = l.Reason
	}
	want := map[string]deadletter.Reason{"bad": deadletter.ReasonTerm, "always": deadletter.ReasonMaxAttempts, "": deadletter.ReasonDecode}
	if len(letters) != 3 || !maps(reasons, want) {
		t.Fatalf("dead letters %v, want exactly %v", reasons, want)
	}
	if rst := rt.Stats(); rst.HandedBack != 3 {
		t.Fatalf("runtime handed back %d retries, want 3", rst.HandedBack)
	}
}

func maps(a, b map[string]deadletter.Reason) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A Publisher stores each event once in its stream, with its attributes in CloudEvents
// headers and the idempotency key as Nats-Msg-Id: the same event published twice is one
// message. A message that would go nowhere is a retryable failure.
func TestPublisherStoresEachEventOnce(t *testing.T) {
	js := natsServer(t)
	ctx := context.Background()
	stream(t, js, "OUT", "out.>")
	rt, err := tandem.New(tandem.Config{Retry: retry.Backoff{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	pub := tjs.Publisher(js, tjs.PublisherConfig{Subject: func(ev *tandem.Event) string { return "out." + ev.Subject }})
	if err := rt.Handle("order.>", "to-jetstream", pub); err != nil {
		t.Fatal(err)
	}
	if err := rt.Handle("lost.>", "to-nowhere", tjs.Publisher(js, tjs.PublisherConfig{})); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	ev := &tandem.Event{ID: "1", Source: "/orders", Type: "order.priced", Subject: "eu", IdempotencyKey: "order-1-priced",
		CorrelationID: "c-1", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Data: []byte(`{"total":3}`), DataContentType: "application/json"}
	for range 2 {
		if _, err := rt.Call(ctx, ev); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	st, err := js.Stream(ctx, "OUT")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages in the stream, want 1: the duplicate window drops the second", info.State.Msgs)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "out.eu" || msg.Header.Get("Nats-Msg-Id") != "order-1-priced" || msg.Header.Get("Ce-Traceparent") == "" || msg.Header.Get("Ce-Correlationid") != "c-1" {
		t.Fatalf("message %s with headers %v", msg.Subject, msg.Header)
	}
	back, err := cloudevents.DecodeMessage(msg.Header, msg.Data)
	if err != nil || back.ID != ev.ID || back.CorrelationID != "c-1" || string(back.Data) != `{"total":3}` {
		t.Fatalf("the stored message reads back as %+v, %v", back, err)
	}
	_, err = rt.Call(ctx, &tandem.Event{ID: "2", Source: "/orders", Type: "lost.order"})
	var he *tandem.HandlerError
	if !errors.As(err, &he) || he.Code() != "publish_failed" || !he.Retryable() {
		t.Fatalf("publishing to a subject no stream captures: %v, want a retryable publish_failed", err)
	}
}

// Shutdown cuts a running event short: its message is nakked, and another process's
// Source (here a second runtime) delivers it again: at least once, never lost.
func TestShutdownHandsMessagesToAnotherProcess(t *testing.T) {
	js := natsServer(t)
	ctx := context.Background()
	stream(t, js, "EVENTS", "ev.>")
	if _, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 1)
	first, err := tandem.New(tandem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Handle("test.slow", "slow", tandem.HandlerFunc(func(ctx context.Context, _ *tandem.Event) tandem.Result {
		started <- struct{}{}
		<-ctx.Done()
		return tandem.Retry(0, ctx.Err())
	})); err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	publish(t, js, "ev.slow", &tandem.Event{ID: "slow", Source: "/test", Type: "test.slow"})
	src1, err := tjs.NewSource(ctx, first, js, tjs.SourceConfig{Stream: "EVENTS", Consumer: "workers", FetchWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx1, stop1 := context.WithCancel(ctx)
	ran1 := make(chan error, 1)
	go func() { ran1 <- src1.Run(ctx1) }()
	<-started
	stop1()
	shutdown, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_ = first.Shutdown(shutdown)
	if err := <-ran1; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if st := src1.Stats(); st.Naked+st.NakedWithDelay == 0 || st.Acked != 0 || st.InFlight != 0 {
		t.Fatalf("first source %+v: want the message nakked", st)
	}

	second, err := tandem.New(tandem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint32, 1)
	if err := second.Handle("test.slow", "quick", tandem.HandlerFunc(func(_ context.Context, ev *tandem.Event) tandem.Result {
		got <- ev.Attempt
		return tandem.Ack()
	})); err != nil {
		t.Fatal(err)
	}
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	defer second.Shutdown(context.Background())
	src2, err := tjs.NewSource(ctx, second, js, tjs.SourceConfig{Stream: "EVENTS", Consumer: "workers", FetchWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, stop2 := context.WithCancel(ctx)
	defer stop2()
	go func() { _ = src2.Run(ctx2) }()
	select {
	case attempt := <-got:
		// 2, or 3 when the first source's last fetch took the nakked message and handed it
		// back to the server, its runtime closed.
		if attempt < 2 {
			t.Fatalf("delivered again as attempt %d, want a redelivery", attempt)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the nakked message never came to the second process")
	}
	waitFor(t, "the second source to ack", func() bool { return src2.Stats().Acked == 1 })
}

// A source buffers what the server streams ahead of the messages it has taken. When Run
// ends, it gives the buffer back: each buffered message is nakked, and another consumer
// has every message not acknowledged at once, long before its AckWait.
func TestRunGivesBackWhatItBuffered(t *testing.T) {
	js := natsServer(t)
	ctx := context.Background()
	stream(t, js, "EVENTS", "ev.>")
	if _, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute}); err != nil {
		t.Fatal(err)
	}
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var releaseOnce sync.Once
	let := func() { releaseOnce.Do(func() { close(release) }) }
	defer let() // before the runtime's Shutdown below, which waits for the handlers
	started := make(chan struct{}, 64)
	if err := rt.Handle("test.held", "held", tandem.HandlerFunc(func(ctx context.Context, _ *tandem.Event) tandem.Result {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return tandem.Ack()
	})); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = rt.Shutdown(sctx)
	}()
	const published = 40
	for i := range published {
		publish(t, js, "ev.held", &tandem.Event{ID: fmt.Sprint(i), Source: "/test", Type: "test.held"})
	}
	// Eight taken (some held by the handlers, the rest waiting for one); the server streams
	// more ahead of them.
	src, err := tjs.NewSource(ctx, rt, js, tjs.SourceConfig{Stream: "EVENTS", Consumer: "workers", MaxInFlight: 8})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- src.Run(runCtx) }()
	<-started
	waitFor(t, "eight messages taken", func() bool { return src.Stats().InFlight == 8 })
	stop()
	let()
	if err := <-ran; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	st := src.Stats()
	if st.Acked != 8 || st.InFlight != 0 || st.Fetched != st.Acked+st.Naked {
		t.Fatalf("stats %+v: want the eight taken acknowledged, and what was buffered nakked", st)
	}
	t.Logf("gave back %d buffered messages", st.Naked)
	// Every message not acknowledged is the server's again at once: each comes to a plain
	// consumer within a second, far inside the minute's AckWait.
	cons, err := js.Consumer(ctx, "EVENTS", "workers")
	if err != nil {
		t.Fatal(err)
	}
	for i := range published - 8 {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatalf("message %d of the %d not acknowledged: %v", i, published-8, err)
		}
		if err := msg.Ack(); err != nil {
			t.Fatal(err)
		}
	}
}
