package policy

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/tandemrt/tandem/go/tandem"
)

// ErrCircuitOpen is wrapped by the error a Breaker's Admit returns while the
// circuit is open, or half-open with every probe in flight: the route's handler is failing,
// so the event is refused without being published. The error carries the code
// "circuit_open" and, as retry advice, the time left until the breaker lets a probe
// through. A refusal is not a handler failure.
var ErrCircuitOpen = errors.New("tandem: circuit open")

// BreakerSettings configures a Breaker made by NewBreaker. The zero value is usable.
type BreakerSettings struct {
	// MaxRequests is how many probes the half-open breaker lets through, and how many of
	// them must succeed in a row to close it (default 1).
	MaxRequests uint32
	// Interval is the cyclic period after which the closed breaker clears its counts;
	// 0 never clears them (a success still resets the consecutive failures).
	Interval time.Duration
	// Timeout is how long the breaker stays open before it half-opens (default 60s).
	Timeout time.Duration
	// ConsecutiveFailures is how many failures in a row trip the closed breaker (default 5).
	ConsecutiveFailures uint32
	// OnStateChange, if set, is called on every transition with the breaker's name and
	// the states ("closed", "open", "half-open"). It runs under the breaker's lock: it must
	// be quick and must not call the breaker.
	OnStateChange func(name string, from, to string)
}

const (
	defaultBreakerTimeout  = 60 * time.Second
	defaultBreakerFailures = 5
)

// Breaker is a circuit breaker policy, made by NewBreaker. It is safe for concurrent use;
// one Breaker is one circuit, so share it between routes only if they share the dependency
// it guards. A runtime with a MeterProvider reports the state of each route's Breaker.
type Breaker struct {
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	name    string
	timeout time.Duration
	epoch   time.Time
	opened  atomic.Int64 // when the breaker last opened, in nanoseconds since epoch
}

var _ tandem.Policy = (*Breaker)(nil)

// errPanicked is the outcome a Breaker records when its handler panics.
var errPanicked = errors.New("tandem: handler panicked")

// NewBreaker returns a circuit breaker named name (the name is reported to
// OnStateChange and in its errors), backed by github.com/sony/gobreaker.
//
// Closed, it counts outcomes: a Retry or Term from the handler (including a timeout and a
// panic) is a failure, an Ack a success; ConsecutiveFailures failures in a row open it. A
// refusal is neither: a duplicate, a refusal by another policy, or tandem.ErrOverloaded.
// Open, it refuses every event: a wrapped Go handler is not called and the event gets
// Retry(time until half-open, code "circuit_open"); Admit returns an error wrapping
// ErrCircuitOpen. After Timeout it half-opens and lets MaxRequests probes through: one
// failure opens it again, MaxRequests successes in a row close it.
func NewBreaker(name string, settings BreakerSettings) *Breaker {
	if settings.Timeout <= 0 {
		settings.Timeout = defaultBreakerTimeout
	}
	failures := settings.ConsecutiveFailures
	if failures == 0 {
		failures = defaultBreakerFailures
	}
	b := &Breaker{name: name, timeout: settings.Timeout, epoch: time.Now()}
	onChange := settings.OnStateChange
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: settings.MaxRequests,
		Interval:    settings.Interval,
		Timeout:     settings.Timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  isRefusal,
		OnStateChange: func(name string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.opened.Store(int64(time.Since(b.epoch)))
			}
			if onChange != nil {
				onChange(name, from.String(), to.String())
			}
		},
	})
	return b
}

// Name is the breaker's name, as given to NewBreaker.
func (b *Breaker) Name() string { return b.name }

// State is the breaker's state: "closed", "open" or "half-open". It is a snapshot: the
// state may change as soon as it returns.
func (b *Breaker) State() string { return b.cb.State().String() }

// Wrap implements tandem.Policy: next runs only if the breaker admits the event, and its
// result is recorded.
func (b *Breaker) Wrap(next tandem.Handler) tandem.Handler {
	return tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		done, err := b.cb.Allow()
		if err != nil {
			after, err := b.refusal(err)
			return tandem.Retry(after, err)
		}
		settled := false
		defer func() {
			if !settled { // next panicked: a failure, and a half-open probe slot is freed
				done(errPanicked)
			}
		}()
		res := next.Handle(ctx, ev)
		settled = true
		switch res.Outcome() {
		case tandem.OutcomeAck:
			done(nil)
		default:
			err := res.Err()
			if err == nil {
				err = errors.New("tandem: handler failed without an error")
			}
			done(err)
		}
		return res
	})
}

// Admit implements tandem.Policy: it refuses with an error wrapping ErrCircuitOpen while
// the breaker is open, and done records the event's outcome.
func (b *Breaker) Admit(_ context.Context, _ *tandem.Event) (func(error), error) {
	done, err := b.cb.Allow()
	if err != nil {
		_, err = b.refusal(err)
		return nil, err
	}
	return done, nil
}

// untilHalfOpen is how long the open breaker stays open.
func (b *Breaker) untilHalfOpen() time.Duration {
	opened := time.Duration(b.opened.Load())
	return max(b.timeout-(time.Since(b.epoch)-opened), 0)
}

// refusal describes gobreaker's refusal: open, or half-open with every probe in flight.
func (b *Breaker) refusal(err error) (time.Duration, error) {
	if errors.Is(err, gobreaker.ErrTooManyRequests) {
		return 0, newRefusal(ErrCircuitOpen, codeCircuitOpen,
			fmt.Sprintf("circuit breaker %q is half-open with every probe in flight", b.name), 0, nil)
	}
	after := b.untilHalfOpen()
	return after, newRefusal(ErrCircuitOpen, codeCircuitOpen,
		fmt.Sprintf("circuit breaker %q is open for %v more", b.name, after), after, nil)
}
