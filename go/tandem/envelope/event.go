package envelope

import (
	"errors"
	"time"
)

// Event is one event as Go code sees it: the CloudEvents 1.0 context attributes,
// tandem's delivery attributes, an extensions map and opaque data. It is encoded on
// the wire as the version 1 envelope described in ffi/envelope.cddl and docs/envelope.md.
//
// ID, Source and Type are required and must be non-empty; SpecVersion "" encodes as
// "1.0". A zero Time or Deadline means absent, as do the empty string for every
// optional text field, Attempt 0, an empty Extensions map and empty Data.
//
// An Event is a plain value: the package never retains or mutates one it is given, so
// callers may reuse it after an encode call returns. Concurrent use of the same Event
// is safe as long as nobody writes to it.
type Event struct {
	ID          string
	Source      string
	Type        string
	SpecVersion string
	// Time is when the occurrence happened; encoded as Unix nanoseconds.
	Time            time.Time
	Subject         string
	DataContentType string
	DataSchema      string
	CorrelationID   string
	CausationID     string
	// TraceParent and TraceState are the W3C trace context headers, verbatim.
	TraceParent string
	TraceState  string
	// Attempt is the delivery number, from 1: a handler sees 1 on the first delivery, 2 on
	// the first retry. A submitter leaves it 0 (encoded as absent; delivered as 1), or sets
	// the number of the delivery it makes when it redelivers an event (a broker's delivery
	// count): the runtime counts on from there. The envelope keeps the submitter's value;
	// each delivery's number travels beside it (docs/boundary.md).
	Attempt uint32
	// Deadline is when the handler's result stops being useful; encoded as Unix nanoseconds.
	// It bounds every delivery of the event: tandem cuts a delivery short at it and does not
	// retry past it (the event is dead-lettered as expired).
	Deadline       time.Time
	IdempotencyKey string
	PartitionKey   string
	Extensions     map[string]string
	Data           []byte
}

// RetryPolicy is the retry advice an error envelope may carry. A zero field is absent
// on the wire. It is a plain value, safe for concurrent reads.
type RetryPolicy struct {
	// Attempts is how many more attempts the failing side suggests.
	Attempts uint32
	// Backoff is how long to wait before the next attempt; it must not be negative.
	Backoff time.Duration
	// NotBefore is the earliest time of the next attempt.
	NotBefore time.Time
}

// ErrorEnvelope is a handler failure as it crosses the boundary: a code (one of the
// Code constants, listed by Codes, or a handler's own), a message, optional retry
// advice, and which runtime and handler produced it. Code is required; empty strings are
// absent. It is a plain value, safe for concurrent reads.
type ErrorEnvelope struct {
	Code    string
	Message string
	Retry   *RetryPolicy
	// Runtime is "go" or "rust".
	Runtime string
	Handler string
}

// ErrInvalidEvent is returned (wrapped, naming the field) by Validate, AppendEvent and
// MarshalEvent when an Event cannot be encoded: a required field is empty, a text field
// (an extension's key or value included) is not valid UTF-8, or a time is outside the
// range of int64 Unix nanoseconds (years 1678 to 2262).
var ErrInvalidEvent = errors.New("tandem: invalid event")

// ErrInvalidErrorEnvelope is returned (wrapped, naming the field) by
// MarshalErrorEnvelope and AppendErrorEnvelope when an ErrorEnvelope cannot be
// encoded: Code is empty, a text field is not valid UTF-8, Retry.Backoff is negative or a
// time is out of range.
var ErrInvalidErrorEnvelope = errors.New("tandem: invalid error envelope")
