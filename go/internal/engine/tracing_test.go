package engine

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// inject writes what the W3C propagator writes, for sampled and unsampled span contexts,
// with and without a tracestate, and nothing for an invalid one.
func TestInjectWritesWhatThePropagatorWrites(t *testing.T) {
	state, err := trace.ParseTraceState("vendor=a1,other=b-2")
	if err != nil {
		t.Fatal(err)
	}
	tid := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	sid := trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	for _, cfg := range []trace.SpanContextConfig{
		{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled},
		{TraceID: tid, SpanID: sid},
		{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled | 0x80, TraceState: state}, // flags past sampled are not carried
		{TraceID: tid}, // no span id: invalid
		{TraceID: tid, SpanID: sid, Remote: true}, // remote: carried as any
	} {
		sc := trace.NewSpanContext(cfg)
		want := envelope.Event{TraceParent: "before", TraceState: "before"}
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), eventCarrier{&want})
		got := envelope.Event{TraceParent: "before", TraceState: "before"}
		inject(sc, &got)
		if got.TraceParent != want.TraceParent || got.TraceState != want.TraceState {
			t.Errorf("%+v: inject wrote %q %q, the propagator %q %q", cfg, got.TraceParent, got.TraceState, want.TraceParent, want.TraceState)
		}
	}
}
