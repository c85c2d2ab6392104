// Command tandem runs tandem's demo pipeline, reads dead-letter files, runs the chaos
// harness and conformance vectors.
//
//	tandem run [-events N] [-concurrency C] [-payload BYTES] [-dlq PATH] [-v]
//	           [-shadow P=TARGET] [-weights P=TARGET:W,...[,sticky]] [-swap P=TARGET]
//	tandem dlq list | show N | replay ...
//	tandem chaos [-duration D] [-profile P] [-rate R] [-faults LIST] [-out DIR] ...
//	tandem new [-tandem DIR] NAME
//	tandem build [-purego] [-env] [-o FILE] [-C DIR]
//	tandem worker -nats URL -stream S -consumer C [-create] [-dlq-subject SUBJ] ...
//	tandem conform -route R -vectors FILE
//
// conform runs a conformance vector file against a route of the bundled handlers (the Rust
// library's demo.* and their Go twins, e.g. demo.upper and demo.upper.go) and fails on a
// mismatch, printing each failing case (docs/conformance.md).
//
// new writes a project of one's own, a Go main and a Rust crate of handlers; build, run in
// it, makes one static binary of it (README: "Your handlers, your binary"). Both work in a
// tandem command built with CGO_ENABLED=0, which needs no Rust library:
//
//	CGO_ENABLED=0 go run github.com/tandemrt/tandem/go/cmd/tandem@latest new hello
//
// The demo composes Go and Rust handlers: a Go handler calls a Rust handler and emits a
// follow-up to a second Go handler, a wildcard route sends payments to a flaky Rust handler
// that succeeds on its second delivery, and 1% of the events are failed for good and land
// in a dead-letter file. Every acknowledgement is counted; the report ends with the checks.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/demo"
	"github.com/tandemrt/tandem/go/tandem/policy"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		if err := run(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "tandem:", err)
			os.Exit(1)
		}
	case "dlq":
		os.Exit(dlqMain(os.Args[2:], os.Stdout, os.Stderr))
	case "chaos":
		os.Exit(chaosMain(os.Args[2:], os.Stdout, os.Stderr))
	case "new":
		os.Exit(newMain(os.Args[2:], os.Stdout, os.Stderr))
	case "build":
		os.Exit(buildMain(os.Args[2:], os.Stdout, os.Stderr))
	case "worker":
		os.Exit(workerMain(os.Args[2:], os.Stdout, os.Stderr))
	case "conform":
		os.Exit(conformMain(os.Args[2:], os.Stdout, os.Stderr))
	case "-h", "-help", "--help", "help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "tandem: unknown command %q\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tandem run [-events N] [-concurrency C] [-payload BYTES] [-dlq PATH] [-v] [-jetstream]")
	fmt.Fprintln(w, "                  [-shadow P=TARGET] [-weights P=TARGET:W,...[,sticky]] [-swap P=TARGET]")
	fmt.Fprintln(w, "       tandem dlq list | show N | replay [-type T] [-dry-run]  [-file PATH | -nats URL -stream S]")
	fmt.Fprintln(w, "       tandem chaos [-duration 60s] [-profile mix|steady|sine|square|step|replay] [-rate N] [-trace FILE] [-faults all|none|LIST] [-out DIR]")
	fmt.Fprintln(w, "       tandem new [-tandem DIR] NAME")
	fmt.Fprintln(w, "       tandem build [-purego] [-env] [-o FILE] [-C DIR]")
	fmt.Fprintln(w, "       tandem worker -nats URL -stream S -consumer C [-create] [-dlq-subject SUBJ] [-results-subject SUBJ] [-http ADDR]")
	fmt.Fprintln(w, "       tandem conform -route R -vectors FILE")
}

// The demo's event types beyond the bundled demo.* ones.
const (
	typeOrderPlaced = "order.placed"      // Go: Call demo.upper, Emit order.priced
	typeOrderPriced = "order.priced"      // Go, behind a circuit breaker
	typePayment     = "payment.authorize" // payment.* → Rust demo.flaky, retried once
)

