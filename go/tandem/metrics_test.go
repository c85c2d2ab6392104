package tandem

import (
	"context"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// sums collects a counter's data points as "attr=value,..." -> value.
func sums(t *testing.T, rm metricdata.ResourceMetrics, name string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[p.Attributes.Encoded(attribute.DefaultEncoder())] = p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[p.Attributes.Encoded(attribute.DefaultEncoder())] = p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[p.Attributes.Encoded(attribute.DefaultEncoder())] = int64(p.Count)
				}
			}
		}
	}
	return out
}

func TestMetricsCountEventsByRouteAndRuntime(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	rt := newRegistered(t, Config{MeterProvider: mp, DeadLetters: deadletter.NewMemorySink(),
		Retry: retry.Backoff{MaxAttempts: 2, Initial: time.Millisecond}})
	rt.Handle("greet", "greeter", HandlerFunc(func(ctx context.Context, ev *Event) Result { return Ack() }))
	start(t, rt)
	ctx := context.Background()
	for i := range 3 {
		reply, err := rt.Call(ctx, event("demo.echo", string(rune('a'+i)), []byte("x")))
		if err != nil {
			t.Fatal(err)
		}
		reply.Release()
	}
	if _, err := rt.Call(ctx, event("greet", "g", nil)); err != nil {
		t.Fatal(err)
	}
	rt.Call(ctx, event("demo.fail", "f", []byte("retry"))) // retried once, then dead-lettered
	rt.Submit(ctx, event("nowhere", "n", nil))             // rejected at submit

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		metric, attrs string
		want          int64
	}{
		{"tandem.events.submitted", "route=demo.echo,runtime=rust,target=demo.echo", 3},
		{"tandem.events.submitted", "route=greet,runtime=go,target=greeter", 1},
		{"tandem.events.acknowledged", "route=demo.echo,runtime=rust,target=demo.echo", 3},
		{"tandem.events.acknowledged", "route=greet,runtime=go,target=greeter", 1},
		{"tandem.events.retried", "route=demo.fail,runtime=rust,target=demo.fail", 1},
		{"tandem.events.dead_lettered", "reason=max_attempts,route=demo.fail,runtime=rust,target=demo.fail", 1},
		{"tandem.events.rejected", "reason=no_route", 1},
		{"tandem.handler.duration", "outcome=ack,route=demo.echo,runtime=rust,target=demo.echo", 3},
		{"tandem.handler.duration", "outcome=retry,route=demo.fail,runtime=rust,target=demo.fail", 2},
		{"tandem.event.latency", "route=demo.echo,runtime=rust,target=demo.echo", 3},
		{"tandem.events.in_flight", "", 0},
		{"tandem.buffers.outstanding", "kind=request", 0},
		{"tandem.workers", "runtime=go,target=greeter", 1},
		{"tandem.target.in_flight", "runtime=go,target=greeter", 0},
	}
	for _, c := range checks {
		got, ok := sums(t, rm, c.metric)[c.attrs]
		if !ok || got != c.want {
			t.Errorf("%s{%s} = %d (present %v), want %d; all: %v", c.metric, c.attrs, got, ok, c.want, sums(t, rm, c.metric))
		}
	}
	assertInvariant(t, rt)
}

