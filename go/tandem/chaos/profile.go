package chaos

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Profile is a traffic shape: when the events of a run are due, as offsets from the run's
// start. A Profile is a plain value, safe to share: each run draws its own arrivals from it.
type Profile struct {
	name string
	// rate is the offered rate (events/s) at an offset, for the rate-driven shapes; arrivals
	// are then a Poisson process of that rate.
	rate func(t time.Duration) float64
	// trace is a recorded arrival trace, replayed in a loop.
	trace []time.Duration
	// cycle takes turns among these profiles, hold each.
	cycle []Profile
	hold  time.Duration
}

// Name says what the profile is, for the report.
func (p Profile) Name() string { return p.name }

// Steady offers rate events per second, as a Poisson process.
func Steady(rate float64) Profile {
	return Profile{name: fmt.Sprintf("steady %.0f/s", rate), rate: func(time.Duration) float64 { return rate }}
}

// Sine offers a rate that swings between mean−amplitude and mean+amplitude over period.
func Sine(mean, amplitude float64, period time.Duration) Profile {
	return Profile{name: fmt.Sprintf("sine %.0f±%.0f/s over %v", mean, amplitude, period),
		rate: func(t time.Duration) float64 {
			return mean + amplitude*math.Sin(2*math.Pi*float64(t)/float64(period))
		}}
}

// Square offers half of capacity, with a burst at factor × capacity for the first burst of
// every period: square bursts that overflow a route sized for capacity (factor 10 is the
// issue's "10× a route's capacity").
func Square(capacity, factor float64, period, burst time.Duration) Profile {
	return Profile{name: fmt.Sprintf("square %.0f/s, bursts of %v at %.0f× every %v", capacity/2, burst, factor, period),
		rate: func(t time.Duration) float64 {
			if t%period < burst {
				return capacity * factor
			}
			return capacity / 2
		}}
}

// Steps holds each rate of levels for hold, in turn, then starts again: a step up and down
// when levels rise and fall.
func Steps(hold time.Duration, levels ...float64) Profile {
	names := make([]string, len(levels))
	for i, l := range levels {
		names[i] = strconv.FormatFloat(l, 'f', 0, 64)
	}
	return Profile{name: fmt.Sprintf("steps %s/s, %v each", strings.Join(names, "→"), hold),
		rate: func(t time.Duration) float64 {
			if len(levels) == 0 {
				return 0
			}
			return levels[int(t/hold)%len(levels)]
		}}
}

// Replay replays a recorded arrival trace (offsets from its start, non-decreasing, as
// ReadTrace returns them), in a loop when the run outlasts it. name says where it came from.
func Replay(name string, offsets []time.Duration) Profile {
	return Profile{name: "replay " + name, trace: offsets}
}

// Cycle runs each profile for hold, in turn, from its own start, and starts again after the
// last: a mix of shapes in one run.
func Cycle(hold time.Duration, profiles ...Profile) Profile {
	names := make([]string, len(profiles))
	for i, p := range profiles {
		names[i] = p.name
	}
	return Profile{name: fmt.Sprintf("cycle of %v each: %s", hold, strings.Join(names, "; ")), cycle: profiles, hold: hold}
}

// ErrTrace: an arrival trace is malformed; the wrapped message names the line.
var ErrTrace = errors.New("chaos: malformed arrival trace")

// ReadTrace reads an arrival trace: one arrival per line, its offset from the start of the
// trace either as a Go duration ("12.5ms", "1.2s") or as a number of seconds ("0.0125").
// Blank lines and lines starting with # are skipped. Offsets must be non-negative and
// non-decreasing; several arrivals may share one offset.
func ReadTrace(r io.Reader) ([]time.Duration, error) {
	var out []time.Duration
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		d, err := time.ParseDuration(line)
		if err != nil {
			s, ferr := strconv.ParseFloat(line, 64)
			if ferr != nil || math.IsNaN(s) || math.IsInf(s, 0) {
				return nil, fmt.Errorf("%w: line %d: %q is neither a duration nor seconds", ErrTrace, n, line)
			}
			d = time.Duration(s * float64(time.Second))
		}
		if d < 0 {
			return nil, fmt.Errorf("%w: line %d: negative offset %v", ErrTrace, n, d)
		}
		if len(out) > 0 && d < out[len(out)-1] {
			return nil, fmt.Errorf("%w: line %d: offset %v comes before the previous %v", ErrTrace, n, d, out[len(out)-1])
		}
		out = append(out, d)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no arrivals", ErrTrace)
	}
	return out, nil
}

// arrivals returns the profile's due offsets, one per call, non-decreasing and endless.
func (p Profile) arrivals(rng *rand.Rand) func() time.Duration {
	switch {
	case p.cycle != nil:
		return cycleArrivals(p, rng)
	case p.trace != nil:
		return traceArrivals(p.trace)
	case p.rate != nil:
		t := time.Duration(0)
		return func() time.Duration {
			// A Poisson process whose rate is read at each arrival; a rate below 1/s
			// waits a second and looks again, so a profile may pause.
			for {
				r := p.rate(t)
				if r < 1 {
					t += time.Second
					continue
				}
				t += time.Duration(rng.ExpFloat64() / r * float64(time.Second))
				return t
			}
		}
	default:
		return func() time.Duration { return math.MaxInt64 }
	}
}

func traceArrivals(trace []time.Duration) func() time.Duration {
	// Each loop starts one mean gap after the last arrival of the previous one.
	span := trace[len(trace)-1]
	if len(trace) > 1 {
		span += span / time.Duration(len(trace)-1)
	}
	span = max(span, time.Millisecond)
	i, base := 0, time.Duration(0)
	return func() time.Duration {
		if i == len(trace) {
			i, base = 0, base+span
		}
		t := base + trace[i]
		i++
		return t
	}
}

func cycleArrivals(p Profile, rng *rand.Rand) func() time.Duration {
	if len(p.cycle) == 0 || p.hold <= 0 {
		return func() time.Duration { return math.MaxInt64 }
	}
	seg := 0
	next := p.cycle[0].arrivals(rng)
	return func() time.Duration {
		for {
			t := next()
			if t < p.hold {
				return time.Duration(seg)*p.hold + t
			}
			seg++
			next = p.cycle[seg%len(p.cycle)].arrivals(rng)
		}
	}
}
