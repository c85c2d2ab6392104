package envelope

// The error codes tandem itself gives, the tandem-code rule of ffi/envelope.cddl in the
// same order. They are untyped string constants because ErrorEnvelope.Code is a string:
// a handler may give a code of its own, which decoders accept (any non-empty text) and
// tandem passes through unchanged.
const (
	// CodeHandler: the handler failed (an error without a code of its own).
	CodeHandler = "handler"
	// CodePanic: the handler panicked.
	CodePanic = "panic"
	// CodeGoexit: a Go handler's goroutine exited (runtime.Goexit, as t.FailNow does)
	// before the handler returned (retryable).
	CodeGoexit = "goexit"
	// CodeTimeout: the delivery's deadline passed.
	CodeTimeout = "timeout"
	// CodeCancelled: the runtime shut down before the event finished (retryable).
	CodeCancelled = "cancelled"
	// CodeAbandoned: a Rust handler did not stop at shutdown (retryable).
	CodeAbandoned = "abandoned"
	// CodeDecode: the envelope could not be decoded.
	CodeDecode = "decode"
	// CodeNoRoute: no handler is routed for the event's type.
	CodeNoRoute = "no_route"
	// CodeInvalid: the event failed validation (a required attribute missing).
	CodeInvalid = "invalid"
	// CodeOverloaded: refused: the route was full and its policy is Reject.
	CodeOverloaded = "overloaded"
	// CodeShed: dropped: the route was full and its policy is Shed.
	CodeShed = "shed"
	// CodeReplyTooLarge: the reply exceeded the reply slot.
	CodeReplyTooLarge = "reply_too_large"
	// CodeCircuitOpen: refused by a circuit breaker.
	CodeCircuitOpen = "circuit_open"
	// CodeRateLimited: refused by a rate limit.
	CodeRateLimited = "rate_limited"
	// CodeDuplicate: refused by deduplication: seen before.
	CodeDuplicate = "duplicate"
	// CodeProtocol: the runtimes disagreed on the ownership protocol.
	CodeProtocol = "protocol"
	// CodeUnknown: a failure that came without an error envelope.
	CodeUnknown = "unknown"
)

// Codes returns the codes tandem itself gives, in the order ffi/envelope.cddl lists
// them. The slice is new on every call; the caller may keep or change it. Safe for
// concurrent use.
func Codes() []string {
	return []string{
		CodeHandler, CodePanic, CodeGoexit, CodeTimeout, CodeCancelled, CodeAbandoned, CodeDecode,
		CodeNoRoute, CodeInvalid, CodeOverloaded, CodeShed, CodeReplyTooLarge,
		CodeCircuitOpen, CodeRateLimited, CodeDuplicate, CodeProtocol, CodeUnknown,
	}
}
