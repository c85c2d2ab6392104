package tandem

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// This file is the version 1 event envelope (ffi/envelope.cddl, docs/envelope.md).
//
// Two encoders produce the same canonical bytes: AppendEvent, a hand-written append
// encoder for the submit hot path (no reflection, zero allocations), and MarshalEvent,
// which goes through fxamacker/cbor and serves as its reference; the tests hold them
// byte-for-byte equal. Decoding goes through fxamacker/cbor plus a shape pass for the
// rules the library is deliberately lenient about. Every function in this file is safe
// for concurrent use: the only package state is immutable after init.

// envelopeVersion is the major version every v1 envelope carries under key 0.
const envelopeVersion = 1

// maxDepth is the deepest nesting of arrays, maps and tags a decoder accepts; the
// top-level map is level 1.
const maxDepth = 16

// Event envelope keys.
const (
	keyV = iota
	keyID
	keySource
	keyType
	keySpecVersion
	keyTime
	keySubject
	keyDataContentType
	keyDataSchema
	keyCorrelationID
	keyCausationID
	keyTraceParent
	keyTraceState
	keyAttempt
	keyDeadline
	keyIdempotencyKey
	keyPartitionKey
	keyExtensions
	keyData
)

// Error envelope keys, and the keys of its retry map.
const (
	errKeyV = iota
	errKeyCode
	errKeyMessage
	errKeyRetry
	errKeyRuntime
	errKeyHandler
)

const (
	retryKeyAttempts = iota
	retryKeyBackoff
	retryKeyNotBefore
)

// defaultSpecVersion is what an empty Event.SpecVersion encodes as.
const defaultSpecVersion = "1.0"

// CBOR major types, already shifted into the initial byte.
const (
	majorUint   = 0 << 5
	majorNegInt = 1 << 5
	majorBytes  = 2 << 5
	majorText   = 3 << 5
	majorArray  = 4 << 5
	majorMap    = 5 << 5
	majorTag    = 6 << 5
	majorSimple = 7 << 5
)

var (
	minUnixNano = time.Unix(0, math.MinInt64)
	maxUnixNano = time.Unix(0, math.MaxInt64)
)

// wireEvent is the envelope as fxamacker/cbor sees it, for MarshalEvent and DecodeEvent.
type wireEvent struct {
	V               uint64            `cbor:"0,keyasint"`
	ID              string            `cbor:"1,keyasint"`
	Source          string            `cbor:"2,keyasint"`
	Type            string            `cbor:"3,keyasint"`
	SpecVersion     string            `cbor:"4,keyasint"`
	Time            *int64            `cbor:"5,keyasint,omitempty"`
	Subject         string            `cbor:"6,keyasint,omitempty"`
	DataContentType string            `cbor:"7,keyasint,omitempty"`
	DataSchema      string            `cbor:"8,keyasint,omitempty"`
	CorrelationID   string            `cbor:"9,keyasint,omitempty"`
	CausationID     string            `cbor:"10,keyasint,omitempty"`
	TraceParent     string            `cbor:"11,keyasint,omitempty"`
	TraceState      string            `cbor:"12,keyasint,omitempty"`
	Attempt         uint32            `cbor:"13,keyasint,omitempty"`
	Deadline        *int64            `cbor:"14,keyasint,omitempty"`
	IdempotencyKey  string            `cbor:"15,keyasint,omitempty"`
	PartitionKey    string            `cbor:"16,keyasint,omitempty"`
	Extensions      map[string]string `cbor:"17,keyasint,omitempty"`
	Data            []byte            `cbor:"18,keyasint,omitempty"`
}

// wireError is the error envelope as fxamacker/cbor sees it.
type wireError struct {
	V       uint64     `cbor:"0,keyasint"`
	Code    string     `cbor:"1,keyasint"`
	Message string     `cbor:"2,keyasint,omitempty"`
	Retry   *wireRetry `cbor:"3,keyasint,omitempty"`
	Runtime string     `cbor:"4,keyasint,omitempty"`
	Handler string     `cbor:"5,keyasint,omitempty"`
}

