package tandem

import (
	"errors"
	"fmt"
	"time"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/engine"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

var (
	// ErrOverloaded: the route is full (every request slot in flight, or a Go route's queue
	// full) and its policy is Reject.
	ErrOverloaded = engine.ErrOverloaded
	// ErrShed: the route was full and its policy is Shed: the event was dead-lettered.
	// errors.Is(err, ErrOverloaded) holds too.
	ErrShed = engine.ErrShed
	// ErrInvalidRoute: a route pattern or option is malformed, or a route was added after
	// Start.
	ErrInvalidRoute = engine.ErrInvalidRoute
	// ErrAbandoned: Call's context ended after its event was accepted: the event still
	// settles (acknowledged, retried or dead-lettered; its reply released), only the caller
	// stopped waiting for it. errors.Is(err, ctx.Err()) holds too. A Call whose context ends
	// before its event is accepted (a Block route with no room) returns ctx's error alone:
	// that event was never submitted.
	ErrAbandoned = errors.New("tandem: stopped waiting for an accepted event's outcome")
	// ErrNoHandlerContext: Emit, InProgress or the package-level Call was given a context
	// that does not come from a Go handler.
	ErrNoHandlerContext = errors.New("tandem: not a handler's context")
	// ErrClosed: the runtime is not running (not started, draining or stopped).
	ErrClosed = engine.ErrClosed
	// ErrAlreadyStarted: Start was called again on a runtime that is starting or running;
	// the runtime is unaffected.
	ErrAlreadyStarted = engine.ErrAlreadyStarted
	// ErrNoRoute: no handler is routed for the event's type.
	ErrNoRoute = engine.ErrNoRoute
	// ErrABIMismatch: the linked library implements another ABI version; rebuild both sides
	// with ./build.sh.
	ErrABIMismatch = engine.ErrABIMismatch
	// ErrLibrary: the Rust library could not be loaded (purego mode): missing file, not a
	// library, or a missing export. The error names the file; errors.As with *LoadError.
	ErrLibrary = engine.ErrLibrary
	// ErrEventTooLarge: the encoded event exceeds Config.MaxEventSize. The error is an
	// *EventTooLargeError, which says both sizes.
	ErrEventTooLarge = engine.ErrEventTooLarge
	// ErrInvalidConfig: a Config value is out of range.
	ErrInvalidConfig = engine.ErrInvalidConfig
	// ErrUnknownRoute: a route change or Route names a pattern no route was added with.
	ErrUnknownRoute = engine.ErrUnknownRoute
	// ErrUnknownTarget: a route change names a handler that is not registered (GoTarget:
	// Handle or Register; RustTarget: a type the library registers).
	ErrUnknownTarget = engine.ErrUnknownTarget
	// ErrInvalidWeights: SetWeights was given no target, a negative weight, weights adding up
	// to 0, or one target twice.
	ErrInvalidWeights = engine.ErrInvalidWeights
	// ErrStart: the runtime failed to start (a handler's init or warm-up failed, or the
	// library refused); the wrapped message names the cause.
	ErrStart = engine.ErrStart
)

// EventTooLargeError is the error Submit, Call and Emit return for an event whose envelope
// is larger than Config.MaxEventSize; errors.Is(err, ErrEventTooLarge) holds. Size is the
// envelope's length in bytes, envelope.EncodedEventSize(ev), and Max is MaxEventSize: an
// event is accepted exactly when Size <= Max (tracing on or off; the trace context tandem
// adds is not counted). A plain value, safe to share.
type EventTooLargeError = engine.EventTooLargeError

// LoadError says which library file failed to load, why, and what to do (purego mode).
type LoadError struct {
	// Path is the library file.
	Path string
	// Symbol is the missing export, when one is missing.
	Symbol string
	// Err is the cause.
	Err error
	// Hint says what to do.
	Hint string
}

// Error says it as the bindings do, whose type this one mirrors.
func (e *LoadError) Error() string {
	return "tandem: " + (&abi.LoadError{Path: e.Path, Symbol: e.Symbol, Err: e.Err, Hint: e.Hint}).Error()
}

// Unwrap returns the cause.
func (e *LoadError) Unwrap() error { return e.Err }

// publicError gives a load failure's details as a *LoadError (the bindings' own type is
// internal); other errors pass unchanged.
func publicError(err error) error {
	var le *abi.LoadError
	if !errors.As(err, &le) {
		return err
	}
	sentinel := ErrLibrary
	if errors.Is(err, ErrABIMismatch) {
		sentinel = ErrABIMismatch
	}
	return fmt.Errorf("%w: %w", sentinel, &LoadError{Path: le.Path, Symbol: le.Symbol, Err: le.Err, Hint: le.Hint})
}

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

// The engine numbers outcomes as the façade does (a compile-time check).
var _ [0]struct{} = [int(OutcomeTerm) - int(engine.OutcomeTerm)]struct{}{}
var _ [0]struct{} = [int(OutcomeRetry) - int(engine.OutcomeRetry)]struct{}{}

func (o Outcome) String() string { return engine.Outcome(o).String() }

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

// Code is the error envelope's code, e.g. "panic", "decode", "cancelled" (the envelope
// package's Code constants).
func (e *HandlerError) Code() string { return e.Envelope.Code }

// handlerError is the error a submitter and a route's policies see of a final failure.
func handlerError(f *engine.Failure) error {
	return &HandlerError{Outcome: Outcome(f.Outcome), RetryAfter: f.RetryAfter, Envelope: f.Envelope,
		EventType: f.EventType, DeadLetter: f.DeadLetter}
}
