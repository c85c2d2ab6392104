// Command tandem runs tandem's demo pipeline: thousands of events through the Rust handlers
// bundled in rust/tandem-native, every acknowledgement counted, then a short report.
//
//	tandem run [-events N] [-concurrency C] [-payload BYTES] [-v]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/tandem"
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
	case "-h", "-help", "--help", "help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "tandem: unknown command %q\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tandem run [-events N] [-concurrency C] [-payload BYTES] [-v]")
	fmt.Fprintln(w, "       tandem dlq list | show N | replay [-type T] [-dry-run]  [-file PATH]")
}

// mix is the demo's traffic: event types of the bundled handlers, with their share.
var mix = []struct {
	typ   string
	share int
	data  func(payload []byte) []byte
}{
	{"demo.echo", 40, func(p []byte) []byte { return p }},
	{"demo.upper", 25, func(p []byte) []byte { return p }},
	{"demo.hash", 25, func(p []byte) []byte { return p }},
	{"demo.noop", 9, func(p []byte) []byte { return nil }},
	{"demo.fail", 1, func([]byte) []byte { return []byte("term") }},
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	events := fs.Int("events", 20000, "events to send")
	concurrency := fs.Int("concurrency", 32, "goroutines calling concurrently")
	payloadSize := fs.Int("payload", 64, "payload bytes per event")
	verbose := fs.Bool("v", false, "log the runtime's lines to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *events <= 0 || *concurrency <= 0 || *payloadSize < 0 {
		return errors.New("-events and -concurrency must be positive, -payload not negative")
	}
	logger := zap.NewNop()
	if *verbose {
		logger, _ = zap.NewDevelopment()
	}
	defer logger.Sync()

	rt, err := tandem.New(tandem.Config{Logger: logger})
	if err != nil {
		return err
	}
	if err := rt.Start(); err != nil {
		_ = rt.Shutdown(context.Background())
		return err
	}
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

	var next, acked, failed atomic.Int64
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
			ev := tandem.Event{Source: "/demo/" + fmt.Sprint(w), SpecVersion: "1.0"}
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(*events) {
					return
				}
				m := mix[wheel[i%int64(len(wheel))]]
				ev.ID = fmt.Sprint(i)
				ev.Type = m.typ
				ev.Data = m.data(payload)
				t0 := time.Now()
				reply, err := rt.Call(ctx, &ev)
				_ = local.RecordValue(int64(time.Since(t0)))
				if err != nil {
					failed.Add(1)
					continue
				}
				reply.Release()
				acked.Add(1)
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
	s := rt.Stats()
	total := acked.Load() + failed.Load()
	fmt.Fprintf(out, "tandem demo (%s link, %d goroutines, %d-byte payloads, handlers echo/upper/hash/noop/fail)\n",
		tandem.LinkMode(), *concurrency, *payloadSize)
	fmt.Fprintf(out, "  events     %d\n", total)
	fmt.Fprintf(out, "  acked      %d\n", acked.Load())
	fmt.Fprintf(out, "  failed     %d (demo.fail asks for 1%% terminal failures)\n", failed.Load())
	fmt.Fprintf(out, "  elapsed    %v\n", elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "  events/s   %.0f\n", float64(total)/elapsed.Seconds())
	fmt.Fprintf(out, "  round trip p50 %v  p99 %v  max %v\n",
		time.Duration(hist.ValueAtQuantile(50)), time.Duration(hist.ValueAtQuantile(99)), time.Duration(hist.Max()))
	fmt.Fprintf(out, "  wakeups    rust %d, go %d (parks: rust %d, go %d)\n", s.RustWakeups, s.Rust.GoWakeups, s.Rust.Parks, s.GoParks)
	fmt.Fprintf(out, "  buffers    rust holds %d requests, %d replies lent; violations %d\n",
		s.Rust.RequestsHeld, s.Rust.RepliesLent, s.Violations+s.Rust.Violations)
	if total != int64(*events) && ctx.Err() == nil {
		return fmt.Errorf("%d events sent but %d settled", *events, total)
	}
	if s.Rust.RequestsHeld != 0 || s.Rust.RepliesLent != 0 || s.Violations+s.Rust.Violations != 0 {
		return errors.New("buffers outstanding after shutdown")
	}
	return nil
}
