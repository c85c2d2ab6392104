package tandem

import (
	"context"
	"io"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// BenchmarkCall is the Go → Rust → Go round trip over the rings with the no-op handler and
// a pre-built event: the submit path encodes into shared memory, so it must not allocate.
func BenchmarkCall(b *testing.B) {
	rt := newRuntime(b, Config{})
	defer rt.Shutdown(context.Background())
	ctx := context.Background()
	ev := event("demo.noop", "bench", make([]byte, 64))
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			reply, err := rt.Call(ctx, ev)
			if err != nil {
				b.Fatal(err)
			}
			reply.Release()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ev := event("demo.noop", "bench", make([]byte, 64))
			for pb.Next() {
				reply, err := rt.Call(ctx, ev)
				if err != nil {
					b.Error(err)
					return
				}
				reply.Release()
			}
		})
	})
}

func TestCallDoesNotAllocate(t *testing.T) {
	if raceDetector && LinkMode() == "purego" {
		// Under the race detector the purego call of a crossing allocates (the checked
		// pointer conversion of its argument); the production builds are checked without it.
		t.Skip("allocation counts of a purego crossing are not meaningful under -race")
	}
	rt := newRuntime(t, Config{})
	ctx := context.Background()
	ev := event("demo.noop", "alloc", make([]byte, 64))
	call := func() {
		reply, err := rt.Call(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		reply.Release()
	}
	call() // warm the waiter pool
	if n := testing.AllocsPerRun(200, call); n != 0 {
		t.Fatalf("Call allocates %.1f times per event, want 0", n)
	}
	shutdownClean(t, rt)
}

// BenchmarkCallWide is the same round trip from many goroutines (32 per P), so the rings carry
// many events at once and drain in batches: the throughput shape of a busy service.
func BenchmarkCallWide(b *testing.B) {
	rt := newRuntime(b, Config{})
	defer rt.Shutdown(context.Background())
	ctx := context.Background()
	for _, typ := range []string{"demo.noop", "demo.noop.inline"} {
		b.Run(typ, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				ev := event(typ, "bench", make([]byte, 64))
				for pb.Next() {
					reply, err := rt.Call(ctx, ev)
					if err != nil {
						b.Error(err)
						return
					}
					reply.Release()
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkCallObservability is the cost of observability on the serial round trip: none,
// Rust's logs forwarded, metrics only (an OpenTelemetry SDK meter with a manual reader), and
// tracing sampled at 100% and at 1% (an SDK tracer, spans recorded and dropped at the end,
// so only tandem's side is counted).
func BenchmarkCallObservability(b *testing.B) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	tp1 := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))))
	defer tp1.Shutdown(context.Background())
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"off", Config{}},
		// A logger at Info, its output discarded: Rust's records are forwarded (the handler
		// logs none).
		{"logs", Config{Logger: zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))}},
		{"metrics", Config{MeterProvider: mp}},
		{"tracing", Config{TracerProvider: tp}},
		// What a service samples in production: one trace in a hundred, parents' decisions kept.
		{"tracing-1%", Config{TracerProvider: tp1}},
		{"both", Config{MeterProvider: mp, TracerProvider: tp}},
	} {
		b.Run(c.name, func(b *testing.B) {
			rt := newRuntime(b, c.cfg)
			defer rt.Shutdown(context.Background())
			ctx := context.Background()
			ev := event("demo.noop.inline", "bench", make([]byte, 64))
			b.ReportAllocs()
			for b.Loop() {
				reply, err := rt.Call(ctx, ev)
				if err != nil {
					b.Fatal(err)
				}
				reply.Release()
			}
		})
	}
}
