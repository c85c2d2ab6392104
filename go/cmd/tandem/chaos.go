package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/chaos"
)

// faultNames are the faults -faults switches, each at the rate chaos.AllFaults gives it
// (sink-fail, sink-slow and restart are the run's, with their own flags).
var faultNames = []string{"go-panic", "go-exit", "rust-panic", "slow", "retry-storm", "overload", "breaker",
	"cancel-submit", "cancel-call", "sink-fail", "sink-slow", "restart"}

// chaosMain runs `tandem chaos`: the built-in chaos scenario against the bundled demo
// handlers, then the invariant table; exit status 1 when an invariant broke, 2 on bad flags.
func chaosMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 60*time.Second, "the run's wall-clock length: events are offered until a tenth of it (at most 3s) before the end, the rest drains, shuts down and checks")
	profile := fs.String("profile", "mix", "traffic shape: steady, sine, square (bursts at 10× -rate), step, replay (-trace), or mix (each in turn)")
	rate := fs.Float64("rate", 400, "the scenario's nominal capacity, events/s: steady offers it, square bursts at 10× it")
	tracePath := fs.String("trace", "", "an arrival trace to replay (one offset per line: 12.5ms or 0.0125; # comments); with -profile replay, or added to mix")
	faults := fs.String("faults", "all", "faults on: all, none, or a comma-separated list of "+strings.Join(faultNames, ","))
	sinkFail := fs.Float64("sink-fail", 0.05, "share of dead-letter writes that fail (with sink-fail on)")
	sinkSlow := fs.Float64("sink-slow", 0.05, "share of dead-letter writes delayed by -sink-delay (with sink-slow on)")
	sinkDelay := fs.Duration("sink-delay", 5*time.Millisecond, "the delay of a slow dead-letter write")
	restartEvery := fs.Duration("restart-every", 20*time.Second, "shut the runtime down mid-flight this often and start a new one (with restart on; 0: never); two fifths of the run when that is shorter, so every run restarts at least twice, the second well before it ends")
	restartGrace := fs.Duration("restart-grace", 10*time.Millisecond, "how long a restart's Shutdown lets in-flight events finish before cancelling them")
	maxInFlight := fs.Int("max-in-flight", 64, "request slots (Config.MaxInFlight): small, so bursts fill them and the Rust overload policies act")
	seed := fs.Uint64("seed", 1, "seed of every random choice")
	out := fs.String("out", "chaos-report", "directory for timeline.svg and report.md (empty: none)")
	quiet := fs.Bool("q", false, "do not print the per-second lines")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	on, err := parseFaults(*faults)
	if err != nil || *duration <= 0 || *rate <= 0 || *restartEvery < 0 || *restartGrace <= 0 || *maxInFlight <= 0 {
		if err == nil {
			err = errors.New("-duration, -rate, -max-in-flight and -restart-grace must be positive, -restart-every not negative")
		}
		fmt.Fprintln(stderr, "tandem chaos:", err)
		return 2
	}
	var trace []time.Duration
	if *tracePath != "" {
		f, err := os.Open(*tracePath)
		if err != nil {
			fmt.Fprintln(stderr, "tandem chaos:", err)
			return 2
		}
		trace, err = chaos.ReadTrace(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "tandem chaos: %s: %v\n", *tracePath, err)
			return 2
		}
	}
	tail := min(*duration/10, 3*time.Second)
	offering := *duration - tail
	prof, err := chaosProfile(*profile, *rate, offering, *tracePath, trace)
	if err != nil {
		fmt.Fprintln(stderr, "tandem chaos:", err)
		return 2
	}

	all := chaos.AllFaults()
	var f chaos.Faults
	pick := func(name string, rate float64, dst *float64) {
		if on[name] {
			*dst = rate
		}
	}
	pick("go-panic", all.GoPanic, &f.GoPanic)
	pick("go-exit", all.GoExit, &f.GoExit)
	pick("rust-panic", all.RustPanic, &f.RustPanic)
	pick("slow", all.Slow, &f.Slow)
	pick("retry-storm", all.RetryStorm, &f.RetryStorm)
	pick("overload", all.Overload, &f.Overload)
	pick("breaker", all.Breaker, &f.Breaker)
	pick("cancel-submit", all.CancelSubmit, &f.CancelSubmit)
	pick("cancel-call", all.CancelCall, &f.CancelCall)
	o := chaos.Options{
		Scenario: chaos.Builtin(f),
		Profile:  prof,
		Duration: offering,
		Config:   tandem.Config{MaxInFlight: *maxInFlight},
		Drain:    max(tail/2, 500*time.Millisecond),
		Seed:     *seed,
	}
	if on["sink-fail"] {
		o.Sink.FailRate = *sinkFail
	}
	if on["sink-slow"] {
		o.Sink.SlowRate, o.Sink.Delay = *sinkSlow, *sinkDelay
	}
	if on["restart"] && *restartEvery > 0 {
		o.RestartEvery, o.RestartGrace = min(*restartEvery, offering*2/5), *restartGrace
	}
	if !*quiet {
		o.Log = stdout
	}
	// The injected Rust panics are expected: one line each on stderr, not a backtrace.
	os.Setenv("RUST_BACKTRACE", "0")
	fmt.Fprintf(stdout, "tandem chaos (%s link): %v, profile %s, faults %s\n", tandem.LinkMode(), *duration, prof.Name(), *faults)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, runErr := chaos.Run(ctx, o)
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, rep.Summary())
	if *out != "" {
		if err := rep.WriteDir(*out); err != nil {
			fmt.Fprintln(stderr, "tandem chaos:", err)
			return 1
		}
		fmt.Fprintf(stdout, "\nreport: %s/report.md, timeline: %s/timeline.svg\n", *out, *out)
	}
	status := 0
	if runErr != nil {
		fmt.Fprintln(stderr, "tandem chaos:", runErr)
		status = 1
	}
	if err := rep.Err(); err != nil {
		fmt.Fprintln(stderr, "tandem chaos: FAILED:")
		fmt.Fprintln(stderr, err)
		status = 1
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "tandem chaos: interrupted")
		status = 1
	}
	return status
}

