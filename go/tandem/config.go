package tandem

import (
	"fmt"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/internal/engine"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// OverloadPolicy says what Submit does when every request slot is in flight.
type OverloadPolicy int

const (
	// Block waits for a free slot until the submit context ends (the default).
	Block OverloadPolicy = iota
	// Reject fails at once with ErrOverloaded.
	Reject
	// Shed drops the event with a dead-letter record (reason "shed") and fails Submit with
	// ErrShed (which is ErrOverloaded): never silently.
	Shed
)

func (p OverloadPolicy) String() string {
	switch p {
	case Block:
		return "block"
	case Reject:
		return "reject"
	case Shed:
		return "shed"
	}
	return fmt.Sprintf("OverloadPolicy(%d)", int(p))
}

// Config sizes a Runtime. The zero value is usable: every zero field takes its default.
type Config struct {
	// Workers is the number of tokio worker threads (default 2).
	Workers int
	// MaxInFlight is the number of request slots: events submitted and not yet completed
	// (default 1024). When all are taken, Overload applies.
	MaxInFlight int
	// MaxEventSize is the largest envelope of an event to a Rust handler, in bytes: 256 B to
	// 64 MiB (default 64 KiB; New refuses other values with ErrInvalidConfig). Every request
	// slot holds one such envelope, so the request slots take MaxInFlight × MaxEventSize of
	// shared memory. The bound is inclusive and measured by envelope.EncodedEventSize of the
	// event as submitted (the trace context tandem adds is not counted): Submit, Call and
	// Emit refuse a larger event with an *EventTooLargeError (ErrEventTooLarge). A Go
	// route's event is copied, never encoded, and is not bounded by it.
	MaxEventSize int
	// ReplySlots is the number of reply slots Rust writes replies and error envelopes into
	// (default MaxInFlight). A Reply holds one until Release.
	ReplySlots int
	// MaxReplySize is the largest reply of a Rust handler in bytes: 256 B to 64 MiB
	// (default 64 KiB; New refuses other values with ErrInvalidConfig). A larger reply
	// completes as a terminal error with code "reply_too_large".
	MaxReplySize int
	// SpinWindow is how long each side busy-polls an empty ring before it parks on its
	// eventfd (default 50µs; negative: park at once). Within the window a round trip costs
	// no syscall; a wake from park costs tens of microseconds.
	SpinWindow time.Duration
	// Overload is the policy when all request slots are in flight (default Block).
	Overload OverloadPolicy
	// RustTypes lists the event types routed to Rust handlers. Empty means every type the
	// linked library registers; a listed type the library lacks fails New with ErrNoRoute.
	RustTypes []string
	// Library is the path of libtandem_native.so in the purego link mode (CGO_ENABLED=0 or
	// -tags tandem_purego). Empty means $TANDEM_LIB, else libtandem_native.so beside the
	// executable. Runtimes naming the same path share one library; a runtime naming another
	// file loads it beside the first (the next version of the handlers: see Forward). The
	// cgo mode links the library into the binary and ignores this.
	Library string
	// Retry is the retry schedule for events whose handler asks for a retry: attempts,
	// exponential backoff and jitter. A handler's own advice (the error envelope's retry
	// policy, Retry(after)) refines it. Zero fields take Backoff's defaults.
	Retry retry.Backoff
	// RetryBudget bounds retries to a share of first deliveries, so a failing dependency
	// cannot cause a retry storm (default retry.NewBudget(10s, 10, 0.2)). An event refused a
	// retry by the budget is dead-lettered.
	RetryBudget *retry.Budget
	// DeadLetters receives events that are Term'd, run out of attempts or retry budget, fail
	// to decode, or have no route, with the reason, the error envelope, the attempts and the
	// original bytes. Nil logs each dead letter at error level (nothing is dropped silently);
	// deadletter.OpenFile gives the durable default the tandem binary uses.
	DeadLetters deadletter.Sink
	// MeterProvider receives tandem's metrics (docs/observability.md): events by route and runtime,
	// handler duration and end-to-end latency, ring occupancy, wake-ups, buffers, workers,
	// breakers. Nil records nothing.
	MeterProvider metric.MeterProvider
	// TracerProvider traces each event through both runtimes ("publish {type}" and
	// "process {type}" spans; see tracing.go). Nil traces nothing, at almost no cost.
	TracerProvider trace.TracerProvider
	// Logger receives the runtime's log lines (default: none).
	Logger *zap.Logger
}

const (
	defaultWorkers     = 2
	defaultMaxInFlight = 1024
	defaultMaxSize     = 64 << 10
	defaultSpinWindow  = 50 * time.Microsecond
)

func (c Config) withDefaults() (Config, error) {
	if c.Workers == 0 {
		c.Workers = defaultWorkers
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = defaultMaxInFlight
	}
	if c.MaxEventSize == 0 {
		c.MaxEventSize = defaultMaxSize
	}
	if c.ReplySlots == 0 {
		c.ReplySlots = c.MaxInFlight
	}
	if c.MaxReplySize == 0 {
		c.MaxReplySize = defaultMaxSize
	}
	if c.SpinWindow == 0 {
		c.SpinWindow = defaultSpinWindow
	}
	if c.SpinWindow < 0 {
		c.SpinWindow = 0
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	switch {
	case c.Workers < 0 || c.Workers > 256:
		return c, fmt.Errorf("%w: Workers must be 1..256, got %d", ErrInvalidConfig, c.Workers)
	case c.MaxInFlight < 0 || c.MaxInFlight > 1<<20:
		return c, fmt.Errorf("%w: MaxInFlight must be 1..2^20, got %d", ErrInvalidConfig, c.MaxInFlight)
	case c.ReplySlots < 0 || c.ReplySlots > 1<<20:
		return c, fmt.Errorf("%w: ReplySlots must be 1..2^20, got %d", ErrInvalidConfig, c.ReplySlots)
	case c.MaxEventSize < 256 || c.MaxEventSize > 64<<20:
		return c, fmt.Errorf("%w: MaxEventSize must be 256 B..64 MiB, got %d", ErrInvalidConfig, c.MaxEventSize)
	case c.MaxReplySize < 256 || c.MaxReplySize > 64<<20:
		return c, fmt.Errorf("%w: MaxReplySize must be 256 B..64 MiB, got %d", ErrInvalidConfig, c.MaxReplySize)
	case c.Overload != Block && c.Overload != Reject && c.Overload != Shed:
		return c, fmt.Errorf("%w: unknown Overload policy %d", ErrInvalidConfig, int(c.Overload))
	}
	return c, nil
}

// engine is the configuration the engine runs with (defaults filled in).
func (c Config) engine() engine.Config {
	return engine.Config{
		Workers: c.Workers, MaxInFlight: c.MaxInFlight, MaxEventSize: c.MaxEventSize,
		ReplySlots: c.ReplySlots, MaxReplySize: c.MaxReplySize, SpinWindow: c.SpinWindow,
		Overload: engine.Overload(c.Overload), RustTypes: c.RustTypes, Library: c.Library,
		Retry: c.Retry, RetryBudget: c.RetryBudget, DeadLetters: c.DeadLetters,
		MeterProvider: c.MeterProvider, TracerProvider: c.TracerProvider, Logger: c.Logger,
		ErrorOf: handlerError,
	}
}
