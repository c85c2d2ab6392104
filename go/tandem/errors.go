package tandem

import (
	"errors"
	"fmt"
	"time"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

var (
	// ErrOverloaded: every request slot is in flight and the policy is Reject.
	ErrOverloaded = errors.New("tandem: overloaded: every request slot is in flight")
	// ErrShed: the route was full and its policy is Shed: the event was dead-lettered.
	// errors.Is(err, ErrOverloaded) holds too.
	ErrShed = fmt.Errorf("%w (shed: dead-lettered)", ErrOverloaded)
	// ErrInvalidRoute: a route pattern or option is malformed, or a route was added after
	// Start.
	ErrInvalidRoute = errors.New("tandem: invalid route")
	// ErrNoHandlerContext: Emit or the package-level Call was given a context that does not
	// come from a handler.
	ErrNoHandlerContext = errors.New("tandem: not a handler's context")
	// ErrClosed: the runtime is not running (not started, draining or stopped).
	ErrClosed = errors.New("tandem: runtime is not running")
	// ErrNoRoute: no handler is routed for the event's type.
	ErrNoRoute = errors.New("tandem: no route for event type")
	// ErrABIMismatch: the linked library implements another ABI version; rebuild both sides
	// with ./build.sh.
	ErrABIMismatch = errors.New("tandem: ABI version mismatch")
	// ErrLibrary: the Rust library could not be loaded (purego mode): missing file, not a
	// library, or a missing export. The error names the file; errors.As with *LoadError.
	ErrLibrary = errors.New("tandem: cannot load the Rust library")
	// ErrEventTooLarge: the encoded event exceeds Config.MaxEventSize.
	ErrEventTooLarge = errors.New("tandem: event too large")
	// ErrInvalidConfig: a Config value is out of range.
	ErrInvalidConfig = errors.New("tandem: invalid config")
	// ErrStart: the runtime failed to start (a handler's init or warm-up failed, or the
	// library refused); the wrapped message names the cause.
	ErrStart = errors.New("tandem: start failed")
)

// LoadError says which library file failed to load, why, and what to do (purego mode).
type LoadError = abi.LoadError

// Outcome is a handler's verdict on an event.
type Outcome uint8

const (
	// OutcomeAck: handled.
	OutcomeAck Outcome = iota
	// OutcomeRetry: failed, deliver again later.
	OutcomeRetry
	// OutcomeTerm: failed for good; dead-letter, never retry.
	OutcomeTerm
)

func (o Outcome) String() string {
	switch o {
	case OutcomeAck:
		return "ack"
	case OutcomeRetry:
		return "retry"
	case OutcomeTerm:
		return "term"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// HandlerError is a handler's failure: its outcome (Retry or Term) and the error envelope it
// sent. Match it with errors.As.
type HandlerError struct {
	// Outcome is OutcomeRetry or OutcomeTerm.
	Outcome Outcome
	// RetryAfter is the delay the handler asked for, with Retry.
	RetryAfter time.Duration
	// Envelope is the error envelope: code, message, retry policy, runtime and handler.
	Envelope ErrorEnvelope
	// EventType is the type of the event that failed.
	EventType string
	// DeadLetter is why the event was dead-lettered, or empty if it was not (a retryable
	// outcome at shutdown).
	DeadLetter deadletter.Reason
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("tandem: %s handler %q failed on %q (%s): %s: %s",
		e.Envelope.Runtime, e.Envelope.Handler, e.EventType, e.Outcome, e.Envelope.Code, e.Envelope.Message)
}

// Retryable reports whether the failure may succeed on another delivery.
func (e *HandlerError) Retryable() bool { return e.Outcome == OutcomeRetry }

// Code is the error envelope's code, e.g. "panic", "decode", "cancelled".
func (e *HandlerError) Code() string { return e.Envelope.Code }
