package tandem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// hooks is a Go handler with every lifecycle hook, recording each call in a shared log and
// failing (or panicking in) the hook it is told to.
type hooks struct {
	name  string
	log   *hookLog
	fail  string // "init" or "warm"
	panic bool
	block chan struct{} // WarmUp waits for it to close, when not nil
}

type hookLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *hookLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, s)
}

// take returns the calls so far and forgets them.
func (l *hookLog) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.Join(l.calls, ", ")
	l.calls = nil
	return s
}

func (h *hooks) note(hook string) error {
	h.log.add(hook + " " + h.name)
	if h.fail != hook {
		return nil
	}
	if h.panic {
		panic(hook + " panicked")
	}
	return Errorf("unavailable", "%s refused", hook)
}

func (h *hooks) Handle(context.Context, *Event) Result { return Ack() }
func (h *hooks) Init(context.Context) error            { return h.note("init") }
func (h *hooks) WarmUp(context.Context) error {
	if h.block != nil {
		<-h.block
	}
	return h.note("warm")
}
func (h *hooks) Close() error { return h.note("close") }

// hooked is a runtime with Go handlers a, b and c (a on two routes, a function handler
// between them), b failing the hook fail.
func hooked(t *testing.T, fail string, panics bool) (*Runtime, *hookLog) {
	t.Helper()
	log := &hookLog{}
	rt := newRegistered(t, Config{})
	a := &hooks{name: "a", log: log}
	for i, h := range []Handler{a, HandlerFunc(func(context.Context, *Event) Result { return Ack() }),
		&hooks{name: "b", log: log, fail: fail, panic: panics}, a, &hooks{name: "c", log: log}} {
		if err := rt.Handle(fmt.Sprintf("life.%d", i), fmt.Sprintf("h%d", i), h); err != nil {
			t.Fatal(err)
		}
	}
	return rt, log
}

func TestLifecycleHooksRunInOrderAndCloseInReverseOnce(t *testing.T) {
	rt, log := hooked(t, "", false)
	start(t, rt)
	if got := log.take(); got != "init a, init b, init c, warm a, warm b, warm c" {
		t.Fatalf("Start called %s", got)
	}
	if rt.State() != Running {
		t.Fatalf("state %s", rt.State())
	}
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); got != "close c, close b, close a" {
		t.Fatalf("Shutdown called %s", got)
	}
	_ = rt.Shutdown(context.Background())
	if got := log.take(); got != "" {
		t.Fatalf("a second Shutdown called %s", got)
	}
}

// A failed hook names the handler and the hook; Start undoes what it did: every Go handler
// it initialised is closed, in reverse order, once; nothing runs (goleak checks the pools
// and pollers at the end of the package's tests); the runtime is Failed and refuses events.
func TestAFailedHookFailsStartAndClosesWhatWasInitialised(t *testing.T) {
	cases := []struct {
		fail   string
		panics bool
		phase  string
		calls  string
	}{
		{"warm", false, "warm-up", "init a, init b, init c, warm a, warm b, close c, close b, close a"},
		{"warm", true, "warm-up", "init a, init b, init c, warm a, warm b, close c, close b, close a"},
		{"init", false, "init", "init a, init b, close a"},
		{"init", true, "init", "init a, init b, close a"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s panics=%v", c.fail, c.panics), func(t *testing.T) {
			rt, log := hooked(t, c.fail, c.panics)
			err := rt.Start()
			var se *StartError
			if !errors.Is(err, ErrStart) || !errors.As(err, &se) {
				t.Fatalf("Start = %v, want a *StartError", err)
			}
			if se.Runtime != "go" || se.Handler != "h2" || se.Route != "life.2" || se.Phase != c.phase {
				t.Errorf("StartError %+v", se)
			}
			want := fmt.Sprintf(`tandem: start failed: %s of Go handler "h2" (route "life.2"): `, c.phase)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q, want it to start %q", err, want)
			}
			if c.panics != strings.Contains(err.Error(), "panic: ") {
				t.Errorf("error %q", err)
			}
			if got := log.take(); got != c.calls {
				t.Errorf("hooks called: %s\nwant:         %s", got, c.calls)
			}
			if rt.State() != Failed {
				t.Errorf("state %s", rt.State())
			}
			if _, err := rt.Submit(context.Background(), event("life.0", "1", nil)); !errors.Is(err, ErrClosed) {
				t.Errorf("Submit after a failed Start = %v", err)
			}
			if err := rt.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := log.take(); got != "" {
				t.Errorf("Shutdown after a failed Start called %s", got)
			}
			if rt.State() != Stopped {
				t.Errorf("state after Shutdown %s", rt.State())
			}
		})
	}
}

func TestARuntimeNeverStartedClosesNothing(t *testing.T) {
	rt, log := hooked(t, "", false)
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); got != "" {
		t.Fatalf("Shutdown of a runtime never started called %s", got)
	}
}

// inChild runs the calling test again in a child process with env added, and reports
// whether this is the child. The Rust library reads its environment when a runtime is
// created, and in the purego mode a variable os.Setenv sets never reaches it.
func inChild(t *testing.T, env string) bool {
	t.Helper()
	if os.Getenv("TANDEM_TEST_CHILD") == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "TANDEM_TEST_CHILD="+t.Name(), env)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("the test in a child process with %s: %v\n%s", env, err, out)
	}
	return false
}

