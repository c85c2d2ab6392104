package tandem

import (
	"context"
	"errors"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

func spansByName(spans tracetest.SpanStubs) map[string][]tracetest.SpanStub {
	out := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		out[s.Name] = append(out[s.Name], s)
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// One trace follows a Go → Rust → Go chain: each delivery's span is the child of its event's
// publish span, the Rust span carries Rust's own times, and everything shares one trace id.
func TestOneTraceAcrossGoAndRust(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	rt := newRegistered(t, Config{TracerProvider: tp})
	done := make(chan struct{})
	rt.Handle("signup.received", "intake", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		next := &Event{ID: ev.ID + "/n", Source: "/intake", Type: "demo.relay", Data: ev.Data,
			Extensions: map[string]string{"next": "signup.normalized"}}
		if err := Emit(ctx, next); err != nil {
			return Retry(0, err)
		}
		return Ack()
	}))
	rt.Handle("signup.normalized", "welcome", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		close(done)
		return Ack()
	}))
	start(t, rt)
	before := time.Now()
	mustSubmit(t, rt, event("signup.received", "s-1", []byte("ada")))
	<-done
	assertInvariant(t, rt)
	after := time.Now()

	spans := spansByName(exp.GetSpans())
	one := func(name string) tracetest.SpanStub {
		t.Helper()
		if len(spans[name]) != 1 {
			t.Fatalf("%d spans named %q, want 1 (all: %v)", len(spans[name]), name, spans)
		}
		return spans[name][0]
	}
	pubRoot, procRoot := one("publish signup.received"), one("process signup.received")
	pubRelay, procRelay := one("publish demo.relay"), one("process demo.relay")
	pubEnd, procEnd := one("publish signup.normalized"), one("process signup.normalized")
	traceID := pubRoot.SpanContext.TraceID()
	for _, s := range []tracetest.SpanStub{procRoot, pubRelay, procRelay, pubEnd, procEnd} {
		if s.SpanContext.TraceID() != traceID {
			t.Fatalf("%s is in trace %s, want %s", s.Name, s.SpanContext.TraceID(), traceID)
		}
	}
	parentIs := func(child, parent tracetest.SpanStub) {
		t.Helper()
		if child.Parent.SpanID() != parent.SpanContext.SpanID() {
			t.Errorf("%s's parent is %s, want %s", child.Name, child.Parent.SpanID(), parent.Name)
		}
	}
	parentIs(procRoot, pubRoot)
	parentIs(pubRelay, procRoot) // the Go handler emitted it
	parentIs(procRelay, pubRelay)
	parentIs(pubEnd, pubRelay) // the Rust handler emitted it: Rust carries its event's context
	parentIs(procEnd, pubEnd)
	if procRelay.SpanKind != trace.SpanKindConsumer || pubRelay.SpanKind != trace.SpanKindProducer {
		t.Errorf("kinds: process %v, publish %v", procRelay.SpanKind, pubRelay.SpanKind)
	}
	if attr(procRelay, "tandem.runtime") != "rust" || attr(procRoot, "tandem.runtime") != "go" {
		t.Errorf("runtimes: relay %q, root %q", attr(procRelay, "tandem.runtime"), attr(procRoot, "tandem.runtime"))
	}
	if procRelay.StartTime.Before(before) || procRelay.EndTime.After(after) || procRelay.EndTime.Before(procRelay.StartTime) {
		t.Errorf("Rust span times %v..%v outside the test's %v..%v", procRelay.StartTime, procRelay.EndTime, before, after)
	}
}

func TestEachRetryIsASpanAndDeadLetteringIsMarked(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	rt := newRegistered(t, Config{TracerProvider: tp, Retry: retry.Backoff{MaxAttempts: 3, Initial: time.Millisecond}, DeadLetters: deadletter.NewMemorySink()})
	start(t, rt)
	_, err := rt.Call(context.Background(), flaky("never", 100))
	var he *HandlerError
	if !errors.As(err, &he) || he.DeadLetter != deadletter.ReasonMaxAttempts {
		t.Fatalf("Call = %v", err)
	}
	assertInvariant(t, rt)
	procs := spansByName(exp.GetSpans())["process demo.flaky"]
	if len(procs) != 3 {
		t.Fatalf("%d process spans, want one per delivery (3)", len(procs))
	}
	marked := 0
	for i, s := range procs {
		if got := attr(s, "tandem.attempt"); got != []string{"1", "2", "3"}[i] {
			t.Errorf("span %d attempt %s", i, got)
		}
		for _, e := range s.Events {
			if e.Name == "tandem.dead_lettered" {
				marked++
			}
		}
		if s.Status.Code.String() != "Error" {
			t.Errorf("span %d status %v", i, s.Status)
		}
	}
	if marked != 1 {
		t.Fatalf("%d spans marked dead-lettered, want the last one", marked)
	}
}

