package chaos

import (
	"math/rand/v2"
	"testing"
	"time"
)

// count draws p's arrivals up to end and counts those in [from, to).
func count(p Profile, from, to, end time.Duration) int {
	next := p.arrivals(rand.New(rand.NewPCG(1, 2)))
	n := 0
	for t, last := next(), time.Duration(0); t < end; t = next() {
		if t < last {
			panic("arrivals went back in time")
		}
		last = t
		if t >= from && t < to {
			n++
		}
	}
	return n
}

func within(t *testing.T, what string, got, want int) {
	t.Helper()
	if d := float64(got-want) / float64(want); d < -0.1 || d > 0.1 {
		t.Errorf("%s: %d arrivals, want %d ±10%%", what, got, want)
	}
}

func TestProfilesOfferTheirRates(t *testing.T) {
	within(t, "steady 1000/s over 10s", count(Steady(1000), 0, 10*time.Second, 10*time.Second), 10000)
	sq := Square(1000, 10, time.Second, 200*time.Millisecond)
	// Bursts: 10 × 1000/s for 200 ms of each second; between them 500/s for 800 ms.
	within(t, "square, the bursts", count(sq, 0, 200*time.Millisecond, time.Second), 2000)
	within(t, "square, between bursts", count(sq, 200*time.Millisecond, time.Second, time.Second), 400)
	st := Steps(time.Second, 1000, 5000, 1000)
	within(t, "steps, up", count(st, time.Second, 2*time.Second, 3*time.Second), 5000)
	within(t, "steps, down", count(st, 2*time.Second, 3*time.Second, 3*time.Second), 1000)
	sine := Sine(1000, 800, 4*time.Second)
	within(t, "sine, the crest", count(sine, 800*time.Millisecond, 1200*time.Millisecond, 4*time.Second), 720)
}

func TestReplayLoopsTheTrace(t *testing.T) {
	p := Replay("test", []time.Duration{0, 10 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond})
	next := p.arrivals(nil)
	// The trace spans 30 ms plus one mean gap (10 ms): the second loop starts at 40 ms.
	want := []time.Duration{0, 10, 10, 30, 40, 50, 50, 70}
	for i, w := range want {
		if got := next(); got != w*time.Millisecond {
			t.Fatalf("arrival %d at %v, want %v", i, got, w*time.Millisecond)
		}
	}
}

func TestCycleTakesTurns(t *testing.T) {
	c := Cycle(time.Second, Steady(1000), Steady(5000))
	within(t, "cycle, first", count(c, 0, time.Second, 4*time.Second), 1000)
	within(t, "cycle, second", count(c, time.Second, 2*time.Second, 4*time.Second), 5000)
	within(t, "cycle, first again", count(c, 2*time.Second, 3*time.Second, 4*time.Second), 1000)
}
