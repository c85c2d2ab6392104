package tandem

import "github.com/tandemrt/tandem/go/tandem/envelope"

// Event is one event: the CloudEvents 1.0 context attributes, tandem's delivery attributes,
// an extensions map and opaque data. The envelope package encodes and decodes it.
type Event = envelope.Event

// ErrorEnvelope is a handler failure as it crosses the boundary (see the envelope package).
type ErrorEnvelope = envelope.ErrorEnvelope

// RetryPolicy is the retry advice an error envelope may carry (see the envelope package).
type RetryPolicy = envelope.RetryPolicy
