package tandem

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// eventOfSize returns a demo.echo event whose envelope is exactly size bytes, as
// envelope.EncodedEventSize counts them: data fills most of it and the ID the rest, one
// byte at a time (an ID of 24 to 255 bytes has a two-byte head, so each byte counts once).
func eventOfSize(t *testing.T, size int) *Event {
	t.Helper()
	ev := &Event{ID: strings.Repeat("i", 24), Source: "/test", Type: "demo.echo"}
	base := envelope.EncodedEventSize(ev)
	for n := size - base; n >= 0; n-- {
		ev.Data = make([]byte, n)
		if gap := size - envelope.EncodedEventSize(ev); gap >= 0 && gap <= 200 {
			ev.ID += strings.Repeat("i", gap)
			break
		}
	}
	if got := envelope.EncodedEventSize(ev); got != size {
		t.Fatalf("could not build an event of %d bytes (got %d)", size, got)
	}
	return ev
}

// MaxEventSize is inclusive: an envelope of exactly MaxEventSize bytes goes through Submit
// and Call, one byte more is an *EventTooLargeError, and EncodedEventSize is what decides,
// with tracing on too (the trace context tandem adds is not the caller's to budget for).
func TestMaxEventSizeIsInclusiveAndEncodedEventSizePredictsIt(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	for _, tc := range []struct {
		max    int
		traced bool
	}{{256, false}, {1024, false}, {64 << 10, false}, {256, true}, {1024, true}} {
		t.Run(fmt.Sprintf("max=%d,traced=%v", tc.max, tc.traced), func(t *testing.T) {
			cfg := Config{MaxEventSize: tc.max}
			if tc.traced {
				cfg.TracerProvider = tp
			}
			rt := newRuntime(t, cfg)
			ctx := context.Background()
			for size := tc.max - 3; size <= tc.max+2; size++ {
				ev := eventOfSize(t, size)
				a, err := rt.Submit(ctx, ev)
				reply, cerr := rt.Call(ctx, ev)
				if size <= tc.max {
					if err != nil {
						t.Errorf("Submit of %d bytes: %v", size, err)
					} else if err := a.Wait(ctx); err != nil {
						t.Errorf("%d bytes: handler: %v", size, err)
					}
					if cerr != nil || len(reply.Data()) != len(ev.Data) {
						t.Errorf("Call of %d bytes: %d bytes back, %v", size, len(reply.Data()), cerr)
					}
					reply.Release()
					continue
				}
				for _, err := range []error{err, cerr} {
					var tl *EventTooLargeError
					if !errors.Is(err, ErrEventTooLarge) || !errors.As(err, &tl) || tl.Size != size || tl.Max != tc.max {
						t.Errorf("%d bytes: %v, want an *EventTooLargeError{Size: %d, Max: %d}", size, err, size, tc.max)
					}
				}
			}
			shutdownClean(t, rt)
		})
	}
}

// An event too large for a request slot is refused at once, also when every slot is in
// flight: it never waits for a slot it could not use (the default overload policy blocks).
func TestATooLargeEventDoesNotWaitForASlot(t *testing.T) {
	rt := newRuntime(t, Config{MaxInFlight: 1, MaxEventSize: 512})
	ctx := context.Background()
	held := event("demo.sleep", "held", nil)
	held.Extensions = map[string]string{"sleep_ms": "2000"}
	a, err := rt.Submit(ctx, held)
	if err != nil {
		t.Fatal(err)
	}
	if st := rt.Stats(); st.FreeRequestSlots != 0 {
		t.Fatalf("%d request slots free, want the only one held", st.FreeRequestSlots)
	}
	waitFor, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, call := range []func() error{
		func() error { _, err := rt.Submit(waitFor, eventOfSize(t, 513)); return err },
		func() error { _, err := rt.Call(waitFor, eventOfSize(t, 600)); return err },
	} {
		var tl *EventTooLargeError
		if err := call(); !errors.As(err, &tl) || tl.Max != 512 || tl.Size <= 512 {
			t.Errorf("too large with no slot free: %v, want an *EventTooLargeError at once", err)
		}
	}
	select {
	case <-a.Done():
		t.Fatal("the held event settled: the refusals did not come while its slot was in flight")
	default:
	}
	shutdownClean(t, rt)
}

