package chaos_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/chaos"
)

// TestMain points the purego mode at the cdylib ./build.sh builds (the cgo mode ignores it).
func TestMain(m *testing.M) {
	if os.Getenv("TANDEM_LIB") == "" {
		if p, err := filepath.Abs("../../../target/release/libtandem_native.so"); err == nil {
			os.Setenv("TANDEM_LIB", p)
		}
	}
	os.Exit(m.Run())
}

// run runs o and fails the test on a broken invariant, naming it.
func run(t *testing.T, o chaos.Options) *chaos.Report {
	t.Helper()
	if testing.Verbose() {
		o.Log = testWriter{t}
	}
	rep, err := chaos.Run(context.Background(), o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("\n%s", rep.Summary())
	if err := rep.Err(); err != nil {
		t.Fatalf("%v\n%s", err, rep.Goroutines)
	}
	return rep
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Every fault at once, with bursts past the small routes' capacity, a sink that fails and
// stalls, and a mid-flight restart: the invariants hold, and each fault was exercised.
func TestEveryFaultKeepsTheInvariants(t *testing.T) {
	rep := run(t, chaos.Options{
		Scenario:     chaos.Builtin(chaos.AllFaults()),
		Profile:      chaos.Square(200, 10, time.Second, 150*time.Millisecond),
		Duration:     3 * time.Second,
		Config:       tandem.Config{MaxInFlight: 64},
		Sink:         chaos.SinkFaults{FailRate: 0.1, SlowRate: 0.1, Delay: 2 * time.Millisecond},
		RestartEvery: 1200 * time.Millisecond,
	})
	tl := rep.Tally
	for name, n := range map[string]uint64{"acknowledged": tl.Acked, "dead-lettered": tl.DeadLettered,
		"rejected": tl.Rejected, "sink failures": tl.Sink.Failed, "retries": tl.Runtime.Retried} {
		if n == 0 {
			t.Errorf("no event was %s: the mix did not exercise it", name)
		}
	}
	if rep.Restarts == 0 {
		t.Error("no restart")
	}
}

// A healthy mix on one runtime answers every event with an acknowledgement.
func TestHealthyTrafficIsAcknowledged(t *testing.T) {
	rep := run(t, chaos.Options{
		Scenario: chaos.Builtin(chaos.Faults{}),
		Profile:  chaos.Steady(300),
		Duration: time.Second,
	})
	if tl := rep.Tally; tl.Acked != tl.Offered || tl.Offered == 0 {
		t.Fatalf("%d of %d acknowledged", tl.Acked, tl.Offered)
	}
}

// A restart whose new runtime fails to set up ends the run with that error, and the report
// still balances: the runtime that was shut down is counted once.
func TestFailedRestartEndsTheRunAndStillBalances(t *testing.T) {
	setups := 0
	sc := chaos.Scenario{
		Name: "one-shot",
		Setup: func(rt *tandem.Runtime) error {
			if setups++; setups > 1 {
				return errors.New("no second runtime")
			}
			return rt.Handle("ok.*", "ok", tandem.HandlerFunc(func(context.Context, *tandem.Event) tandem.Result {
				return tandem.Ack()
			}))
		},
		Traffic: []chaos.Traffic{{Name: "ok", Weight: 1, Event: func(*rand.Rand) tandem.Event {
			return tandem.Event{Type: "ok.event"}
		}}},
	}
	rep, err := chaos.Run(context.Background(), chaos.Options{Scenario: sc, Profile: chaos.Steady(200),
		Duration: 2 * time.Second, RestartEvery: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no second runtime") {
		t.Fatalf("Run = %v, want the setup's error", err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("%v\n%s", err, rep.Summary())
	}
	if rep.Tally.Offered == 0 || rep.Tally.Acked == 0 {
		t.Fatalf("nothing ran before the restart:\n%s", rep.Summary())
	}
}
