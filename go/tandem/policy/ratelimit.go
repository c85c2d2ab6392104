package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/tandemrt/tandem/go/tandem"
)

// ErrRateLimited is wrapped by the error a RateLimit's Admit returns when it refuses an
// event: no token now (by default), or none before the context ends (with WaitForToken; the
// error then also matches the context's error). The error carries the code "rate_limited"
// and, when refused at once, the delay until a token as retry advice. A refusal is not a
// handler failure.
var ErrRateLimited = errors.New("tandem: rate limited")

// RateLimit is a token-bucket rate limit policy, made by NewRateLimit. It is safe for
// concurrent use; one RateLimit is one bucket, so routes sharing it share the rate.
type RateLimit struct {
	lim  *rate.Limiter
	wait bool
}

var _ tandem.Policy = (*RateLimit)(nil)

// RateLimitOption configures a RateLimit made by NewRateLimit (see WaitForToken).
type RateLimitOption func(*RateLimit)

// WaitForToken makes a RateLimit wait for a token instead of refusing an event beyond the
// rate: the event waits until its context ends, holding its worker (Go route) or its
// submitter (Rust route) meanwhile, so the limit is back-pressure. An event that cannot get
// a token in time, which the limiter knows at once when the context's deadline is too
// close, is refused: Admit returns an error wrapping ErrRateLimited and the context's
// error, a wrapped Go handler returns Retry(0, code "rate_limited").
func WaitForToken() RateLimitOption { return func(p *RateLimit) { p.wait = true } }

// NewRateLimit returns a policy that admits events at limit per second on average, with
// bursts of up to burst events (burst below 1 is taken as 1), with a token bucket from
// golang.org/x/time/rate.
//
// By default an event beyond the rate is refused at once: Admit returns an error wrapping
// ErrRateLimited, a wrapped Go handler returns Retry(delay until a token, code
// "rate_limited"), so the retry schedule brings it back no sooner than a token. With
// WaitForToken the event waits for a token instead.
func NewRateLimit(limit rate.Limit, burst int, opts ...RateLimitOption) *RateLimit {
	p := &RateLimit{lim: rate.NewLimiter(limit, max(burst, 1))}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Wrap implements tandem.Policy: next runs once the event has a token.
func (p *RateLimit) Wrap(next tandem.Handler) tandem.Handler {
	return tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		if after, err := p.take(ctx); err != nil {
			return tandem.Retry(after, err)
		}
		return next.Handle(ctx, ev)
	})
}

// Admit implements tandem.Policy: it takes a token or refuses with an error wrapping
// ErrRateLimited. Its done does nothing: a token spent is spent, whatever the outcome.
func (p *RateLimit) Admit(ctx context.Context, _ *tandem.Event) (func(error), error) {
	if _, err := p.take(ctx); err != nil {
		return nil, err
	}
	return noopDone, nil
}

// take takes a token, or returns the refusal and how long until a token (0 if unknown).
func (p *RateLimit) take(ctx context.Context) (time.Duration, error) {
	if p.wait {
		err := p.lim.Wait(ctx)
		if err == nil {
			return 0, nil
		}
		cause := ctx.Err()
		if cause == nil {
			// The limiter refused at once: no token before ctx's deadline.
			cause = context.DeadlineExceeded
		}
		return 0, newRefusal(ErrRateLimited, codeRateLimited,
			fmt.Sprintf("no token before the context ended: %v", err), 0, cause)
	}
	if p.lim.Allow() {
		return 0, nil
	}
	// Refused: learn how long until a token, then give the reservation back. A token may
	// have come in between; then keep it.
	r := p.lim.Reserve()
	after := r.Delay()
	if after == 0 {
		return 0, nil
	}
	r.Cancel()
	if after == rate.InfDuration {
		after = 0
	}
	return after, newRefusal(ErrRateLimited, codeRateLimited,
		fmt.Sprintf("over %v events per second; a token in %v", float64(p.lim.Limit()), after), after, nil)
}