// A Rust handler's failed warm-up fails Start naming it; the Go handlers initialised are
// closed in reverse order (the library closes its own; rust/tandem's runtime tests check
// that), nothing is left running, and the child's goleak check passes.
func TestAFailedRustWarmUpFailsStartNamingTheHandler(t *testing.T) {
	if !inChild(t, "TANDEM_TEST_WARM_UP=fail") {
		return
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	log := &hookLog{}
	rt := newRegistered(t, Config{MeterProvider: mp})
	for i, name := range []string{"a", "b", "c"} {
		if err := rt.Handle(fmt.Sprintf("life.%d", i), name, &hooks{name: name, log: log}); err != nil {
			t.Fatal(err)
		}
	}
	err := rt.Start()
	var se *StartError
	var ce *CodedError
	if !errors.Is(err, ErrStart) || !errors.As(err, &se) || !errors.As(err, &ce) {
		t.Fatalf("Start = %v, want a *StartError", err)
	}
	if se.Runtime != "rust" || se.Handler != "warm-up-probe" || se.Phase != "warm-up" || se.Route != "" ||
		ce.Code != "unavailable" || ce.Message != "asked to fail its warm-up" {
		t.Errorf("StartError %+v, cause %+v", se, ce)
	}
	if want := `tandem: start failed: warm-up of Rust handler "warm-up-probe": unavailable: asked to fail its warm-up`; err.Error() != want {
		t.Errorf("error %q\nwant        %q", err, want)
	}
	if got := log.take(); got != "init a, init b, init c, warm a, warm b, warm c, close c, close b, close a" {
		t.Errorf("hooks called: %s", got)
	}
	if rt.State() != Failed {
		t.Errorf("state %s", rt.State())
	}
	// The runtime's gauges were registered with the meter provider before the library
	// refused to start; they are gone with it.
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "tandem.ring.occupancy" || m.Name == "tandem.events.in_flight" {
				t.Errorf("a failed Start left the gauge %s registered", m.Name)
			}
		}
	}
	if err := rt.Shutdown(context.Background()); err != nil || log.take() != "" || rt.State() != Stopped {
		t.Errorf("Shutdown = %v, state %s", err, rt.State())
	}
}

// startWatchingReadiness runs Start in the background, polling /readyz until it returns,
// and returns the states /readyz answered 503 with meanwhile, and Start's error. It calls
// during once, when /readyz first says warming-up.
func startWatchingReadiness(t *testing.T, rt *Runtime, srv *httptest.Server, during func()) (seen map[string]bool, err error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- rt.Start() }()
	seen = map[string]bool{}
	for {
		select {
		case err := <-done:
			return seen, err
		default:
		}
		code, body := get(t, srv, "/readyz")
		if code == http.StatusOK {
			select {
			case err := <-done:
				return seen, err
			case <-time.After(5 * time.Second):
				t.Fatal("/readyz answered 200 before Start returned")
			}
		}
		seen[strings.TrimSpace(body)] = true
		if seen["warming-up"] && during != nil {
			during()
			during = nil
		}
		time.Sleep(time.Millisecond)
	}
}

// /readyz answers 503 until every Go handler has warmed up.
func TestReadyOnlyOnceEveryGoHandlerWarmedUp(t *testing.T) {
	log := &hookLog{}
	gate := make(chan struct{})
	rt := newRegistered(t, Config{})
	if err := rt.Handle("slow", "slow-warm", &hooks{name: "slow", log: log, block: gate}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt.HTTPHandler(nil))
	defer srv.Close()
	seen, err := startWatchingReadiness(t, rt, srv, func() {
		if code, _ := get(t, srv, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz while warming up = %d, want 200", code)
		}
		close(gate)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !seen["warming-up"] {
		t.Errorf("/readyz never said warming-up; it said %v", seen)
	}
	if code, body := get(t, srv, "/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "running" {
		t.Fatalf("/readyz after Start = %d %q", code, body)
	}
	assertInvariant(t, rt)
}

// /readyz answers 503 until every Rust handler has warmed up too: the probe's warm-up takes
// 300 ms, all of it inside Start, all of it not ready.
func TestReadyOnlyOnceEveryRustHandlerWarmedUp(t *testing.T) {
	if !inChild(t, "TANDEM_TEST_WARM_UP=300") {
		return
	}
	rt := newRegistered(t, Config{})
	srv := httptest.NewServer(rt.HTTPHandler(nil))
	defer srv.Close()
	began := time.Now()
	seen, err := startWatchingReadiness(t, rt, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < 300*time.Millisecond {
		t.Errorf("Start returned after %v, before the Rust warm-up's 300 ms", took)
	}
	if !seen["warming-up"] {
		t.Errorf("/readyz never said warming-up; it said %v", seen)
	}
	if code, _ := get(t, srv, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after Start = %d", code)
	}
	assertInvariant(t, rt)
}

// valueHooks is a handler value with hooks and a func field: == on it would panic.
type valueHooks struct {
	log *hookLog
	f   func()
}

func (h valueHooks) Handle(context.Context, *Event) Result { return Ack() }
func (h valueHooks) Init(context.Context) error            { h.log.add("init value"); return nil }
func (h valueHooks) Close() error                          { h.log.add("close value"); return nil }

// A handler value routed twice is not compared (it could not be): its hooks run per route.
func TestAHandlerValueRoutedTwiceRunsItsHooksPerRoute(t *testing.T) {
	log := &hookLog{}
	rt := newRegistered(t, Config{})
	h := valueHooks{log: log, f: func() {}}
	for _, p := range []string{"v.1", "v.2"} {
		if err := rt.Handle(p, p, h); err != nil {
			t.Fatal(err)
		}
	}
	start(t, rt)
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); got != "init value, init value, close value, close value" {
		t.Fatalf("hooks called: %s", got)
	}
}
