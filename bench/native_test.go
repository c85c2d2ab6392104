package bench

import (
	"errors"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// startNative is a native runtime for a test, closed at its end; without cgo the test is
// skipped.
func startNative(t *testing.T) *nativeRuntime {
	t.Helper()
	n, err := newNativeRuntime(tandem.Config{})
	if skipUnavailable(t, err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func encode(t *testing.T, ev *tandem.Event) []byte {
	t.Helper()
	env, err := envelope.AppendEvent(nil, ev)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// The direct contender is one FFI call per event, whatever the reply's size, and a failed
// handler comes back as the *tandem.HandlerError the rings would give.
func TestDirectMakesOneCallPerEvent(t *testing.T) {
	n := startNative(t)
	ev := &tandem.Event{ID: "1", Source: "/bench", Type: demoUpperType, Data: []byte("direct")}
	before := n.counts().calls
	out, err := n.invoke(encode(t, ev), make([]byte, 0, 64))
	if err != nil || string(out) != "DIRECT" {
		t.Fatalf("invoke = %q, %v", out, err)
	}
	if got := n.counts().calls - before; got != 1 {
		t.Fatalf("invoke made %d FFI calls, want 1", got)
	}

	// A reply larger than the buffer still arrives whole: the handler runs again into one
	// of the reply's size, a second call.
	ev.Data = []byte("a reply longer than its buffer")
	before = n.counts().calls
	out, err = n.invoke(encode(t, ev), make([]byte, 0, 4))
	if err != nil || string(out) != "A REPLY LONGER THAN ITS BUFFER" {
		t.Fatalf("invoke with a short buffer = %q, %v", out, err)
	}
	if got := n.counts().calls - before; got != 2 {
		t.Fatalf("invoke with a short buffer made %d FFI calls, want 2", got)
	}

	fail := &tandem.Event{ID: "2", Source: "/bench", Type: "demo.fail", Data: []byte("term")}
	_, err = n.invoke(encode(t, fail), nil)
	var he *tandem.HandlerError
	if !errors.As(err, &he) || he.Code() != "invalid" || he.Outcome != tandem.OutcomeTerm {
		t.Fatalf("invoke of a failing handler = %v, want a Term with code invalid", err)
	}
}

// The wake probe answers every ping, each round trip a positive duration.
func TestWakeProbeAnswersEveryPing(t *testing.T) {
	n := startNative(t)
	before := n.counts().calls
	samples, err := n.wakeProbe(20, 200*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 20 {
		t.Fatalf("%d samples, want 20", len(samples))
	}
	for _, d := range samples {
		if d <= 0 {
			t.Fatalf("non-positive round trip %v", d)
		}
	}
	if got := n.counts().calls - before; got != 1 {
		t.Fatalf("the probe made %d FFI calls, want 1 in all", got)
	}
	// A second probe on the same runtime works too: the first one's task stopped.
	if samples, err := n.wakeProbe(3, 100*time.Microsecond); err != nil || len(samples) != 3 {
		t.Fatalf("second probe: %d samples, %v", len(samples), err)
	}
}