// Submit, Call and a Go handler's Emit refuse an event the envelope cannot carry with
// envelope.ErrInvalidEvent naming the field, before routing (an empty Type is invalid, not
// unroutable) and before it takes a slot or reaches either runtime.
func TestInvalidEventsAreRefusedAtSubmit(t *testing.T) {
	rt := newRegistered(t, Config{})
	counter := &countingPolicy{}
	if err := rt.HandleRust("rust.echo", "demo.echo", WithPolicy(counter)); err != nil {
		t.Fatal(err)
	}
	emitted := make(chan error, 1)
	if err := rt.Handle("go.echo", "echo", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return AckReply(ev.Data)
	})); err != nil {
		t.Fatal(err)
	}
	if err := rt.Handle("go.emit", "emitter", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		emitted <- Emit(ctx, &Event{ID: "e", Source: "/test", Type: "demo.echo", Extensions: map[string]string{"k": "\xff"}})
		return Ack()
	})); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	ctx := context.Background()
	for _, typ := range []string{"demo.echo", "rust.echo", "go.echo"} {
		for _, tc := range []struct {
			name  string
			ev    *Event
			field string
		}{
			{"empty type", &Event{ID: "1", Source: "/test"}, "Type is empty"},
			{"id not UTF-8", &Event{ID: "\xc3\x28", Source: "/test", Type: typ}, "ID"},
			{"source not UTF-8", &Event{ID: "1", Source: "/\xff", Type: typ}, "Source"},
			{"subject not UTF-8", &Event{ID: "1", Source: "/test", Type: typ, Subject: "\xed\xa0\x80"}, "Subject"},
			{"extension key not UTF-8", &Event{ID: "1", Source: "/test", Type: typ, Extensions: map[string]string{"\xfe": "v"}}, "Extensions key"},
			{"extension value not UTF-8", &Event{ID: "1", Source: "/test", Type: typ, Extensions: map[string]string{"k": "\xff"}}, `Extensions["k"]`},
		} {
			_, err := rt.Submit(ctx, tc.ev)
			_, cerr := rt.Call(ctx, tc.ev)
			for _, err := range []error{err, cerr} {
				if !errors.Is(err, envelope.ErrInvalidEvent) || errors.Is(err, ErrNoRoute) || !strings.Contains(err.Error(), tc.field) {
					t.Errorf("%s, %s: %v, want envelope.ErrInvalidEvent naming %s", typ, tc.name, err, tc.field)
				}
			}
		}
	}
	s := rt.Stats()
	if s.Submitted != 0 || s.ToRust != 0 || counter.admitted.Load() != 0 {
		t.Errorf("refused events were accepted: submitted %d, published to Rust %d, admitted by a policy %d",
			s.Submitted, s.ToRust, counter.admitted.Load())
	}
	mustSubmit(t, rt, event("go.emit", "1", nil))
	if err := <-emitted; !errors.Is(err, envelope.ErrInvalidEvent) || !strings.Contains(err.Error(), `Extensions["k"]`) {
		t.Errorf("Emit: %v, want envelope.ErrInvalidEvent naming the extension", err)
	}
	shutdownClean(t, rt)
}

// MaxEventSize and MaxReplySize take 256 B to 64 MiB, both ends included, as Config says.
func TestSizeLimitsTakeTheDocumentedRange(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{MaxEventSize: 255}, false},
		{Config{MaxEventSize: 256}, true},
		{Config{MaxEventSize: 64 << 20, MaxInFlight: 1}, true},
		{Config{MaxEventSize: 64<<20 + 1, MaxInFlight: 1}, false},
		{Config{MaxReplySize: 255}, false},
		{Config{MaxReplySize: 256}, true},
		{Config{MaxReplySize: 64 << 20, ReplySlots: 1}, true},
		{Config{MaxReplySize: 64<<20 + 1, ReplySlots: 1}, false},
	} {
		rt, err := New(tc.cfg)
		switch {
		case tc.ok && err != nil:
			t.Errorf("MaxEventSize %d, MaxReplySize %d: %v", tc.cfg.MaxEventSize, tc.cfg.MaxReplySize, err)
		case !tc.ok && !errors.Is(err, ErrInvalidConfig):
			t.Errorf("MaxEventSize %d, MaxReplySize %d: %v, want ErrInvalidConfig", tc.cfg.MaxEventSize, tc.cfg.MaxReplySize, err)
		}
		if rt != nil {
			if err := rt.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}
	}
}

// countingPolicy admits every event and counts them.
type countingPolicy struct{ admitted atomic.Int64 }

func (p *countingPolicy) Wrap(next Handler) Handler { return next }

func (p *countingPolicy) Admit(context.Context, *Event) (func(error), error) {
	p.admitted.Add(1)
	return func(error) {}, nil
}
