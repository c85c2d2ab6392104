package tandem

import "github.com/tandemrt/tandem/go/tandem/envelope"

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
