package tandem

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// ErrRateLimited is wrapped by the error a RateLimit policy's Admit returns when it
// refuses an event: no token now (without waiting), or none before the context ends (with
// waiting; the error then also matches the context's error). The error carries the code
// "rate_limited" and, without waiting, the delay until a token as retry advice. A refusal
// is not a handler failure.
var ErrRateLimited = errors.New("tandem: rate limited")

// rateLimit is the Policy RateLimit returns.
type rateLimit struct {
	lim  *rate.Limiter
	wait bool
}

// RateLimit returns a policy that admits events at limit per second on average, with
// bursts of up to burst events (burst below 1 is taken as 1), with a token bucket from
// golang.org/x/time/rate. One policy is one bucket: routes sharing it share the rate.
//
// With wait, an event waits for a token until its context ends, holding its worker (Go) or
// its submitter (Rust) meanwhile, so the limit is back-pressure; an event that cannot get a
// token in time, which the limiter knows at once when the context's deadline is too
// close, is refused: Admit returns an error wrapping ErrRateLimited and the context's
// error, a wrapped Go handler returns Retry(0, code "rate_limited"). Without wait, an event
// beyond the rate is refused at once: Admit returns an error wrapping ErrRateLimited, a
// wrapped Go handler returns Retry(delay until a token, code "rate_limited").
func RateLimit(limit rate.Limit, burst int, wait bool) Policy {
	return &rateLimit{lim: rate.NewLimiter(limit, max(burst, 1)), wait: wait}
}

// Wrap implements Policy.
func (p *rateLimit) Wrap(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, ev *Event) Result {
		if after, err := p.take(ctx); err != nil {
			return Retry(after, err)
		}
		return next.Handle(ctx, ev)
	})
}

// Admit implements Policy; its done does nothing.
func (p *rateLimit) Admit(ctx context.Context, _ *Event) (func(error), error) {
	if _, err := p.take(ctx); err != nil {
		return nil, err
	}
	return noopDone, nil
}

// take takes a token, or returns the refusal and how long until a token (0 if unknown).
func (p *rateLimit) take(ctx context.Context) (time.Duration, error) {
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
