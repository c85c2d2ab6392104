// Package cborx holds the CBOR settings shared by tandem's two binary formats, the
// envelope (package envelope) and the dead-letter file (package deadletter), so both
// encode and judge bytes the same way. Everything in it is immutable after init and
// safe for concurrent use.
package cborx

import (
	"errors"
	"io"
	"math"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// MaxDepth is the deepest nesting of arrays, maps and tags a decoder accepts; the
// top-level map is level 1.
const MaxDepth = 16

var (
	// Enc is RFC 8949 §4.2.1 core deterministic encoding: shortest heads, definite
	// lengths, map keys sorted bytewise by their encodings.
	Enc cbor.EncMode
	// Dec is the strict decoding mode. Every rule of ffi/envelope.cddl that fxamacker
	// can express is set here; the envelope decoder checks the rest by hand.
	Dec cbor.DecMode
)

func init() {
	var err error
	if Enc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic("tandem: cbor EncMode: " + err.Error())
	}
	Dec, err = cbor.DecOptions{
		// No key repeats in any map fxamacker decodes.
		DupMapKey: cbor.DupMapKeyEnforcedAPF,
		// Indefinite-length items are refused anywhere, skipped values included.
		IndefLength: cbor.IndefLengthForbidden,
		// fxamacker counts every array and map but only the second and later tags of a
		// chain, so this bound is looser than ours by the tags; the envelope decoder
		// counts those itself. It still stops an attacker's deep input before our walk.
		MaxNestedLevels: MaxDepth,
		// The real bound on a count is the input's length: a count beyond it is reported
		// as truncated, whatever its size.
		MaxArrayElements: math.MaxInt32,
		MaxMapPairs:      math.MaxInt32,
		// Text that is decoded must be UTF-8 (text inside skipped values is never read,
		// and not checked).
		UTF8: cbor.UTF8RejectInvalid,
		// A byte string is not text: decoding one into a string field is wrong_type.
		ByteStringToString: cbor.ByteStringToStringForbidden,
	}.DecMode()
	if err != nil {
		panic("tandem: cbor DecMode: " + err.Error())
	}
}

// The decode error kinds Kind returns; they are the envelope's shared vocabulary
// (envelope.DecodeErrorKind), which a test in package envelope holds them to.
const (
	KindTruncated        = "truncated"
	KindTrailingBytes    = "trailing_bytes"
	KindIndefiniteLength = "indefinite_length"
	KindTooDeep          = "too_deep"
	KindDuplicateKey     = "duplicate_key"
	KindWrongType        = "wrong_type"
	KindInvalidUTF8      = "invalid_utf8"
	KindMalformed        = "malformed"
)

// Kind maps an error of fxamacker/cbor onto the shared decode error vocabulary.
func Kind(err error) string {
	var (
		extraneous *cbor.ExtraneousDataError
		indef      *cbor.IndefiniteLengthError
		nested     *cbor.MaxNestedLevelError
		pairs      *cbor.MaxMapPairsError
		elems      *cbor.MaxArrayElementsError
		dup        *cbor.DupMapKeyError
		typ        *cbor.UnmarshalTypeError
		sem        *cbor.SemanticError
	)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return KindTruncated
	case errors.As(err, &extraneous):
		return KindTrailingBytes
	case errors.As(err, &indef):
		return KindIndefiniteLength
	case errors.As(err, &nested):
		return KindTooDeep
	case errors.As(err, &pairs), errors.As(err, &elems):
		// A count above MaxInt32 cannot be satisfied by any input we accept.
		return KindTruncated
	case errors.As(err, &dup):
		return KindDuplicateKey
	case errors.As(err, &typ):
		return KindWrongType
	case errors.As(err, &sem) && strings.Contains(sem.Error(), "UTF-8"):
		return KindInvalidUTF8
	case strings.Contains(err.Error(), "integer overflow"):
		// fxamacker reports a string or container length that does not fit an int as a
		// plain error; such a length always runs past the end of the input.
		return KindTruncated
	}
	return KindMalformed
}
