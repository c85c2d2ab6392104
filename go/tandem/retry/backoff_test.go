package retry

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// fixed returns an rnd that always yields r; 0.5 is the un-jittered midpoint.
func fixed(r float64) func() float64 { return func() float64 { return r } }

var backoffNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestBackoffDefaults(t *testing.T) {
	want := Backoff{MaxAttempts: 5, Initial: 50 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.2}
	if got := (Backoff{}).WithDefaults(); got != want {
		t.Errorf("zero Backoff: got %+v, want %+v", got, want)
	}
	if got := (Backoff{Initial: -1, Max: -1, Multiplier: -3, Jitter: -0.5}).WithDefaults(); got != want {
		t.Errorf("negative fields: got %+v, want %+v", got, want)
	}
	if got := (Backoff{Multiplier: math.NaN(), Jitter: math.NaN()}).WithDefaults(); got != want {
		t.Errorf("NaN fields: got %+v, want %+v", got, want)
	}
	got := (Backoff{Multiplier: 0.5, Jitter: 3}).WithDefaults()
	if got.Multiplier != 1 || got.Jitter != 1 {
		t.Errorf("Multiplier 0.5, Jitter 3: got %v, %v, want 1, 1", got.Multiplier, got.Jitter)
	}
}

func TestBackoffExponentialSequence(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2}
	want := []time.Duration{
		100 * time.Millisecond, // attempt 1 failed
		200 * time.Millisecond,
		400 * time.Millisecond,
		800 * time.Millisecond,
		1600 * time.Millisecond,
		2 * time.Second, // capped
		2 * time.Second,
	}
	for i, w := range want {
		attempt := uint32(i + 1)
		if got := b.Delay(attempt, Advice{}, backoffNow, fixed(0.5)); got != w {
			t.Errorf("Delay(%d) = %v, want %v", attempt, got, w)
		}
	}
	if got := b.Delay(0, Advice{}, backoffNow, fixed(0.5)); got != 100*time.Millisecond {
		t.Errorf("Delay(0) = %v, want Initial (attempt 0 counts as 1)", got)
	}
	constant := Backoff{Initial: 30 * time.Millisecond, Multiplier: 0.5}
	for attempt := uint32(1); attempt < 6; attempt++ {
		if got := constant.Delay(attempt, Advice{}, backoffNow, fixed(0.5)); got != 30*time.Millisecond {
			t.Errorf("Multiplier<1: Delay(%d) = %v, want a constant 30ms", attempt, got)
		}
	}
	if got := (Backoff{Initial: time.Minute}).Delay(1, Advice{}, backoffNow, fixed(0.5)); got != 10*time.Second {
		t.Errorf("Initial above Max: Delay(1) = %v, want Max 10s", got)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second, Jitter: 0.25}
	lo, hi := 750*time.Millisecond, 1250*time.Millisecond
	if got := b.Delay(1, Advice{}, backoffNow, fixed(0)); got != lo {
		t.Errorf("rnd 0: got %v, want the minimum %v", got, lo)
	}
	if got := b.Delay(1, Advice{}, backoffNow, fixed(math.Nextafter(1, 0))); hi-got > time.Nanosecond || got > hi {
		t.Errorf("rnd just below 1: got %v, want the maximum %v", got, hi)
	}
	seen := map[time.Duration]bool{}
	for i := range 1000 {
		got := b.Delay(1, Advice{}, backoffNow, fixed(float64(i)/1000))
		if got < lo || got > hi {
			t.Fatalf("rnd %v: %v outside [%v, %v]", float64(i)/1000, got, lo, hi)
		}
		seen[got] = true
	}
	if len(seen) < 1000 {
		t.Errorf("1000 rnd values gave only %d distinct delays: jitter is not applied", len(seen))
	}
	// Out-of-contract rnd values are clamped, never extrapolated.
	for _, r := range []float64{-1, math.NaN(), 7, math.Inf(1)} {
		if got := b.Delay(1, Advice{}, backoffNow, fixed(r)); got < lo || got > hi {
			t.Errorf("rnd %v: %v outside [%v, %v]", r, got, lo, hi)
		}
	}

	// Near the cap, jitter never goes beyond Max, and Max itself is reachable.
	capped := Backoff{Initial: 8 * time.Second, Max: 10 * time.Second, Jitter: 0.5}
	if got := capped.Delay(1, Advice{}, backoffNow, fixed(0)); got != 4*time.Second {
		t.Errorf("capped, rnd 0: got %v, want 4s", got)
	}
	if got := capped.Delay(1, Advice{}, backoffNow, fixed(0.99)); got != 10*time.Second {
		t.Errorf("capped, rnd 0.99: got %v, want Max 10s", got)
	}
	for attempt := uint32(1); attempt < 100; attempt++ {
		for i := range 100 {
			if got := capped.Delay(attempt, Advice{}, backoffNow, fixed(float64(i)/100)); got > capped.Max {
				t.Fatalf("Delay(%d), rnd %v = %v beyond Max", attempt, float64(i)/100, got)
			}
		}
	}

	// A nil rnd uses the package's generator and stays in bounds.
	for range 100 {
		if got := b.Delay(1, Advice{}, backoffNow, nil); got < lo || got > hi {
			t.Fatalf("nil rnd: %v outside [%v, %v]", got, lo, hi)
		}
	}
}

