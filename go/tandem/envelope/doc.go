// Package envelope is tandem's wire format: the version 1 event envelope and error
// envelope every event and handler failure crosses the Go–Rust boundary in, with the
// codec and the vocabulary of error codes.
//
// An envelope is one definite-length CBOR map with small unsigned-integer keys, defined
// once in ffi/envelope.cddl and explained in docs/envelope.md; the golden vectors in
// ffi/testdata/envelopes.json pin its bytes, and both this package's tests and the Rust
// crate's run them. Encoders write RFC 8949 core deterministic encoding (one value, one
// encoding); decoders accept any well-formed encoding, skip unsigned keys they do not
// know, and report every rejection as a *DecodeError whose Kind is shared with the Rust
// decoder.
//
// Encoders write nothing the decoders reject: Validate (which AppendEvent and
// MarshalEvent apply) refuses, with ErrInvalidEvent naming the field, an event the decoders
// would reject: a required attribute empty, text that is not UTF-8, a time out of range.
//
// # Zero copy and buffers
//
// AppendEvent and AppendErrorEnvelope write into the caller's slice: given room
// (EncodedEventSize says how much), the envelope lands in dst's own array and nothing is
// allocated, which is how the submit path encodes straight into a request slot in shared
// memory. Neither keeps dst or the event after it returns. The decoders copy what they
// return (strings, Extensions, Data), so the input may be reused or released as soon as
// they return: a slot's bytes are never aliased by a decoded Event.
//
// # Concurrency
//
// Every function is safe for concurrent use; the package's only state is immutable after
// init, plus pools of scratch space. Event, ErrorEnvelope and RetryPolicy are plain
// values: the package never retains or mutates one it is given.
package envelope
