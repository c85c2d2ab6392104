package deadletter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Reason says why an event was dead-lettered. The constants below are the ones tandem
// writes; a sink stores any non-empty reason, so others may add their own.
type Reason string

// The reasons tandem dead-letters an event for.
const (
	// ReasonTerm: a handler returned Term.
	ReasonTerm Reason = "term"
	// ReasonMaxAttempts: retries exhausted.
	ReasonMaxAttempts Reason = "max_attempts"
	// ReasonRetryBudget: the retry budget refused a retry (a failing dependency, most likely).
	ReasonRetryBudget Reason = "retry_budget"
	// ReasonExpired: the event's own deadline (Event.Deadline) passed, or would pass before
	// its next delivery: it is not retried.
	ReasonExpired Reason = "expired"
	// ReasonDecode: the envelope could not be decoded.
	ReasonDecode Reason = "decode"
	// ReasonNoRoute: no handler is routed for the event's type.
	ReasonNoRoute Reason = "no_route"
	// ReasonShed: dropped by a Shed overload policy.
	ReasonShed Reason = "shed"
	// ReasonCancelled: cancelled at shutdown with a policy that dead-letters.
	ReasonCancelled Reason = "cancelled"
)

// Record is one dead-lettered event: why, the error envelope, how many attempts were
// made, what is known of the event, and its original envelope bytes. It is a plain value;
// sinks neither retain nor modify one they are given.
type Record struct {
	// Reason is required.
	Reason Reason
	// Error is the error envelope of the last failure; it may be nil.
	Error *envelope.ErrorEnvelope
	// Attempts is how many deliveries were made.
	Attempts uint32
	// EventID, EventType and Source are copied from the event when known (empty if it did
	// not decode).
	EventID, EventType, Source string
	// Route is the route pattern or handler name, when known.
	Route string
	// Time is when the event was dead-lettered. A sink stamps a zero Time with the time of
	// the write. Read back, it is in UTC.
	Time time.Time
	// Envelope is the original event envelope, byte for byte as submitted.
	Envelope []byte
}

// Sink receives dead letters. Implementations must be safe for concurrent use; Write must
// not retain r or r.Envelope after it returns, and must return an error (never drop the
// record silently) when it cannot store it. Closing a sink is its owner's business, not
// the runtime's: the runtime only writes. A closed sink's Write fails with ErrSinkClosed.
type Sink interface {
	Write(ctx context.Context, r *Record) error
}

var (
	// ErrSinkClosed: Write after Close.
	ErrSinkClosed = errors.New("tandem: dead-letter sink is closed")
	// ErrInvalidRecord (wrapped, naming the field): the reason is empty, the error
	// envelope cannot be encoded, or the time is out of range.
	ErrInvalidRecord = errors.New("tandem: invalid dead-letter record")
	// ErrUnsafeFileMode: OpenFile refuses an existing dead-letter file that its group
	// or others may access; dead letters carry event payloads. chmod 600 it.
	ErrUnsafeFileMode = errors.New("tandem: dead-letter file is accessible to group or others")
	// ErrSinkInUse: another FileSink, in this process or another, holds the file.
	ErrSinkInUse = errors.New("tandem: dead-letter file is in use by another sink")
)

// FileError is a dead-letter file that cannot be read past a point: a record that is
// malformed or invalid, or bytes at the end that are not a record cut short. Offset is
// where the bad record starts.
type FileError struct {
	Path   string
	Offset int64
	Err    error
}

// Error names the file, the offset and what is wrong there.
func (e *FileError) Error() string {
	return fmt.Sprintf("tandem: dead-letter file %s: bad record at offset %d: %v", e.Path, e.Offset, e.Err)
}

// Unwrap returns the underlying error (often an *envelope.DecodeError).
func (e *FileError) Unwrap() error { return e.Err }