// mix is the demo's traffic, per hundred events: the event type and its payload.
var mix = []struct {
	typ   string
	share int
	data  func(payload []byte) []byte
}{
	{typeOrderPlaced, 30, func(p []byte) []byte { return p }},
	{"demo.echo", 20, func(p []byte) []byte { return p }},
	{"demo.hash", 20, func(p []byte) []byte { return p }},
	{"demo.upper", 10, func(p []byte) []byte { return p }},
	{"demo.noop", 14, func([]byte) []byte { return nil }},
	{typePayment, 5, func(p []byte) []byte { return p }},
	{"demo.fail", 1, func([]byte) []byte { return []byte("term") }},
}

// tally counts what became of the events the demo submitted, and of the follow-ups.
type tally struct {
	acked, deadLettered, rejected, failed atomic.Int64
	placed, emitted, priced, badPriced    atomic.Int64
}

// record classifies one Call's outcome.
func (t *tally) record(err error) {
	var he *tandem.HandlerError
	switch {
	case err == nil:
		t.acked.Add(1)
	case errors.As(err, &he) && he.DeadLetter != "", errors.Is(err, tandem.ErrShed):
		t.deadLettered.Add(1)
	case errors.As(err, &he), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// A handler failure that was not final (cancelled at shutdown) or an interrupted wait.
		t.failed.Add(1)
	default:
		// Refused by Submit: not running, no route, too large, overloaded.
		t.rejected.Add(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	events := fs.Int("events", 20000, "events to send")
	concurrency := fs.Int("concurrency", 32, "goroutines calling concurrently")
	payloadSize := fs.Int("payload", 64, "payload bytes per event")
	dlqPath := fs.String("dlq", defaultDLQFile, "the dead-letter file (appended to)")
	verbose := fs.Bool("v", false, "log the runtime's lines to stderr")
	httpAddr := fs.String("http", "127.0.0.1:9464", "serve /metrics, /healthz and /readyz here while running (empty: off)")
	tracePath := fs.String("trace", "", "write the trace of one order chain, across Go and Rust, to this file (- for stdout)")
	otlp := fs.String("otlp", "", "also export traces to this OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318)")
	jet := fs.Bool("jetstream", false, "instead: -events work items through an embedded nats-server and three workers sharing a consumer (docs/scale-out.md)")
	var changes []routeChange
	fs.Var(routeChanges{"shadow", &changes}, "shadow", "PATTERN=TARGET: run a copy of each of the route's events on TARGET (go:NAME or rust:TYPE) and compare (repeatable)")
	fs.Var(routeChanges{"weights", &changes}, "weights", "PATTERN=TARGET:WEIGHT,...[,sticky]: split the route between handlers (repeatable)")
	fs.Var(routeChanges{"swap", &changes}, "swap", "PATTERN=TARGET: move the route to TARGET (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *events <= 0 || *concurrency <= 0 || *payloadSize < 0 || *dlqPath == "" {
		return errors.New("-events and -concurrency must be positive, -payload not negative, -dlq not empty")
	}
	if *jet {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		return runJetStream(ctx, *events, out)
	}
	logger := zap.NewNop()
	if *verbose {
		logger, _ = zap.NewDevelopment()
	}
	defer logger.Sync()

	sink, err := deadletter.OpenFile(*dlqPath)
	if err != nil {
		return err
	}
	defer sink.Close()
	lettersBefore, err := countDeadLetters(*dlqPath)
	if err != nil {
		return err
	}

	obs, err := newObservability(*tracePath != "", *otlp)
	if err != nil {
		return err
	}
	defer obs.close()
	rt, err := tandem.New(tandem.Config{Logger: logger, DeadLetters: sink,
		MeterProvider: obs.meters, TracerProvider: obs.tracerProvider()})
	if err != nil {
		return err
	}
	var t tally
	breaker := policy.NewBreaker("pricing", policy.BreakerSettings{ConsecutiveFailures: 5, Timeout: time.Second})
	if err := addRoutes(rt, &t, breaker, *concurrency); err != nil {
		_ = rt.Shutdown(context.Background())
		return err
	}
	if err := rt.Start(); err != nil {
		_ = rt.Shutdown(context.Background())
		return err
	}
	if err := applyRouteChanges(rt, changes); err != nil {
		_ = rt.Shutdown(context.Background())
		return err
	}
	obs.serve(rt, *httpAddr, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	payload := make([]byte, *payloadSize)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	var wheel []int
	for i, m := range mix {
		for range m.share {
			wheel = append(wheel, i)
		}
	}
	flaky := map[string]string{"succeed_at": "2"}

	var next atomic.Int64
	var histMu sync.Mutex
	hist := hdrhistogram.New(1, int64(10*time.Second/time.Nanosecond), 3)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := hdrhistogram.New(1, int64(10*time.Second/time.Nanosecond), 3)
			defer func() {
				histMu.Lock()
				hist.Merge(local)
				histMu.Unlock()
			}()
			ev := tandem.Event{Source: "/demo/" + strconv.Itoa(w), SpecVersion: "1.0"}
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(*events) {
					return
				}
				m := mix[wheel[i%int64(len(wheel))]]
				ev.ID = strconv.FormatInt(i, 10)
				ev.Type = m.typ
				ev.Data = m.data(payload)
				ev.Extensions = nil
				if m.typ == typePayment {
					ev.Extensions = flaky
				}
				t0 := time.Now()
				reply, err := rt.Call(ctx, &ev)
				_ = local.RecordValue(int64(time.Since(t0)))
				if err == nil {
					reply.Release()
				}
				t.record(err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rt.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	lettersAfter, err := countDeadLetters(*dlqPath)
	if err != nil {
		return err
	}

	s := rt.Stats()
	submitted := next.Load()
	if submitted > int64(*events) {
		submitted = int64(*events)
	}
	settled := t.acked.Load() + t.deadLettered.Load() + t.rejected.Load()
	outstanding := s.Rust.RequestsHeld + s.Rust.RepliesLent + uint64(s.RepliesHeld) + uint64(max(s.InFlight, 0))
	violations := s.Violations + s.Rust.Violations

	fmt.Fprintf(out, "tandem demo (%s link, %d goroutines, %d-byte payloads)\n", tandem.LinkMode(), *concurrency, *payloadSize)
	fmt.Fprintf(out, "  pipeline   %s (Go) → Call demo.upper (Rust) → Emit %s (Go, breaker %s);\n",
		typeOrderPlaced, typeOrderPriced, breaker.State())
	fmt.Fprintf(out, "             payment.* → demo.flaky (Rust, succeeds at delivery 2); demo.fail; echo/hash/upper/noop\n")
	fmt.Fprintf(out, "  events     %d submitted, %d rejected at submit\n", submitted, t.rejected.Load())
	fmt.Fprintf(out, "  acked      %d (%d orders placed, %d of %d follow-ups priced)\n",
		t.acked.Load(), t.placed.Load(), t.priced.Load(), t.emitted.Load())
	fmt.Fprintf(out, "  retried    %d\n", s.Retried)
	fmt.Fprintf(out, "  dead       %d dead-lettered (demo.fail asks for 1%% terminal failures)\n", t.deadLettered.Load())
	fmt.Fprintf(out, "  failed     %d\n", t.failed.Load())
	fmt.Fprintf(out, "  elapsed    %v\n", elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "  events/s   %.0f\n", float64(submitted)/elapsed.Seconds())
	fmt.Fprintf(out, "  round trip p50 %v  p99 %v  max %v\n",
		time.Duration(hist.ValueAtQuantile(50)), time.Duration(hist.ValueAtQuantile(99)), time.Duration(hist.Max()))
	fmt.Fprintf(out, "  wakeups    rust %d, go %d (parks: rust %d, go %d)\n", s.RustWakeups, s.Rust.GoWakeups, s.Rust.Parks, s.GoParks)
	fmt.Fprintf(out, "  buffers    %d outstanding (rust holds %d requests, %d replies lent); violations %d\n",
		outstanding, s.Rust.RequestsHeld, s.Rust.RepliesLent, violations)
	fmt.Fprintf(out, "  dlq        %d letters added to %s (%d in the file): tandem dlq list -file %s\n",
		lettersAfter-lettersBefore, *dlqPath, lettersAfter, *dlqPath)
	reportRoutes(out, rt, changes)
	if obs.addr != "" {
		fmt.Fprintf(out, "  http       /metrics, /healthz, /readyz were served on %s during the run\n", obs.addr)
	}
	var problems []error
	if *tracePath != "" {
		if err := writeChain(obs, *tracePath, out); err != nil {
			problems = append(problems, err)
		}
	}

	if ctx.Err() == nil && submitted != settled {
		problems = append(problems, fmt.Errorf("%d events submitted but %d acknowledged, dead-lettered or rejected (%d failed)",
			submitted, settled, t.failed.Load()))
	}
	if ctx.Err() == nil && (t.emitted.Load() != t.priced.Load() || t.badPriced.Load() != 0) {
		problems = append(problems, fmt.Errorf("%d follow-ups emitted, %d priced, %d malformed",
			t.emitted.Load(), t.priced.Load(), t.badPriced.Load()))
	}
	if added := lettersAfter - lettersBefore; uint64(added) != s.DeadLettered {
		problems = append(problems, fmt.Errorf("the runtime dead-lettered %d events but %d reached %s", s.DeadLettered, added, *dlqPath))
	}
	if outstanding != 0 || violations != 0 {
		problems = append(problems, fmt.Errorf("after shutdown: %d buffers outstanding, %d violations", outstanding, violations))
	}
	if ctx.Err() != nil {
		problems = append(problems, errors.New("interrupted"))
	}
	return errors.Join(problems...)
}

// addRoutes composes the demo's pipeline on rt, counting into t.
func addRoutes(rt *tandem.Runtime, t *tally, breaker *policy.Breaker, concurrency int) error {
	// order.placed: a Go handler that prices the order with a Rust handler (request/reply
	// over the rings) and emits the priced order to another Go handler.
	placed := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		reply, err := tandem.Call(ctx, &tandem.Event{ID: ev.ID + ".upper", Source: "/demo/orders", Type: "demo.upper", Data: ev.Data})
		if err != nil {
			return tandem.Retry(0, err)
		}
		priced := bytes.Clone(reply.Data())
		reply.Release()
		if err := tandem.Emit(ctx, &tandem.Event{ID: ev.ID + ".priced", Source: "/demo/orders", Type: typeOrderPriced, Data: priced}); err != nil {
			return tandem.Retry(0, err)
		}
		t.emitted.Add(1)
		t.placed.Add(1)
		return tandem.AckReply(priced)
	})
	err := rt.Handle(typeOrderPlaced, "place-order", placed,
		tandem.WithWorkers(2, max(2, concurrency)), tandem.WithTimeout(2*time.Second))
	if err != nil {
		return err
	}
	// order.priced: the follow-up, checked for the upper-cased payload and the causal links
	// Emit filled in.
	pricedHandler := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		if ev.CausationID == "" || ev.CorrelationID != ev.CausationID || !bytes.Equal(ev.Data, bytes.ToUpper(ev.Data)) {
			t.badPriced.Add(1)
		}
		t.priced.Add(1)
		return tandem.Ack()
	})
	err = rt.Handle(typeOrderPriced, "record-price", pricedHandler,
		tandem.WithWorkers(1, 4), tandem.WithPolicy(breaker))
	if err != nil {
		return err
	}
	// demo.upper.go: the Go twin of the Rust demo.upper (the handler upper-go), for
	// conformance and for moving demo.upper (-shadow, -weights, -swap demo.upper=go:upper-go).
	if err := demo.Routes(rt); err != nil {
		return err
	}
	// payment.*: every payment goes to the flaky Rust handler, which asks for a retry on the
	// first delivery; a fast schedule keeps the demo short.
	return rt.HandleRust("payment.*", "demo.flaky",
		tandem.WithRetry(retry.Backoff{MaxAttempts: 3, Initial: time.Millisecond, Max: 20 * time.Millisecond}))
}

// countDeadLetters is the number of complete records in the dead-letter file at path.
func countDeadLetters(path string) (int, error) {
	f, err := deadletter.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return len(f.Records), nil
}

// writeChain writes the one traced chain to path ("-": out).
func writeChain(obs *observability, path string, out io.Writer) error {
	if path == "-" {
		fmt.Fprintln(out)
		return obs.printChain(out)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := obs.printChain(f); err != nil {
		f.Close()
		return err
	}
	fmt.Fprintf(out, "  trace      one order chain across Go and Rust written to %s\n", path)
	return f.Close()
}
