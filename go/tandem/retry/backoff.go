package retry

import (
	"math"
	"math/rand/v2"
	"time"
)

// Defaults of a zero Backoff field.
const (
	defaultBackoffAttempts   = 5
	defaultBackoffInitial    = 50 * time.Millisecond
	defaultBackoffMax        = 10 * time.Second
	defaultBackoffMultiplier = 2
	defaultBackoffJitter     = 0.2
)

// Backoff is a route's default retry schedule: exponential growth from Initial by
// Multiplier per failed delivery, capped at Max, with a fraction Jitter of each delay
// randomised so that events that failed together do not come back together. An Advice
// (the failing side's retry policy and the handler's Retry(after)) refines it per failure
// (see Delay).
//
// A zero field takes its default; so does a negative one. A Backoff is a plain value:
// its methods never modify it and are safe for concurrent use.
type Backoff struct {
	// MaxAttempts is the number of deliveries in all, including the first (default 5).
	MaxAttempts uint32
	// Initial is the delay before the first retry (default 50ms).
	Initial time.Duration
	// Max caps the schedule's delays, jitter included (default 10s).
	Max time.Duration
	// Multiplier is the growth of the delay per failed delivery (default 2; less than 1
	// means 1, a constant delay).
	Multiplier float64
	// Jitter is the fraction of each delay that is randomised (default 0.2; above 1
	// means 1): a delay d becomes uniform in [d·(1−Jitter), d·(1+Jitter)], clamped to
	// Max. 1 spreads retries over [0, 2d].
	Jitter float64
}

// WithDefaults returns b with its zero and out-of-range fields replaced by the values
// Delay and Exhausted use for them, so a caller can show or store the effective schedule.
func (b Backoff) WithDefaults() Backoff {
	if b.MaxAttempts == 0 {
		b.MaxAttempts = defaultBackoffAttempts
	}
	if b.Initial <= 0 {
		b.Initial = defaultBackoffInitial
	}
	if b.Max <= 0 {
		b.Max = defaultBackoffMax
	}
	switch {
	case b.Multiplier <= 0 || math.IsNaN(b.Multiplier):
		b.Multiplier = defaultBackoffMultiplier
	case b.Multiplier < 1:
		b.Multiplier = 1
	}
	switch {
	case b.Jitter <= 0 || math.IsNaN(b.Jitter):
		b.Jitter = defaultBackoffJitter
	case b.Jitter > 1:
		b.Jitter = 1
	}
	return b
}

// Advice is what a failure says about its own retry, beside the route's schedule: the
// failing side's retry policy (the error envelope's attempts, backoff and not-before; see
// ffi/envelope.cddl) and the handler's Retry(after). The zero Advice means none. It is a
// plain value, kept free of the envelope types so that this package stands alone.
type Advice struct {
	// Attempts is the number of further deliveries the failing side suggests; 0 means no
	// suggestion. See Exhausted.
	Attempts uint32
	// Backoff, if positive, replaces the schedule's delay before the next delivery
	// (jitter still applies to it; Max does not cap it).
	Backoff time.Duration
	// NotBefore, if set, is the earliest time of the next delivery: a hard lower bound.
	NotBefore time.Time
	// After, if positive, is the handler's Retry(after): a hard lower bound on the delay.
	After time.Duration
}

// Delay returns how long to wait before delivery attempt+1, given that delivery attempt
// (1-based; 0 counts as 1) failed with advice (the zero Advice for none):
//
//   - the base delay is advice.Backoff if positive, else Initial·Multiplier^(attempt−1)
//     capped at Max;
//   - jitter spreads the base over [base·(1−Jitter), base·(1+Jitter)] using rnd, never
//     above the larger of Max and the base (so Max caps the schedule, not the advice);
//   - advice.NotBefore, if set and later than now+delay, extends the delay to it;
//   - advice.After, if positive, is a floor.
//
// NotBefore and After are hard lower bounds: jitter never brings the delay below them.
// rnd returns values in [0, 1) (math/rand/v2.Float64; a fixed function in tests); nil
// means math/rand/v2.Float64. The result is never negative, whatever the attempt number:
// the growth saturates at Max instead of overflowing.
func (b Backoff) Delay(attempt uint32, advice Advice, now time.Time, rnd func() float64) time.Duration {
	b = b.WithDefaults()
	base := b.scheduled(attempt)
	ceiling := b.Max
	if advice.Backoff > 0 {
		base = advice.Backoff
		ceiling = max(ceiling, base)
	}
	delay := b.jitter(base, ceiling, rnd)
	if !advice.NotBefore.IsZero() {
		// time.Time.Sub saturates rather than wraps for far-apart times.
		if until := advice.NotBefore.Sub(now); until > delay {
			delay = until
		}
	}
	if advice.After > delay {
		delay = advice.After
	}
	return max(delay, 0)
}

// scheduled is the un-jittered delay after delivery attempt failed, capped at Max.
func (b Backoff) scheduled(attempt uint32) time.Duration {
	if attempt <= 1 {
		return min(b.Initial, b.Max)
	}
	// Float arithmetic saturates to +Inf instead of wrapping; compare before converting,
	// since converting a float beyond int64 to a Duration is undefined.
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(attempt-1))
	if !(d < float64(b.Max)) {
		return b.Max
	}
	return time.Duration(d)
}

// jitter spreads d over [d·(1−Jitter), d·(1+Jitter)] and clamps the result to ceiling.
func (b Backoff) jitter(d, ceiling time.Duration, rnd func() float64) time.Duration {
	if rnd == nil {
		rnd = rand.Float64
	}
	r := rnd()
	switch {
	case !(r >= 0): // negative or NaN
		r = 0
	case r > 1:
		r = 1
	}
	j := float64(d) * (1 - b.Jitter + 2*b.Jitter*r)
	if !(j < float64(ceiling)) {
		return ceiling
	}
	return time.Duration(j)
}

// Exhausted reports whether delivery attempt (1-based) was the last one allowed, so a
// failure of it is final. Without a suggestion (advice.Attempts 0) the limit is
// MaxAttempts. advice.Attempts, the number of further attempts the failing side suggests,
// overrides MaxAttempts: the last allowed delivery becomes attempt+advice.Attempts, so
// such advice is never exhausted at the failure that carries it. Advice is judged at the
// failure it comes with; a caller that wants a suggested limit to hold for later
// deliveries too must remember it.
func (b Backoff) Exhausted(attempt uint32, advice Advice) bool {
	if advice.Attempts > 0 {
		return false
	}
	return attempt >= b.WithDefaults().MaxAttempts
}
