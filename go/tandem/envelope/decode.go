package envelope

import (
	"fmt"
	"time"

	"github.com/tandemrt/tandem/go/internal/cborx"
)

// Decoding: cborx.Decode checks the input against every rule of ffi/envelope.cddl
// (fxamacker's Wellformed with strict DecOptions, then one walk for the rules DecOptions
// cannot express) and hands each known value to fxamacker to decode into its field.

// DecodeErrorKind names why a decoder rejected an envelope. The names are shared with
// the Rust decoder and the golden vectors in ffi/testdata.
type DecodeErrorKind string

// The decode error kinds. When an input has several defects, a well-formedness error
// (truncated, malformed, indefinite_length, too_deep, trailing_bytes) is reported
// first, then not_map, then unsupported_version, then a content error, missing_field last.
const (
	// KindTruncated means the input ends inside an item.
	KindTruncated DecodeErrorKind = "truncated"
	// KindTrailingBytes means bytes follow the top-level item.
	KindTrailingBytes DecodeErrorKind = "trailing_bytes"
	// KindNotMap means the top-level item is not a map.
	KindNotMap DecodeErrorKind = "not_map"
	// KindIndefiniteLength means an indefinite-length item appears anywhere.
	KindIndefiniteLength DecodeErrorKind = "indefinite_length"
	// KindDuplicateKey means a key repeats in the top-level, extensions or retry map.
	KindDuplicateKey DecodeErrorKind = "duplicate_key"
	// KindMissingField means a required field is absent or empty.
	KindMissingField DecodeErrorKind = "missing_field"
	// KindWrongType means a known key holds the wrong type or an out-of-range value, or
	// a top-level key is not an unsigned integer.
	KindWrongType DecodeErrorKind = "wrong_type"
	// KindUnsupportedVersion means key 0 holds a version other than 1.
	KindUnsupportedVersion DecodeErrorKind = "unsupported_version"
	// KindInvalidUTF8 means a text string the envelope interprets is not UTF-8.
	KindInvalidUTF8 DecodeErrorKind = "invalid_utf8"
	// KindTooDeep means arrays, maps and tags nest deeper than 16 levels.
	KindTooDeep DecodeErrorKind = "too_deep"
	// KindMalformed means the input is not well-formed CBOR for another reason.
	KindMalformed DecodeErrorKind = "malformed"
)

// DecodeError is the error DecodeEvent and DecodeErrorEnvelope return. Kind is the
// reason from the shared vocabulary; Err, when set, is the underlying error (often one
// of fxamacker/cbor's). Use errors.As to get at it. Like every error of this package it
// is a plain value, safe to share once returned.
type DecodeError struct {
	Kind DecodeErrorKind
	Err  error
}

