package tandem

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestHealthReadinessAndPrometheusMetrics(t *testing.T) {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	rt := newRegistered(t, Config{MeterProvider: mp})
	srv := httptest.NewServer(rt.HTTPHandler(promhttp.HandlerFor(registry, promhttp.HandlerOpts{})))
	defer srv.Close()

	if code, _ := get(t, srv, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before Start = %d, want 503", code)
	}
	if code, _ := get(t, srv, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz before Start = %d, want 200", code)
	}
	start(t, rt)
	if code, body := get(t, srv, "/readyz"); code != http.StatusOK || !strings.Contains(body, "running") {
		t.Fatalf("/readyz running = %d %q", code, body)
	}
	reply, err := rt.Call(context.Background(), event("demo.echo", "1", []byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	reply.Release()
	code, body := get(t, srv, "/metrics")
	if code != http.StatusOK || !strings.Contains(body, `tandem_events_submitted_total{`) || !strings.Contains(body, `route="demo.echo"`) ||
		!strings.Contains(body, "tandem_handler_duration_seconds_bucket") {
		t.Fatalf("/metrics = %d:\n%s", code, body)
	}
	assertInvariant(t, rt)
	if code, _ := get(t, srv, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after Shutdown = %d, want 503", code)
	}
	if code, _ := get(t, srv, "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz after Shutdown = %d, want 503", code)
	}
}