// A route split between runtimes, with a shadow: each handler's runs and the route's events
// carry the target that took them; the shadow's runs carry role=shadow and never count as the
// route's events; its comparisons count in shadow.results.
// A Call at idle crosses by running its own event: tandem.runs counts it, within
// tandem.crossings, as Stats does.
func TestMetricsCountACallsRun(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	rt := newRuntime(t, Config{MeterProvider: mp})
	ctx := context.Background()
	waitParked(t, rt)
	reply, err := rt.Call(ctx, event("demo.echo", "r", []byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	reply.Release()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	st := rt.Stats()
	runs, crossings := sums(t, rm, "tandem.runs")[""], sums(t, rm, "tandem.crossings")[""]
	if runs < 1 || uint64(runs) != st.Rust.Runs || runs > crossings {
		t.Fatalf("tandem.runs %d, tandem.crossings %d; Stats: %d runs, %d crossings", runs, crossings, st.Rust.Runs, st.Crossings)
	}
	shutdownClean(t, rt)
}

// meteredWithGoEcho is a started runtime whose metrics reader collects, with the Go handler
// go-echo (it replies with the event's data) registered beside the bundled Rust ones.
func meteredWithGoEcho(t *testing.T) (*Runtime, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	rt := newRegistered(t, Config{MeterProvider: mp})
	must(t, rt.Register("go-echo", HandlerFunc(func(ctx context.Context, ev *Event) Result { return AckReply(ev.Data) })))
	start(t, rt)
	return rt, reader
}

// A route swapped away from a handler and back counts on in the same series: the events
// before the swaps and after them, not the last handler's alone.
func TestMetricsCountOnAcrossSwaps(t *testing.T) {
	rt, reader := meteredWithGoEcho(t)
	calls := func(n int) {
		for i := range n {
			reply, err := rt.Call(context.Background(), event("demo.echo", strconv.Itoa(i), []byte("ab")))
			if err != nil {
				t.Fatal(err)
			}
			reply.Release()
		}
	}
	calls(2)
	must(t, rt.Swap("demo.echo", GoTarget("go-echo")))
	calls(1)
	must(t, rt.Swap("demo.echo", RustTarget("demo.echo")))
	calls(3)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tandem.events.submitted", "tandem.events.acknowledged"} {
		got := sums(t, rm, name)
		if got["route=demo.echo,runtime=rust,target=demo.echo"] != 5 || got["route=demo.echo,runtime=go,target=go-echo"] != 1 || len(got) != 2 {
			t.Errorf("%s: %v, want 5 on the Rust handler and 1 on the Go one", name, got)
		}
	}
	assertInvariant(t, rt)
}

func TestMetricsNameTheTargetAndCountShadowsApart(t *testing.T) {
	rt, reader := meteredWithGoEcho(t)
	must(t, rt.SetWeights("demo.echo", []Weighted{{RustTarget("demo.echo"), 1}, {GoTarget("go-echo"), 1}}))
	must(t, rt.Shadow("demo.echo", RustTarget("demo.upper")))
	const n = 200
	for i := range n {
		reply, err := rt.Call(context.Background(), event("demo.echo", strconv.Itoa(i), []byte("ab")))
		if err != nil {
			t.Fatal(err)
		}
		reply.Release()
	}
	waitFor(t, "the shadow's copies", func() bool { return rt.Stats().Shadow.Mismatched == n })
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sub := sums(t, rm, "tandem.events.submitted")
	rust, goSide := sub["route=demo.echo,runtime=rust,target=demo.echo"], sub["route=demo.echo,runtime=go,target=go-echo"]
	if rust+goSide != n || rust == 0 || goSide == 0 || len(sub) != 2 {
		t.Errorf("events.submitted by target: %v", sub)
	}
	runs := sums(t, rm, "tandem.handler.duration")
	if got := runs["outcome=ack,role=shadow,route=demo.echo,runtime=rust,target=demo.upper"]; got != n {
		t.Errorf("shadow runs %d, want %d; all %v", got, n, runs)
	}
	if got := sums(t, rm, "tandem.shadow.results")["result=mismatch,role=shadow,route=demo.echo,runtime=rust,target=demo.upper"]; got != n {
		t.Errorf("shadow.results mismatch = %d; all %v", got, sums(t, rm, "tandem.shadow.results"))
	}
	inflight := sums(t, rm, "tandem.target.in_flight")
	if v, ok := inflight["runtime=go,target=go-echo"]; !ok || v != 0 {
		t.Errorf("target.in_flight: %v", inflight)
	}
	assertInvariant(t, rt)
}
