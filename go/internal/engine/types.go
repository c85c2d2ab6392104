package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// The errors the engine returns; the façade exports them under the same names, so
// errors.Is matches either.
var (
	// ErrOverloaded: the route was full and its policy is Reject.
	ErrOverloaded = errors.New("tandem: overloaded: every request slot is in flight")
	// ErrShed: the route was full and its policy is Shed: the event was dead-lettered.
	ErrShed = fmt.Errorf("%w (shed: dead-lettered)", ErrOverloaded)
	// ErrInvalidRoute: a route pattern or option is malformed, or a route came after Start.
	ErrInvalidRoute = errors.New("tandem: invalid route")
	// ErrClosed: the runtime is not running.
	ErrClosed = errors.New("tandem: runtime is not running")
	// ErrAlreadyStarted: Start was called on a runtime already started.
	ErrAlreadyStarted = errors.New("tandem: runtime already started")
	// ErrNoRoute: no handler is routed for the event's type.
	ErrNoRoute = errors.New("tandem: no route for event type")
	// ErrABIMismatch: the linked library implements another ABI version.
	ErrABIMismatch = errors.New("tandem: ABI version mismatch")
	// ErrLibrary: the Rust library could not be loaded (purego mode).
	ErrLibrary = errors.New("tandem: cannot load the Rust library")
	// ErrEventTooLarge: the encoded event exceeds MaxEventSize; the error is an
	// *EventTooLargeError.
	ErrEventTooLarge = errors.New("tandem: event too large")
	// ErrInvalidConfig: a configuration value is out of range.
	ErrInvalidConfig = errors.New("tandem: invalid config")
	// ErrStart: the runtime failed to start.
	ErrStart = errors.New("tandem: start failed")
	// ErrUnknownRoute: no route was added with the pattern a route change names.
	ErrUnknownRoute = errors.New("tandem: unknown route")
	// ErrUnknownTarget: a route change names a handler that is not registered.
	ErrUnknownTarget = errors.New("tandem: unknown handler")
	// ErrInvalidWeights: a split's weights are empty, add up to 0, or name a target twice.
	ErrInvalidWeights = errors.New("tandem: invalid weights")
	// ErrAcked is what an admission returns for an event it settled itself (a duplicate):
	// the event is acknowledged without running its handler.
	ErrAcked = errors.New("tandem: acknowledged by a policy")
)

// EventTooLargeError is the error intake returns for an event whose envelope is larger than
// MaxEventSize; errors.Is(err, ErrEventTooLarge) holds. A plain value, safe to share.
type EventTooLargeError struct {
	// Size is the envelope's length in bytes: envelope.EncodedEventSize of the event, or
	// the length of an envelope that arrived encoded.
	Size int
	// Max is MaxEventSize.
	Max int
}

// Error says both sizes.
func (e *EventTooLargeError) Error() string {
	return fmt.Sprintf("tandem: event too large: %d bytes encoded, MaxEventSize is %d", e.Size, e.Max)
}

// Is reports whether target is ErrEventTooLarge.
func (e *EventTooLargeError) Is(target error) bool { return target == ErrEventTooLarge }

// Outcome is a handler's verdict on one delivery.
type Outcome uint8

