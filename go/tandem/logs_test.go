package tandem

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Every log line and span of one chain carries the same correlation_id and trace_id, the
// records Rust wrote included.
func TestOneChainSharesCorrelationAndTraceInLogs(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	rt := newRegistered(t, Config{Logger: zap.New(core), TracerProvider: tp})
	done := make(chan struct{})
	rt.Handle("signup.received", "intake", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		Logger(ctx).Info("received")
		next := &Event{ID: ev.ID + "/n", Source: "/intake", Type: "demo.relay", Data: ev.Data,
			Extensions: map[string]string{"next": "signup.normalized"}}
		if err := Emit(ctx, next); err != nil {
			return Retry(0, err)
		}
		return Ack()
	}))
	rt.Handle("signup.normalized", "welcome", HandlerFunc(func(ctx context.Context, ev *Event) Result {
		Logger(ctx).Info("welcomed")
		close(done)
		return Ack()
	}))
	start(t, rt)
	mustSubmit(t, rt, event("signup.received", "s-9", []byte("ada")))
	<-done
	assertInvariant(t, rt) // the last batch of Rust records is flushed at shutdown

	traceID := exp.GetSpans()[0].SpanContext.TraceID().String()
	want := map[string]string{"received": "go", "relaying": "rust", "welcomed": "go"}
	for msg, runtime := range want {
		entries := logs.FilterMessage(msg).All()
		if len(entries) != 1 {
			t.Fatalf("%d log lines %q, want 1 (all: %v)", len(entries), msg, logs.All())
		}
		f := entries[0].ContextMap()
		if f["runtime"] != runtime || f["correlation_id"] != "s-9" || f["trace_id"] != traceID || f["event_id"] == "" || f["handler"] == "" {
			t.Errorf("%q fields %v, want runtime %s, correlation s-9, trace %s", msg, f, runtime, traceID)
		}
	}
	if f := logs.FilterMessage("relaying").All()[0].ContextMap(); f["event_id"] != "s-9/n" || f["next"] != "signup.normalized" || f["attempt"] != "1" {
		t.Errorf("the Rust record's own fields: %v", f)
	}
}

func TestRustRecordsFollowTheLoggersLevel(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel) // info records are not wanted
	rt := newRegistered(t, Config{Logger: zap.New(core)})
	start(t, rt)
	ev := event("demo.relay", "r-1", nil)
	ev.Extensions = map[string]string{"next": "demo.noop"}
	if _, err := rt.Call(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	assertInvariant(t, rt)
	if n := logs.FilterMessage("relaying").Len(); n != 0 {
		t.Fatalf("%d info records from Rust reached a warn-level logger", n)
	}
}
