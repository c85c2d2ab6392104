package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tandemrt/tandem/go/tandem"
)

// observability is the demo's metrics (Prometheus on -http) and tracing (-trace, -otlp).
type observability struct {
	registry *prometheus.Registry
	meters   *sdkmetric.MeterProvider
	tracers  *sdktrace.TracerProvider
	chain    *tracetest.InMemoryExporter // the one traced chain, for -trace
	server   *http.Server
	addr     string
}

func newObservability(traceOne bool, otlpEndpoint string) (*observability, error) {
	o := &observability{registry: prometheus.NewRegistry()}
	exporter, err := otelprom.New(otelprom.WithRegisterer(o.registry))
	if err != nil {
		return nil, err
	}
	o.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	var opts []sdktrace.TracerProviderOption
	if traceOne {
		o.chain = tracetest.NewInMemoryExporter()
		opts = append(opts, sdktrace.WithSyncer(o.chain), sdktrace.WithSampler(&firstChain{root: "publish " + typeOrderPlaced}))
	}
	if otlpEndpoint != "" {
		exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(otlpEndpoint))
		if err != nil {
			return nil, fmt.Errorf("-otlp %s: %w", otlpEndpoint, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
		if !traceOne {
			opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
		}
	}
	if len(opts) > 0 {
		o.tracers = sdktrace.NewTracerProvider(opts...)
	}
	return o, nil
}

func (o *observability) tracerProvider() trace.TracerProvider {
	if o.tracers == nil {
		return nil
	}
	return o.tracers
}

// serve starts /metrics, /healthz and /readyz on addr (a loopback address by default). A
// port already in use is reported, not fatal: the demo still runs.
func (o *observability) serve(rt *tandem.Runtime, addr string, warn io.Writer) {
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(warn, "tandem: not serving metrics: %v\n", err)
		return
	}
	o.addr = ln.Addr().String()
	o.server = &http.Server{Handler: rt.HTTPHandler(promhttp.HandlerFor(o.registry, promhttp.HandlerOpts{})),
		ReadHeaderTimeout: 5 * time.Second}
	go o.server.Serve(ln)
}

func (o *observability) close() {
	if o.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		o.server.Shutdown(ctx)
	}
	if o.tracers != nil {
		o.tracers.Shutdown(context.Background())
	}
	o.meters.Shutdown(context.Background())
}

// firstChain samples the first trace whose root span has the given name, and everything in
// it, and nothing else: the demo prints one chain.
type firstChain struct {
	root  string
	mu    sync.Mutex
	trace trace.TraceID
	taken bool
}

func (s *firstChain) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	psc := trace.SpanContextFromContext(p.ParentContext)
	switch {
	case s.taken && p.TraceID == s.trace:
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: psc.TraceState()}
	case !s.taken && !psc.IsValid() && p.Name == s.root:
		s.taken, s.trace = true, p.TraceID
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: psc.TraceState()}
}

func (s *firstChain) Description() string { return "FirstChain{" + s.root + "}" }

// printChain writes the traced chain as an indented tree: span, runtime, start offset and
// duration, so both runtimes show in one trace.
func (o *observability) printChain(w io.Writer) error {
	if o.chain == nil {
		return nil
	}
	spans := o.chain.GetSpans()
	if len(spans) == 0 {
		return errors.New("no chain was traced")
	}
	children := map[trace.SpanID][]tracetest.SpanStub{}
	ids := map[trace.SpanID]bool{}
	for _, s := range spans {
		ids[s.SpanContext.SpanID()] = true
	}
	var roots []tracetest.SpanStub
	for _, s := range spans {
		if p := s.Parent.SpanID(); s.Parent.IsValid() && ids[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	t0 := roots[0].StartTime
	for _, r := range roots {
		if r.StartTime.Before(t0) {
			t0 = r.StartTime
		}
	}
	fmt.Fprintf(w, "trace %s (%d spans)\n", spans[0].SpanContext.TraceID(), len(spans))
	var walk func(s tracetest.SpanStub, depth int)
	walk = func(s tracetest.SpanStub, depth int) {
		runtime := "go"
		for _, kv := range s.Attributes {
			if kv.Key == "tandem.runtime" {
				runtime = kv.Value.AsString()
			}
		}
		status := ""
		if s.Status.Code.String() == "Error" {
			status = "  error: " + s.Status.Description
		}
		fmt.Fprintf(w, "  %s%-34s %-4s +%-9v %v%s\n", strings.Repeat("  ", depth), s.Name, runtime,
			s.StartTime.Sub(t0).Round(time.Microsecond), s.EndTime.Sub(s.StartTime).Round(time.Microsecond), status)
		kids := children[s.SpanContext.SpanID()]
		sort.Slice(kids, func(i, j int) bool { return kids[i].StartTime.Before(kids[j].StartTime) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return nil
}