type wireRetry struct {
	Attempts  uint32 `cbor:"0,keyasint,omitempty"`
	BackoffNS int64  `cbor:"1,keyasint,omitempty"`
	NotBefore *int64 `cbor:"2,keyasint,omitempty"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic("tandem: envelope EncMode: " + err.Error())
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:       cbor.DupMapKeyEnforcedAPF,
		IndefLength:     cbor.IndefLengthForbidden,
		MaxNestedLevels: maxDepth,
		// The real bound is the input's length; a count beyond it is reported as truncated.
		MaxArrayElements: math.MaxInt32,
		MaxMapPairs:      math.MaxInt32,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic("tandem: envelope DecMode: " + err.Error())
	}
}

// DecodeErrorKind names why a decoder rejected an envelope. The names are shared with
// the Rust decoder and the golden vectors in ffi/testdata.
type DecodeErrorKind string

// The decode error kinds. Well-formedness is checked over the whole input first
// (truncated, malformed, indefinite_length, too_deep, trailing_bytes), then the shape
// and the content.
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
// of fxamacker/cbor's). Use errors.As to get at it.
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

// classify maps an fxamacker/cbor error onto the shared vocabulary.
func classify(err error) *DecodeError {
	var (
		extraneous *cbor.ExtraneousDataError
		indef      *cbor.IndefiniteLengthError
		nested     *cbor.MaxNestedLevelError
		pairs      *cbor.MaxMapPairsError
		elems      *cbor.MaxArrayElementsError
		dup        *cbor.DupMapKeyError
		typ        *cbor.UnmarshalTypeError
		sem        *cbor.SemanticError
		syn        *cbor.SyntaxError
	)
	kind := KindMalformed
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		kind = KindTruncated
	case errors.As(err, &extraneous):
		kind = KindTrailingBytes
	case errors.As(err, &indef):
		kind = KindIndefiniteLength
	case errors.As(err, &nested):
		kind = KindTooDeep
	case errors.As(err, &pairs), errors.As(err, &elems):
		// A count above MaxInt32 cannot be satisfied by any input we accept.
		kind = KindTruncated
	case errors.As(err, &dup):
		kind = KindDuplicateKey
	case errors.As(err, &typ):
		kind = KindWrongType
	case errors.As(err, &sem):
		if strings.Contains(sem.Error(), "UTF-8") {
			kind = KindInvalidUTF8
		}
	case errors.As(err, &syn):
		kind = KindMalformed
	case strings.Contains(err.Error(), "integer overflow"):
		// fxamacker reports a string or container length that does not fit an int as a
		// plain error; such a length always runs past the end of the input.
		kind = KindTruncated
	}
	return &DecodeError{Kind: kind, Err: err}
}

// ---------------------------------------------------------------------------
// Hand-written canonical encoder.

// appendHead appends a shortest-form CBOR head.
func appendHead(dst []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(dst, major|byte(n))
	case n <= math.MaxUint8:
		return append(dst, major|24, byte(n))
	case n <= math.MaxUint16:
		return append(dst, major|25, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return append(dst, major|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(dst, major|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func headSize(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= math.MaxUint8:
		return 2
	case n <= math.MaxUint16:
		return 3
	case n <= math.MaxUint32:
		return 5
	default:
		return 9
	}
}

func appendInt(dst []byte, n int64) []byte {
	if n >= 0 {
		return appendHead(dst, majorUint, uint64(n))
	}
	return appendHead(dst, majorNegInt, uint64(^n))
}

func intSize(n int64) int {
	if n >= 0 {
		return headSize(uint64(n))
	}
	return headSize(uint64(^n))
}

func appendText(dst []byte, s string) []byte {
	dst = appendHead(dst, majorText, uint64(len(s)))
	return append(dst, s...)
}

func textSize(s string) int { return headSize(uint64(len(s))) + len(s) }

// appendTextField appends key and value when the value is present (non-empty).
func appendTextField(dst []byte, key uint64, s string) []byte {
	if s == "" {
		return dst
	}
	return appendText(append(dst, byte(key)), s)
}

func textFieldSize(s string) int {
	if s == "" {
		return 0
	}
	return 1 + textSize(s)
}

func timeFieldSize(t time.Time) int {
	if t.IsZero() {
		return 0
	}
	return 1 + intSize(t.UnixNano())
}

// extensionLess orders extension keys canonically: bytewise by their encodings, which
// for text strings is shorter first, then bytewise.
func extensionLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

func extensionCmp(a, b string) int {
	switch {
	case a == b:
		return 0
	case extensionLess(a, b):
		return -1
	default:
		return 1
	}
}

// sortedKeysOnStack is how many extension keys AppendEvent sorts without allocating.
const sortedKeysOnStack = 16

func appendExtensions(dst []byte, ext map[string]string) []byte {
	dst = appendHead(append(dst, keyExtensions), majorMap, uint64(len(ext)))
	var stack [sortedKeysOnStack]string
	var keys []string
	if len(ext) <= len(stack) {
		keys = stack[:0]
		for k := range ext {
			// Insertion sort: a handful of keys, no allocation.
			i := len(keys)
			keys = keys[:i+1]
			for ; i > 0 && extensionLess(k, keys[i-1]); i-- {
				keys[i] = keys[i-1]
			}
			keys[i] = k
		}
	} else {
		keys = make([]string, 0, len(ext))
		for k := range ext {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, extensionCmp)
	}
	for _, k := range keys {
		dst = appendText(dst, k)
		dst = appendText(dst, ext[k])
	}
	return dst
}

func validTime(t time.Time) bool {
	return t.IsZero() || (!t.Before(minUnixNano) && !t.After(maxUnixNano))
}

func validateEvent(ev *Event) error {
	switch {
	case ev == nil:
		return fmt.Errorf("%w: nil", ErrInvalidEvent)
	case ev.ID == "":
		return fmt.Errorf("%w: ID is empty", ErrInvalidEvent)
	case ev.Source == "":
		return fmt.Errorf("%w: Source is empty", ErrInvalidEvent)
	case ev.Type == "":
		return fmt.Errorf("%w: Type is empty", ErrInvalidEvent)
	case !validTime(ev.Time):
		return fmt.Errorf("%w: Time %v is outside int64 Unix nanoseconds", ErrInvalidEvent, ev.Time)
	case !validTime(ev.Deadline):
		return fmt.Errorf("%w: Deadline %v is outside int64 Unix nanoseconds", ErrInvalidEvent, ev.Deadline)
	}
	return nil
}

func eventFieldCount(ev *Event) uint64 {
	n := uint64(5) // v, id, source, type, specversion
	for _, s := range [...]string{ev.Subject, ev.DataContentType, ev.DataSchema, ev.CorrelationID,
		ev.CausationID, ev.TraceParent, ev.TraceState, ev.IdempotencyKey, ev.PartitionKey} {
		if s != "" {
			n++
		}
	}
	if !ev.Time.IsZero() {
		n++
	}
	if ev.Attempt != 0 {
		n++
	}
	if !ev.Deadline.IsZero() {
		n++
	}
	if len(ev.Extensions) != 0 {
		n++
	}
	if len(ev.Data) != 0 {
		n++
	}
	return n
}

func specVersion(ev *Event) string {
	if ev.SpecVersion == "" {
		return defaultSpecVersion
	}
	return ev.SpecVersion
}

// AppendEvent appends the canonical envelope of ev to dst and returns the extended
// slice. It validates ev before writing anything: on error (ErrInvalidEvent, wrapped) dst
// is returned unchanged. It does not allocate when dst has room for
// EncodedEventSize(ev) more bytes and ev has at most 16 extensions. Safe for concurrent
// use.
func AppendEvent(dst []byte, ev *Event) ([]byte, error) {
	if err := validateEvent(ev); err != nil {
		return dst, err
	}
	dst = appendHead(dst, majorMap, eventFieldCount(ev))
	dst = append(dst, keyV, envelopeVersion)
	dst = appendText(append(dst, keyID), ev.ID)
	dst = appendText(append(dst, keySource), ev.Source)
	dst = appendText(append(dst, keyType), ev.Type)
	dst = appendText(append(dst, keySpecVersion), specVersion(ev))
	if !ev.Time.IsZero() {
		dst = appendInt(append(dst, keyTime), ev.Time.UnixNano())
	}
	dst = appendTextField(dst, keySubject, ev.Subject)
	dst = appendTextField(dst, keyDataContentType, ev.DataContentType)
	dst = appendTextField(dst, keyDataSchema, ev.DataSchema)
	dst = appendTextField(dst, keyCorrelationID, ev.CorrelationID)
	dst = appendTextField(dst, keyCausationID, ev.CausationID)
	dst = appendTextField(dst, keyTraceParent, ev.TraceParent)
	dst = appendTextField(dst, keyTraceState, ev.TraceState)
	if ev.Attempt != 0 {
		dst = appendHead(append(dst, keyAttempt), majorUint, uint64(ev.Attempt))
	}
	if !ev.Deadline.IsZero() {
		dst = appendInt(append(dst, keyDeadline), ev.Deadline.UnixNano())
	}
	dst = appendTextField(dst, keyIdempotencyKey, ev.IdempotencyKey)
	dst = appendTextField(dst, keyPartitionKey, ev.PartitionKey)
	if len(ev.Extensions) != 0 {
		dst = appendExtensions(dst, ev.Extensions)
	}
	if len(ev.Data) != 0 {
		dst = appendHead(append(dst, keyData), majorBytes, uint64(len(ev.Data)))
		dst = append(dst, ev.Data...)
	}
	return dst, nil
}

// EncodedEventSize returns the exact number of bytes AppendEvent appends for ev, so a
// caller can check that a buffer (a ring slot) has room before encoding. For an ev that
// AppendEvent rejects the result is meaningless. It does not allocate. Safe for
// concurrent use.
func EncodedEventSize(ev *Event) int {
	n := headSize(eventFieldCount(ev)) + 2 // map head, key 0, version 1
	n += 1 + textSize(ev.ID)
	n += 1 + textSize(ev.Source)
	n += 1 + textSize(ev.Type)
	n += 1 + textSize(specVersion(ev))
	n += timeFieldSize(ev.Time)
	n += textFieldSize(ev.Subject) + textFieldSize(ev.DataContentType) + textFieldSize(ev.DataSchema)
	n += textFieldSize(ev.CorrelationID) + textFieldSize(ev.CausationID)
	n += textFieldSize(ev.TraceParent) + textFieldSize(ev.TraceState)
	if ev.Attempt != 0 {
		n += 1 + headSize(uint64(ev.Attempt))
	}
	n += timeFieldSize(ev.Deadline)
	n += textFieldSize(ev.IdempotencyKey) + textFieldSize(ev.PartitionKey)
	if len(ev.Extensions) != 0 {
		n += 1 + headSize(uint64(len(ev.Extensions)))
		for k, v := range ev.Extensions {
			n += textSize(k) + textSize(v)
		}
	}
	if len(ev.Data) != 0 {
		n += 1 + headSize(uint64(len(ev.Data))) + len(ev.Data)
	}
	return n
}

func optionalUnixNano(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

// MarshalEvent returns the canonical envelope of ev, encoded by fxamacker/cbor with
// core deterministic encoding. It produces exactly the bytes AppendEvent does; prefer
// AppendEvent on hot paths. Safe for concurrent use.
func MarshalEvent(ev *Event) ([]byte, error) {
	if err := validateEvent(ev); err != nil {
		return nil, err
	}
	w := wireEvent{
		V:               envelopeVersion,
		ID:              ev.ID,
		Source:          ev.Source,
		Type:            ev.Type,
		SpecVersion:     specVersion(ev),
		Time:            optionalUnixNano(ev.Time),
		Subject:         ev.Subject,
		DataContentType: ev.DataContentType,
		DataSchema:      ev.DataSchema,
		CorrelationID:   ev.CorrelationID,
		CausationID:     ev.CausationID,
		TraceParent:     ev.TraceParent,
		TraceState:      ev.TraceState,
		Attempt:         ev.Attempt,
		Deadline:        optionalUnixNano(ev.Deadline),
		IdempotencyKey:  ev.IdempotencyKey,
		PartitionKey:    ev.PartitionKey,
		Extensions:      ev.Extensions,
		Data:            ev.Data,
	}
	return encMode.Marshal(&w)
}

// ---------------------------------------------------------------------------
// Decoding.

// fieldShape is the CBOR type a known key must hold.
type fieldShape uint8

const (
	shapeUint    fieldShape = iota + 1 // major type 0
	shapeInt                           // major type 0 or 1
	shapeText                          // major type 3
	shapeBytes                         // major type 2
	shapeTextMap                       // map of text to text
	shapeRetry                         // map with unsigned keys, see retryShapes
)

var eventShapes = [...]fieldShape{
	keyV: shapeUint, keyID: shapeText, keySource: shapeText, keyType: shapeText,
	keySpecVersion: shapeText, keyTime: shapeInt, keySubject: shapeText,
	keyDataContentType: shapeText, keyDataSchema: shapeText, keyCorrelationID: shapeText,
	keyCausationID: shapeText, keyTraceParent: shapeText, keyTraceState: shapeText,
	keyAttempt: shapeUint, keyDeadline: shapeInt, keyIdempotencyKey: shapeText,
	keyPartitionKey: shapeText, keyExtensions: shapeTextMap, keyData: shapeBytes,
}

var errorShapes = [...]fieldShape{
	errKeyV: shapeUint, errKeyCode: shapeText, errKeyMessage: shapeText,
	errKeyRetry: shapeRetry, errKeyRuntime: shapeText, errKeyHandler: shapeText,
}

var retryShapes = [...]fieldShape{
	retryKeyAttempts: shapeUint, retryKeyBackoff: shapeUint, retryKeyNotBefore: shapeInt,
}

// shapeChecker walks an input already known to be well-formed, definite-length CBOR
// and checks what fxamacker/cbor lets through on purpose: it decodes null into any
// type, looks through tags, matches text keys against field names and ignores negative
// keys. It also measures nesting the way both decoders define it (every array, map and
// tag is a level), which fxamacker counts differently for chains of tags. It also checks
// UTF-8 and repeated known keys itself, so that content errors are reported in byte
// order, as the Rust decoder reports them.
type shapeChecker struct {
	b   []byte
	off int
	// hugeKeys are the offsets of unknown keys above math.MaxInt64, which fxamacker
	// cannot represent as struct keys; see decodeInto.
	hugeKeys []int
}

func (c *shapeChecker) head() (major byte, ai byte, val uint64, err error) {
	if c.off >= len(c.b) {
		return 0, 0, 0, decodeErr(KindTruncated, "at offset %d", c.off)
	}
	ib := c.b[c.off]
	c.off++
	major, ai = ib&0xe0, ib&0x1f
	var n int
	switch {
	case ai < 24:
		return major, ai, uint64(ai), nil
	case ai <= 27:
		n = 1 << (ai - 24)
	default:
		return 0, 0, 0, decodeErr(KindMalformed, "additional information %d at offset %d", ai, c.off-1)
	}
	if len(c.b)-c.off < n {
		return 0, 0, 0, decodeErr(KindTruncated, "at offset %d", c.off)
	}
	for _, x := range c.b[c.off : c.off+n] {
		val = val<<8 | uint64(x)
	}
	c.off += n
	return major, ai, val, nil
}

// skip skips one item whose enclosing container is at nesting level depth.
func (c *shapeChecker) skip(depth int) error {
	major, _, val, err := c.head()
	if err != nil {
		return err
	}
	switch major {
	case majorBytes, majorText:
		if uint64(len(c.b)-c.off) < val {
			return decodeErr(KindTruncated, "at offset %d", c.off)
		}
		c.off += int(val)
	case majorArray, majorMap, majorTag:
		if depth+1 > maxDepth {
			return decodeErr(KindTooDeep, "more than %d levels at offset %d", maxDepth, c.off)
		}
		count := val
		switch major {
		case majorMap:
			count = val * 2
		case majorTag:
			count = 1
		}
		for range count {
			if err := c.skip(depth + 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkMap checks a map's keys and known values against shapes and returns a bitmask
// of the known keys present. In the top-level map (top), a first key 0 holding an
// unsigned integer other than 1 makes the result unsupported_version whatever else is
// wrong, since a later version may change every other field.
func (c *shapeChecker) checkMap(shapes []fieldShape, depth int, top bool) (present uint64, err error) {
	major, _, pairs, err := c.head()
	if err != nil {
		return 0, err
	}
	if major != majorMap {
		return 0, decodeErr(KindNotMap, "top level is major type %d", major>>5)
	}
	var firstErr error
	var hugeSeen []uint64
	for range pairs {
		kstart := c.off
		kmajor, _, key, err := c.head()
		if err != nil {
			return 0, err
		}
		if kmajor != majorUint {
			if firstErr == nil {
				firstErr = decodeErr(KindWrongType, "key of major type %d at offset %d", kmajor>>5, kstart)
			}
			c.off = kstart
			if err := c.skip(depth); err != nil { // the key
				return 0, err
			}
			if err := c.skip(depth); err != nil { // its value
				return 0, err
			}
			continue
		}
		if key > math.MaxInt64 {
			if slices.Contains(hugeSeen, key) {
				return 0, decodeErr(KindDuplicateKey, "key %d at offset %d", key, kstart)
			}
			hugeSeen = append(hugeSeen, key)
			c.hugeKeys = append(c.hugeKeys, kstart)
		}
		if key >= uint64(len(shapes)) {
			if err := c.skip(depth); err != nil {
				return 0, err
			}
			continue
		}
		if top && key == keyV && present&1 == 0 {
			vstart := c.off
			if m, _, v, err := c.head(); err == nil && m == majorUint && v != envelopeVersion {
				return 0, decodeErr(KindUnsupportedVersion, "version %d", v)
			}
			c.off = vstart
		}
		if present&(1<<key) != 0 && firstErr == nil {
			firstErr = decodeErr(KindDuplicateKey, "key %d at offset %d", key, kstart)
		}
		present |= 1 << key
		err = c.checkValue(shapes[key], depth)
		var de *DecodeError
		switch {
		case err == nil:
		case errors.As(err, &de) && (de.Kind == KindWrongType || de.Kind == KindInvalidUTF8):
			if firstErr == nil {
				firstErr = err
			}
		default:
			return 0, err
		}
	}
	return present, firstErr
}

// checkValue checks one known value. On a wrong type it still steps over the whole
// value so the walk can go on, and returns a wrong_type error.
func (c *shapeChecker) checkValue(shape fieldShape, depth int) error {
	start := c.off
	major, _, n, err := c.head()
	if err != nil {
		return err
	}
	wrong := func() error {
		c.off = start
		if err := c.skip(depth); err != nil {
			return err
		}
		return decodeErr(KindWrongType, "major type %d at offset %d", major>>5, start)
	}
	switch shape {
	case shapeUint:
		if major != majorUint {
			return wrong()
		}
	case shapeInt:
		if major != majorUint && major != majorNegInt {
			return wrong()
		}
	case shapeText:
		if major != majorText {
			return wrong()
		}
		c.off += int(n)
		if !utf8.Valid(c.b[c.off-int(n) : c.off]) {
			return decodeErr(KindInvalidUTF8, "text at offset %d", start)
		}
	case shapeBytes:
		if major != majorBytes {
			return wrong()
		}
		c.off += int(n)
	case shapeTextMap:
		if major != majorMap {
			return wrong()
		}
		var firstErr error
		for range n * 2 {
			istart := c.off
			m, _, l, err := c.head()
			if err != nil {
				return err
			}
			if m == majorText {
				c.off += int(l)
				if firstErr == nil && !utf8.Valid(c.b[c.off-int(l):c.off]) {
					firstErr = decodeErr(KindInvalidUTF8, "extension at offset %d", istart)
				}
				continue
			}
			if firstErr == nil {
				firstErr = decodeErr(KindWrongType, "extension of major type %d at offset %d", m>>5, istart)
			}
			c.off = istart
			if err := c.skip(depth + 1); err != nil {
				return err
			}
		}
		return firstErr
	case shapeRetry:
		if major != majorMap {
			return wrong()
		}
		c.off = start
		_, err := c.checkMap(retryShapes[:], depth+1, false)
		return err
	}
	return nil
}

// checkShape runs the shape pass over a well-formed input.
func checkShape(b []byte, shapes []fieldShape) (present uint64, hugeKeys []int, err error) {
	c := shapeChecker{b: b}
	present, err = c.checkMap(shapes, 1, true)
	return present, c.hugeKeys, err
}

// decodeInto runs the three passes every decode shares: well-formedness (fxamacker),
// shape (ours), then fxamacker's decode into w.
func decodeInto(b []byte, shapes []fieldShape, w any) (present uint64, err error) {
	if err := decMode.Wellformed(b); err != nil {
		return 0, classify(err)
	}
	// Nesting as we count it: every array, map and tag. The top-level map is level 1.
	c := shapeChecker{b: b}
	if err := c.skip(0); err != nil {
		return 0, err
	}
	present, hugeKeys, err := checkShape(b, shapes)
	if err != nil {
		return 0, err
	}
	if len(hugeKeys) != 0 {
		// Unknown keys above math.MaxInt64 must be skipped like any unknown key, but
		// fxamacker rejects them when decoding into a struct. Give fxamacker a copy in
		// which each is replaced by another unknown key of the same 9-byte width. (A
		// substitute could only collide with a key the input spells as
		// math.MaxInt64-i next to i+1 keys above it: a false duplicate_key we accept.)
		b = bytes.Clone(b)
		for i, off := range hugeKeys {
			b[off] = majorUint | 27
			binary.BigEndian.PutUint64(b[off+1:], uint64(math.MaxInt64-i))
		}
	}
	if err := decMode.Unmarshal(b, w); err != nil {
		return 0, classify(err)
	}
	if present&1 == 0 {
		return 0, decodeErr(KindMissingField, "v (key 0)")
	}
	return present, nil
}

func unixNanoPtr(p *int64) time.Time {
	if p == nil {
		return time.Time{}
	}
	return time.Unix(0, *p).UTC()
}

// DecodeEvent decodes an event envelope. It accepts any well-formed encoding, canonical
// or not, ignores unknown unsigned keys, and reports every rejection as a *DecodeError.
// Strings and Data are copies; b is not retained. Optional text fields present but
// empty decode as absent. Times are returned in UTC. Safe for concurrent use.
func DecodeEvent(b []byte) (*Event, error) {
	var w wireEvent
	if _, err := decodeInto(b, eventShapes[:], &w); err != nil {
		return nil, err
	}
	for _, f := range [...]struct {
		name, value string
	}{{"id", w.ID}, {"source", w.Source}, {"type", w.Type}, {"specversion", w.SpecVersion}} {
		if f.value == "" {
			return nil, decodeErr(KindMissingField, "%s", f.name)
		}
	}
	ev := &Event{
		ID:              w.ID,
		Source:          w.Source,
		Type:            w.Type,
		SpecVersion:     w.SpecVersion,
		Time:            unixNanoPtr(w.Time),
		Subject:         w.Subject,
		DataContentType: w.DataContentType,
		DataSchema:      w.DataSchema,
		CorrelationID:   w.CorrelationID,
		CausationID:     w.CausationID,
		TraceParent:     w.TraceParent,
		TraceState:      w.TraceState,
		Attempt:         w.Attempt,
		Deadline:        unixNanoPtr(w.Deadline),
		IdempotencyKey:  w.IdempotencyKey,
		PartitionKey:    w.PartitionKey,
	}
	if len(w.Extensions) != 0 {
		ev.Extensions = w.Extensions
	}
	if len(w.Data) != 0 {
		ev.Data = w.Data
	}
	return ev, nil
}

// ---------------------------------------------------------------------------
// Error envelope.

func validateErrorEnvelope(e *ErrorEnvelope) error {
	switch {
	case e == nil:
		return fmt.Errorf("%w: nil", ErrInvalidErrorEnvelope)
	case e.Code == "":
		return fmt.Errorf("%w: Code is empty", ErrInvalidErrorEnvelope)
	case e.Retry != nil && e.Retry.Backoff < 0:
		return fmt.Errorf("%w: Retry.Backoff %v is negative", ErrInvalidErrorEnvelope, e.Retry.Backoff)
	case e.Retry != nil && !validTime(e.Retry.NotBefore):
		return fmt.Errorf("%w: Retry.NotBefore %v is outside int64 Unix nanoseconds", ErrInvalidErrorEnvelope, e.Retry.NotBefore)
	}
	return nil
}

// AppendErrorEnvelope appends the canonical error envelope of e to dst with the
// hand-written encoder; it produces the same bytes as MarshalErrorEnvelope. On error
// (ErrInvalidErrorEnvelope, wrapped) dst is returned unchanged. Safe for concurrent use.
func AppendErrorEnvelope(dst []byte, e *ErrorEnvelope) ([]byte, error) {
	if err := validateErrorEnvelope(e); err != nil {
		return dst, err
	}
	n := uint64(2)
	for _, s := range [...]string{e.Message, e.Runtime, e.Handler} {
		if s != "" {
			n++
		}
	}
	if e.Retry != nil {
		n++
	}
	dst = appendHead(dst, majorMap, n)
	dst = append(dst, errKeyV, envelopeVersion)
	dst = appendText(append(dst, errKeyCode), e.Code)
	dst = appendTextField(dst, errKeyMessage, e.Message)
	if r := e.Retry; r != nil {
		m := uint64(0)
		if r.Attempts != 0 {
			m++
		}
		if r.Backoff != 0 {
			m++
		}
		if !r.NotBefore.IsZero() {
			m++
		}
		dst = appendHead(append(dst, errKeyRetry), majorMap, m)
		if r.Attempts != 0 {
			dst = appendHead(append(dst, retryKeyAttempts), majorUint, uint64(r.Attempts))
		}
		if r.Backoff != 0 {
			dst = appendHead(append(dst, retryKeyBackoff), majorUint, uint64(r.Backoff))
		}
		if !r.NotBefore.IsZero() {
			dst = appendInt(append(dst, retryKeyNotBefore), r.NotBefore.UnixNano())
		}
	}
	dst = appendTextField(dst, errKeyRuntime, e.Runtime)
	dst = appendTextField(dst, errKeyHandler, e.Handler)
	return dst, nil
}

// MarshalErrorEnvelope returns the canonical error envelope of e, encoded by
// fxamacker/cbor. Safe for concurrent use.
func MarshalErrorEnvelope(e *ErrorEnvelope) ([]byte, error) {
	if err := validateErrorEnvelope(e); err != nil {
		return nil, err
	}
	w := wireError{
		V:       envelopeVersion,
		Code:    e.Code,
		Message: e.Message,
		Runtime: e.Runtime,
		Handler: e.Handler,
	}
	if r := e.Retry; r != nil {
		w.Retry = &wireRetry{
			Attempts:  r.Attempts,
			BackoffNS: int64(r.Backoff),
			NotBefore: optionalUnixNano(r.NotBefore),
		}
	}
	return encMode.Marshal(&w)
}

// DecodeErrorEnvelope decodes an error envelope, with the same rules as DecodeEvent: a
// backoff_ns above math.MaxInt64 or attempts above math.MaxUint32 is wrong_type. A
// retry map that is present but empty decodes as a non-nil, zero RetryPolicy. Safe for
// concurrent use.
func DecodeErrorEnvelope(b []byte) (*ErrorEnvelope, error) {
	var w wireError
	if _, err := decodeInto(b, errorShapes[:], &w); err != nil {
		return nil, err
	}
	if w.Code == "" {
		return nil, decodeErr(KindMissingField, "code")
	}
	e := &ErrorEnvelope{Code: w.Code, Message: w.Message, Runtime: w.Runtime, Handler: w.Handler}
	if w.Retry != nil {
		e.Retry = &RetryPolicy{
			Attempts:  w.Retry.Attempts,
			Backoff:   time.Duration(w.Retry.BackoffNS),
			NotBefore: unixNanoPtr(w.Retry.NotBefore),
		}
	}
	return e, nil
}