// A shadow's run, in either runtime, is a span of the primary's trace, marked tandem.shadow.
func TestAShadowsRunJoinsThePrimarysTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	rt := newRegistered(t, Config{TracerProvider: tp})
	must(t, rt.Register("go-echo", HandlerFunc(func(ctx context.Context, ev *Event) Result { return AckReply(ev.Data) })))
	start(t, rt)
	for i, shadow := range []Target{GoTarget("go-echo"), RustTarget("demo.echo.v2")} {
		must(t, rt.Shadow("demo.echo", shadow))
		if _, err := rt.Call(context.Background(), event("demo.echo", string(rune('a'+i)), []byte("x"))); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the copy", func() bool { return info(t, rt, "demo.echo").Shadowed.Matched == uint64(i+1) })
	}
	assertInvariant(t, rt)
	var shadows, primaries []tracetest.SpanStub
	for _, s := range spansByName(exp.GetSpans())["process demo.echo"] {
		if attr(s, "tandem.shadow") == "true" {
			shadows = append(shadows, s)
		} else {
			primaries = append(primaries, s)
		}
	}
	if len(shadows) != 2 || len(primaries) != 2 {
		t.Fatalf("%d shadow spans, %d primary spans", len(shadows), len(primaries))
	}
	for i, s := range shadows {
		if s.SpanContext.TraceID() != primaries[i].SpanContext.TraceID() || s.Parent.SpanID() != primaries[i].Parent.SpanID() {
			t.Errorf("shadow span %d (%s) is not a sibling of its primary's", i, attr(s, "tandem.handler"))
		}
	}
	if attr(shadows[0], "tandem.runtime") != "go" || attr(shadows[1], "tandem.runtime") != "rust" {
		t.Errorf("shadow spans: %s, %s", attr(shadows[0], "tandem.runtime"), attr(shadows[1], "tandem.runtime"))
	}
}

// A Rust handler's call continues its event's trace: the called event's publish span is a
// child of the caller's, and the Go callee's process span a child of that.
func TestARustCallContinuesTheCallersTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	rt := newRegistered(t, Config{TracerProvider: tp})
	rt.Handle("greet", "greeter", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		return AckReply(ev.Data)
	}))
	start(t, rt)
	if got := mustCall(t, rt, ask("tr-1", "greet", []byte("hi"))); string(got) != "hi" {
		t.Fatalf("reply %q", got)
	}
	assertInvariant(t, rt)
	spans := spansByName(exp.GetSpans())
	if len(spans["publish demo.ask"]) != 1 || len(spans["publish greet"]) != 1 || len(spans["process greet"]) != 1 {
		t.Fatalf("spans: %v", spans)
	}
	caller, pub, proc := spans["publish demo.ask"][0], spans["publish greet"][0], spans["process greet"][0]
	if pub.SpanContext.TraceID() != caller.SpanContext.TraceID() || proc.SpanContext.TraceID() != caller.SpanContext.TraceID() {
		t.Fatal("the callee's spans left the caller's trace")
	}
	if pub.Parent.SpanID() != caller.SpanContext.SpanID() || proc.Parent.SpanID() != pub.SpanContext.SpanID() {
		t.Fatal("the callee's publish span is not the caller's child, or its process span not the publish span's")
	}
}

// An event its sampler does not sample records no span, in either runtime, and still carries
// its trace context to both: a Rust handler reads a traceparent of its trace (flags 00), and a
// Go handler's context holds a span of it, so what they emit stays in the trace.
func TestAnUnsampledEventRecordsNothingAndCarriesItsTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	defer tp.Shutdown(context.Background())
	rt := newRegistered(t, Config{TracerProvider: tp})
	var goSpan trace.SpanContext
	rt.Handle("unsampled.go", "go-side", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		goSpan = trace.SpanContextFromContext(ctx)
		return Ack()
	}))
	start(t, rt)
	got := reflected(t, rt, event("demo.reflect", "u-1", []byte("x")))
	tp1, err := trace.TraceIDFromHex(got.TraceParent[3:35])
	if err != nil || len(got.TraceParent) != 55 || got.TraceParent[:3] != "00-" || got.TraceParent[52:] != "-00" || !tp1.IsValid() {
		t.Fatalf("the Rust handler read traceparent %q (%v), want an unsampled one", got.TraceParent, err)
	}
	if _, err := rt.Call(context.Background(), event("unsampled.go", "u-2", nil)); err != nil {
		t.Fatal(err)
	}
	if !goSpan.IsValid() || goSpan.IsSampled() {
		t.Fatalf("the Go handler's span context %v, want a valid unsampled one", goSpan)
	}
	assertInvariant(t, rt)
	if spans := exp.GetSpans(); len(spans) != 0 {
		t.Fatalf("%d spans recorded for unsampled events: %v", len(spans), spansByName(spans))
	}
}