// parseFaults reads -faults into the set of faults switched on.
func parseFaults(s string) (map[string]bool, error) {
	on := map[string]bool{}
	switch s {
	case "all":
		for _, n := range faultNames {
			on[n] = true
		}
		return on, nil
	case "none", "":
		return on, nil
	}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		found := false
		for _, k := range faultNames {
			found = found || k == n
		}
		if !found {
			return nil, fmt.Errorf("unknown fault %q (want all, none, or some of %s)", n, strings.Join(faultNames, ","))
		}
		on[n] = true
	}
	return on, nil
}

// chaosProfile builds the -profile shape over a run offering for d.
func chaosProfile(name string, rate float64, d time.Duration, tracePath string, trace []time.Duration) (chaos.Profile, error) {
	steady := chaos.Steady(rate)
	sine := chaos.Sine(rate, rate*0.8, 10*time.Second)
	square := chaos.Square(rate, 10, 2*time.Second, 200*time.Millisecond)
	step := chaos.Steps(2*time.Second, rate/4, rate, 2*rate, rate, rate/4)
	switch name {
	case "steady":
		return steady, nil
	case "sine":
		return sine, nil
	case "square":
		return square, nil
	case "step":
		return step, nil
	case "replay":
		if trace == nil {
			return chaos.Profile{}, errors.New("-profile replay needs -trace FILE")
		}
		return chaos.Replay(tracePath, trace), nil
	case "mix":
		shapes := []chaos.Profile{steady, square, sine, step}
		if trace != nil {
			shapes = append(shapes, chaos.Replay(tracePath, trace))
		}
		// Every shape at least twice over the run, each for at least 5s.
		hold := max(d/time.Duration(2*len(shapes)), 5*time.Second)
		return chaos.Cycle(hold, shapes...), nil
	}
	return chaos.Profile{}, fmt.Errorf("unknown profile %q (steady, sine, square, step, replay, mix)", name)
}