// Error returns "tandem: envelope: <kind>" followed by the underlying error, if any.
func (e *DecodeError) Error() string {
	if e.Err == nil {
		return "tandem: envelope: " + string(e.Kind)
	}
	return "tandem: envelope: " + string(e.Kind) + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(kind DecodeErrorKind, format string, args ...any) *DecodeError {
	return &DecodeError{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// decodeError turns an error of cborx.Decode into a *DecodeError.
func decodeError(err error) *DecodeError {
	e := cborx.AsError(err)
	return &DecodeError{Kind: DecodeErrorKind(e.Kind), Err: e.Err}
}

var eventShapes = [...]cborx.Shape{
	keyV: cborx.Uint, keyID: cborx.Text, keySource: cborx.Text, keyType: cborx.Text,
	keySpecVersion: cborx.Text, keyTime: cborx.Int, keySubject: cborx.Text,
	keyDataContentType: cborx.Text, keyDataSchema: cborx.Text, keyCorrelationID: cborx.Text,
	keyCausationID: cborx.Text, keyTraceParent: cborx.Text, keyTraceState: cborx.Text,
	keyAttempt: cborx.Uint, keyDeadline: cborx.Int, keyIdempotencyKey: cborx.Text,
	keyPartitionKey: cborx.Text, keyExtensions: cborx.TextMap, keyData: cborx.Bytes,
}

var errorShapes = [...]cborx.Shape{
	errKeyV: cborx.Uint, errKeyCode: cborx.Text, errKeyMessage: cborx.Text,
	errKeyRetry: cborx.UintMap, errKeyRuntime: cborx.Text, errKeyHandler: cborx.Text,
}

var retryShapes = [...]cborx.Shape{
	retryKeyAttempts: cborx.Uint, retryKeyBackoff: cborx.Uint, retryKeyNotBefore: cborx.Int,
}

// DecodeEvent decodes an event envelope. It accepts any well-formed encoding, canonical
// or not, ignores unknown unsigned keys, and reports every rejection as a *DecodeError.
// Strings and Data are copies; b is not retained. Optional text fields present but
// empty decode as absent. Times are returned in UTC. Safe for concurrent use.
func DecodeEvent(b []byte) (*Event, error) {
	ev := &Event{}
	var times [2]int64 // time, deadline
	present, err := cborx.Decode(b, eventShapes[:], func(key uint64, val []byte) error {
		var dst any
		switch key {
		case keyID:
			dst = &ev.ID
		case keySource:
			dst = &ev.Source
		case keyType:
			dst = &ev.Type
		case keySpecVersion:
			dst = &ev.SpecVersion
		case keyTime:
			dst = &times[0]
		case keySubject:
			dst = &ev.Subject
		case keyDataContentType:
			dst = &ev.DataContentType
		case keyDataSchema:
			dst = &ev.DataSchema
		case keyCorrelationID:
			dst = &ev.CorrelationID
		case keyCausationID:
			dst = &ev.CausationID
		case keyTraceParent:
			dst = &ev.TraceParent
		case keyTraceState:
			dst = &ev.TraceState
		case keyAttempt:
			dst = &ev.Attempt
		case keyDeadline:
			dst = &times[1]
		case keyIdempotencyKey:
			dst = &ev.IdempotencyKey
		case keyPartitionKey:
			dst = &ev.PartitionKey
		case keyExtensions:
			dst = &ev.Extensions
		case keyData:
			dst = &ev.Data
		}
		return cborx.Dec.Unmarshal(val, dst)
	})
	if err != nil {
		return nil, decodeError(err)
	}
	for _, f := range [...]struct {
		name, value string
	}{{"id", ev.ID}, {"source", ev.Source}, {"type", ev.Type}, {"specversion", ev.SpecVersion}} {
		if f.value == "" {
			return nil, decodeErr(KindMissingField, "%s", f.name)
		}
	}
	if present&(1<<keyTime) != 0 {
		ev.Time = time.Unix(0, times[0]).UTC()
	}
	if present&(1<<keyDeadline) != 0 {
		ev.Deadline = time.Unix(0, times[1]).UTC()
	}
	if len(ev.Extensions) == 0 {
		ev.Extensions = nil
	}
	if len(ev.Data) == 0 {
		ev.Data = nil
	}
	return ev, nil
}

// DecodeErrorEnvelope decodes an error envelope, with the same rules as DecodeEvent: a
// backoff_ns above math.MaxInt64 or attempts above math.MaxUint32 is wrong_type. A
// retry map that is present but empty decodes as a non-nil, zero RetryPolicy. Safe for
// concurrent use.
func DecodeErrorEnvelope(b []byte) (*ErrorEnvelope, error) {
	e := &ErrorEnvelope{}
	_, err := cborx.Decode(b, errorShapes[:], func(key uint64, val []byte) error {
		var dst *string
		switch key {
		case errKeyCode:
			dst = &e.Code
		case errKeyMessage:
			dst = &e.Message
		case errKeyRetry:
			e.Retry = &RetryPolicy{}
			return decodeRetry(val, e.Retry)
		case errKeyRuntime:
			dst = &e.Runtime
		case errKeyHandler:
			dst = &e.Handler
		}
		return cborx.Dec.Unmarshal(val, dst)
	})
	if err != nil {
		return nil, decodeError(err)
	}
	if e.Code == "" {
		return nil, decodeErr(KindMissingField, "code")
	}
	return e, nil
}

// decodeRetry decodes the retry map (level 2) into r.
func decodeRetry(val []byte, r *RetryPolicy) error {
	_, err := cborx.DecodeNested(val, 2, retryShapes[:], func(key uint64, val []byte) error {
		if key == retryKeyAttempts {
			return cborx.Dec.Unmarshal(val, &r.Attempts)
		}
		// backoff_ns and not_before are int64: Go holds the backoff in a time.Duration.
		var ns int64
		if err := cborx.Dec.Unmarshal(val, &ns); err != nil {
			return err
		}
		if key == retryKeyBackoff {
			r.Backoff = time.Duration(ns)
		} else {
			r.NotBefore = time.Unix(0, ns).UTC()
		}
		return nil
	})
	return err
}