func TestBackoffAdviceReplacesBase(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}
	advice := Advice{Backoff: 3 * time.Second}
	if got := b.Delay(4, advice, backoffNow, fixed(0.5)); got != 3*time.Second {
		t.Errorf("advice 3s at attempt 4: got %v, want 3s (the schedule says 800ms)", got)
	}
	if got := b.Delay(4, advice, backoffNow, fixed(0)); got != 2400*time.Millisecond {
		t.Errorf("advice 3s, rnd 0: got %v, want 2.4s (jitter applies to the advice)", got)
	}
	// Max caps the schedule, not the advice: a dependency that asks for a minute gets it.
	long := Advice{Backoff: time.Minute}
	if got := b.Delay(1, long, backoffNow, fixed(0.5)); got != time.Minute {
		t.Errorf("advice 1m with Max 10s: got %v, want 1m", got)
	}
	if got := b.Delay(1, long, backoffNow, fixed(0.99)); got != time.Minute {
		t.Errorf("advice 1m, rnd 0.99: got %v, want 1m (jitter never beyond max(Max, advice))", got)
	}
	// Advice without Backoff leaves the schedule alone.
	if got := b.Delay(4, Advice{Attempts: 3}, backoffNow, fixed(0.5)); got != 800*time.Millisecond {
		t.Errorf("advice without Backoff: got %v, want the schedule's 800ms", got)
	}
}

func TestBackoffNotBeforeExtends(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond}
	later := Advice{NotBefore: backoffNow.Add(5 * time.Second)}
	for _, r := range []float64{0, 0.5, 0.99} {
		if got := b.Delay(1, later, backoffNow, fixed(r)); got != 5*time.Second {
			t.Errorf("NotBefore now+5s, rnd %v: got %v, want exactly 5s", r, got)
		}
	}
	// NotBefore is not capped by Max.
	if got := b.Delay(1, Advice{NotBefore: backoffNow.Add(time.Hour)}, backoffNow, fixed(0.5)); got != time.Hour {
		t.Errorf("NotBefore now+1h: got %v, want 1h", got)
	}
	// An earlier NotBefore (or one in the past) does not shorten the delay.
	for _, nb := range []time.Time{backoffNow.Add(10 * time.Millisecond), backoffNow.Add(-time.Hour)} {
		if got := b.Delay(1, Advice{NotBefore: nb}, backoffNow, fixed(0.5)); got != 100*time.Millisecond {
			t.Errorf("NotBefore %v: got %v, want the schedule's 100ms", nb.Sub(backoffNow), got)
		}
	}
	// With both, the later of advice.Backoff and NotBefore wins.
	both := Advice{Backoff: 2 * time.Second, NotBefore: backoffNow.Add(time.Second)}
	if got := b.Delay(1, both, backoffNow, fixed(0.5)); got != 2*time.Second {
		t.Errorf("Backoff 2s, NotBefore now+1s: got %v, want 2s", got)
	}
	// A NotBefore far beyond Duration's range saturates instead of wrapping negative.
	far := Advice{NotBefore: backoffNow.AddDate(1000, 0, 0)}
	if got := b.Delay(1, far, backoffNow, fixed(0.5)); got != time.Duration(math.MaxInt64) {
		t.Errorf("NotBefore in 1000 years: got %v, want the largest Duration", got)
	}
}