const (
	// OutcomeAck: handled.
	OutcomeAck Outcome = iota
	// OutcomeRetry: failed; deliver again later.
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

// Failure is a failed delivery's outcome: what the handler said, or what the runtime said
// on its behalf. It becomes the user's error once, at the final settlement (Config.ErrorOf).
type Failure struct {
	Outcome    Outcome // OutcomeRetry or OutcomeTerm
	RetryAfter time.Duration
	Envelope   envelope.ErrorEnvelope
	EventType  string
	DeadLetter deadletter.Reason
}

// failure builds a Failure the Go side gives on a handler's behalf.
func failure(o Outcome, eventType, code, message, handler string) *Failure {
	return &Failure{Outcome: o, EventType: eventType, Envelope: envelope.ErrorEnvelope{
		Code: code, Message: message, Runtime: "go", Handler: handler}}
}

// Result is a Go handler's outcome as the engine reads it; the façade builds it from the
// user's Result, describing a failure as an error envelope.
type Result struct {
	Outcome Outcome
	After   time.Duration
	Error   envelope.ErrorEnvelope // Retry, Term
	Reply   []byte                 // Ack
}

// GoHandler runs one delivery of a Go route. ctx ends at the delivery's deadline or when
// the runtime stops.
type GoHandler func(ctx context.Context, ev *envelope.Event) Result

// Admission asks a route's policies whether ev may go to its Rust handler now; on success
// done is called exactly once with the final outcome's error. ErrAcked means the policy
// settled the event itself.
type Admission func(ctx context.Context, ev *envelope.Event) (done func(error), err error)

// Overload is what intake does when a route is full.
type Overload int

const (
	// Block waits for room until the submitter's context ends.
	Block Overload = iota
	// Reject fails at once with ErrOverloaded.
	Reject
	// Shed dead-letters the event and fails with ErrShed.
	Shed
)

// Waiter is told an event's final outcome, once: err is nil for an Ack, else what
// Config.ErrorOf made of the failure. A reply in a slot is lent to the waiter until it
// releases it.
type Waiter interface {
	Settle(err error, reply Reply)
}

// HereSettler is a Waiter that may be settled inside its own Submit: a Call whose event ran
// during the call into the library that Submit made (runHere) and was acknowledged there.
// SettleHere is then called instead of Settle, on the submitter's goroutine before Submit
// returns, so it needs no synchronisation: the submitter reads what it wrote once Submit
// returns.
type HereSettler interface {
	Waiter
	SettleHere(err error, reply Reply)
}

// Redelivering is a Waiter whose event's source redelivers it itself (a broker such as
// JetStream). A retry the judgement allows (the route's schedule, the retry budget and
// the event's deadline) is handed back to it with the delay, instead of scheduled here:
// the delivery then ends in this process, counted as handed back, and Settle is not
// called. The source counts attempts (Event.Attempt) and caps them at LastAttempt (0: no
// cap of its own), past which a retryable failure is dead-lettered here as max_attempts.
type Redelivering interface {
	Waiter
	Redeliver(after time.Duration, err error)
	LastAttempt() uint32
}

// Blocking is a Waiter whose caller blocks until Settle (a Call). A crossing may then run
// the event's Rust handler on the caller's thread until its first wait, task handler or not
// (TANDEM_DELIVERY_WAITED): the thread waits anyway, and a task would cost a worker's wake.
type Blocking interface {
	Waiter
	Blocks()
}

// CallerRunner is a Blocking waiter that runs a Go route's delivery itself, on its own
// goroutine once its Submit returns (a Call to a route with CallerRuns), instead of waiting
// for a worker to: intake hands it the delivery with Hold when the route's pool has room for
// one more worker, and the caller then calls Run on what it holds, once, outside intake.
// The event settles through Settle as on a worker.
type CallerRunner interface {
	Blocking
	Hold(h Held)
}

// Held is a Go delivery its caller runs (CallerRunner). The zero Held holds nothing.
type Held struct {
	p *pool
	d *Delivery
}

// Holds reports whether h holds a delivery.
func (h Held) Holds() bool { return h.d != nil }

// Run runs the held delivery's handler to its outcome on the calling goroutine, as a worker
// of its route's pool would, and settles it. Once per Held.
func (h Held) Run() { h.p.runHeld(h.d) }

// Once is a Waiter that is told the outcome of the event's first delivery, whatever it is: a
// failure, retryable or terminal, settles the event at once as the handler gave it, neither
// redelivered nor dead-lettered. Conformance runs use it: they judge a handler's verdict on
// one delivery, not the route's retry schedule.
type Once interface {
	Waiter
	OneDelivery()
}
