package tandem

import (
	"fmt"
	"math"
	"time"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Event is one event: the CloudEvents 1.0 context attributes, tandem's delivery
// attributes, an extensions map and opaque data. It is an alias of envelope.Event, which
// documents every field and the wire format; the codec lives in package envelope.
type Event = envelope.Event

// ErrorEnvelope is a handler failure as it crosses the boundary: a code (see
// envelope.Codes), a message, optional retry advice, and which runtime and handler gave
// it. It is an alias of envelope.ErrorEnvelope.
type ErrorEnvelope = envelope.ErrorEnvelope

// RetryPolicy is the retry advice an ErrorEnvelope may carry. It is an alias of
// envelope.RetryPolicy.
type RetryPolicy = envelope.RetryPolicy

// validateEvent rejects, with envelope.ErrInvalidEvent wrapped, an event that could not
// be encoded: the rules of envelope.AppendEvent, for a Go route's event, which is handed
// to its handler without being encoded.
func validateEvent(ev *Event) error {
	switch {
	case ev == nil:
		return fmt.Errorf("%w: nil", envelope.ErrInvalidEvent)
	case ev.ID == "":
		return fmt.Errorf("%w: ID is empty", envelope.ErrInvalidEvent)
	case ev.Source == "":
		return fmt.Errorf("%w: Source is empty", envelope.ErrInvalidEvent)
	case ev.Type == "":
		return fmt.Errorf("%w: Type is empty", envelope.ErrInvalidEvent)
	case !validTime(ev.Time):
		return fmt.Errorf("%w: Time %v is outside int64 Unix nanoseconds", envelope.ErrInvalidEvent, ev.Time)
	case !validTime(ev.Deadline):
		return fmt.Errorf("%w: Deadline %v is outside int64 Unix nanoseconds", envelope.ErrInvalidEvent, ev.Deadline)
	}
	return nil
}

func validTime(t time.Time) bool {
	return t.IsZero() || (!t.Before(time.Unix(0, math.MinInt64)) && !t.After(time.Unix(0, math.MaxInt64)))
}
