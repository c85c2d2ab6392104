package tandem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
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

// A Rust handler's panic reaches the zap logger as a record naming the handler, the event
// and where it panicked, and Rust's default panic hook writes nothing to stderr. The test
// runs itself in a process of its own, whose stderr it reads.
func TestRustHandlerPanicIsLoggedNotPrinted(t *testing.T) {
	if os.Getenv("TANDEM_TEST_RUST_PANIC") == "1" {
		rustHandlerPanics(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRustHandlerPanicIsLoggedNotPrinted$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "TANDEM_TEST_RUST_PANIC=1", "RUST_BACKTRACE=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "--- PASS: TestRustHandlerPanicIsLoggedNotPrinted") {
		t.Fatalf("the test in a process of its own: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	if strings.Contains(stderr.String(), "asked to panic") || strings.Contains(stderr.String(), "panicked at") {
		t.Fatalf("a Rust handler's panic was written to stderr:\n%s", &stderr)
	}
}

func rustHandlerPanics(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	rt := newRegistered(t, Config{Logger: zap.New(core)})
	start(t, rt)
	_, err := rt.Call(context.Background(), event("demo.panic", "p-1", []byte("panic")))
	var he *HandlerError
	if !errors.As(err, &he) || he.Code() != "panic" {
		t.Fatalf("Call = %v, want a *HandlerError with code panic", err)
	}
	assertInvariant(t, rt) // the last batch of Rust records is flushed at shutdown
	entries := logs.FilterMessage("handler panicked: asked to panic").All()
	if len(entries) != 1 {
		t.Fatalf("%d records %q, want 1 (all: %v)", len(entries), "handler panicked: asked to panic", logs.All())
	}
	e := entries[0]
	f := e.ContextMap()
	if e.Level != zapcore.ErrorLevel || f["runtime"] != "rust" || f["handler"] != "panic" || f["event_id"] != "p-1" ||
		!strings.Contains(fmt.Sprint(f["location"]), "lib.rs:") || f["backtrace"] == nil {
		t.Errorf("the record: level %v, fields %v", e.Level, f)
	}
}