func TestBackoffHandlerAfterIsFloor(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Jitter: 1}
	for _, r := range []float64{0, 0.5, 0.99} {
		if got := b.Delay(1, Advice{After: time.Second}, backoffNow, fixed(r)); got != time.Second {
			t.Errorf("Retry(1s), rnd %v: got %v, want 1s", r, got)
		}
	}
	// A floor below the schedule changes nothing.
	if got := b.Delay(3, Advice{After: time.Millisecond}, backoffNow, fixed(0.5)); got != 400*time.Millisecond {
		t.Errorf("Retry(1ms) at attempt 3: got %v, want the schedule's 400ms", got)
	}
	// Jitter applied to the advice never takes the delay below the handler's floor.
	advice := Advice{Backoff: time.Second, After: 900 * time.Millisecond}
	if got := b.Delay(1, advice, backoffNow, fixed(0)); got != 900*time.Millisecond {
		t.Errorf("advice 1s, Retry(900ms), rnd 0: got %v, want 900ms", got)
	}
	// The floor beats NotBefore when it is later, and loses when it is earlier.
	nb := backoffNow.Add(3 * time.Second)
	if got := b.Delay(1, Advice{NotBefore: nb, After: 4 * time.Second}, backoffNow, fixed(0.5)); got != 4*time.Second {
		t.Errorf("NotBefore now+3s, Retry(4s): got %v, want 4s", got)
	}
	if got := b.Delay(1, Advice{NotBefore: nb, After: 2 * time.Second}, backoffNow, fixed(0.5)); got != 3*time.Second {
		t.Errorf("NotBefore now+3s, Retry(2s): got %v, want 3s", got)
	}
}

func TestBackoffExhausted(t *testing.T) {
	b := Backoff{MaxAttempts: 3}
	for attempt, want := range map[uint32]bool{0: false, 1: false, 2: false, 3: true, 4: true, math.MaxUint32: true} {
		if got := b.Exhausted(attempt, Advice{}); got != want {
			t.Errorf("MaxAttempts 3: Exhausted(%d) = %v, want %v", attempt, got, want)
		}
	}
	if !(Backoff{}).Exhausted(5, Advice{}) || (Backoff{}).Exhausted(4, Advice{}) {
		t.Error("zero Backoff: want the 5th delivery to be the last")
	}
	// Advice without Attempts leaves MaxAttempts in force.
	if !b.Exhausted(3, Advice{Backoff: time.Second}) {
		t.Error("advice without Attempts at attempt 3 of 3: want exhausted")
	}
	// advice.Attempts (further attempts suggested) overrides MaxAttempts, upwards too.
	for _, attempt := range []uint32{1, 3, 100, math.MaxUint32} {
		if b.Exhausted(attempt, Advice{Attempts: 2}) {
			t.Errorf("advice of 2 more attempts at attempt %d: want not exhausted", attempt)
		}
	}
}

func TestBackoffHugeAttemptsNeverOverflow(t *testing.T) {
	schedules := []Backoff{
		{},
		{Initial: time.Duration(math.MaxInt64), Max: time.Duration(math.MaxInt64), Multiplier: 1e300, Jitter: 1},
		{Initial: time.Hour, Max: time.Duration(math.MaxInt64), Multiplier: math.Inf(1), Jitter: 1},
		{Initial: time.Nanosecond, Max: time.Duration(math.MaxInt64 - 1), Multiplier: 1.0000001},
	}
	attempts := []uint32{1, 2, 31, 32, 63, 64, 65, 1023, 1024, 1 << 20, math.MaxUint32 - 1, math.MaxUint32}
	for _, s := range schedules {
		max := s.WithDefaults().Max
		prev := time.Duration(0)
		for _, a := range attempts {
			for _, r := range []float64{0, 0.5, math.Nextafter(1, 0)} {
				got := s.Delay(a, Advice{}, backoffNow, fixed(r))
				if got < 0 || got > max {
					t.Fatalf("%+v: Delay(%d), rnd %v = %v, want within [0, %v]", s, a, r, got, max)
				}
			}
			// Without jitter the schedule never shrinks as attempts grow.
			got := s.Delay(a, Advice{}, backoffNow, fixed(0.5))
			if got < prev {
				t.Fatalf("%+v: Delay(%d) = %v, shorter than the previous attempt's %v", s, a, got, prev)
			}
			prev = got
		}
		if got := s.Delay(math.MaxUint32, Advice{}, backoffNow, fixed(0.5)); got != max {
			t.Errorf("%+v: Delay(MaxUint32) = %v, want Max %v", s, got, max)
		}
	}
}

func ExampleBackoff_Delay() {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	now := time.Now()
	noJitter := func() float64 { return 0.5 } // the midpoint of the jitter range
	for attempt := uint32(1); attempt <= 5; attempt++ {
		fmt.Println(attempt, b.Delay(attempt, Advice{}, now, noJitter))
	}
	// The failing side's advice and the handler's Retry(after) refine the schedule.
	fmt.Println(b.Delay(1, Advice{Backoff: 3 * time.Second}, now, noJitter))
	fmt.Println(b.Delay(1, Advice{After: 2 * time.Second}, now, noJitter))
	// Output:
	// 1 100ms
	// 2 200ms
	// 3 400ms
	// 4 800ms
	// 5 1s
	// 3s
	// 2s
}
