package tandem

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

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
