package envelope

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/fxamacker/cbor/v2"

	"github.com/tandemrt/tandem/go/internal/cborx"
)

// Events are encoded by a hand-written append encoder (append.go): the submit path encodes
// every event straight into a request slot, and fxamacker/cbor, although it reaches zero
// allocations there too (its UserBufferEncMode around a pooled wire struct), takes 3-6x as
// long. BenchmarkAppendEvent (envelope_test.go: fullEvent, 256 bytes of data, into a
// caller's buffer), 2-vCPU VM, Go 1.26, fxamacker v2.10.0, ranges over runs:
//
//	                            no extensions                4 extensions
//	hand-written AppendEvent     67-76 ns    0 B  0 allocs  170-180 ns    0 B  0 allocs
//	fxamacker, pooled           235-440 ns    0 B  0 allocs  390-460 ns    0 B  0 allocs
//	fxamacker, no pool          440-500 ns  352 B  1 alloc   600-700 ns  352 B  1 alloc
//
// End to end the difference showed: with fxamacker on the submit path, `go test -bench
// Submit` in bench/ measured the submit p50 at 491 ns against 270 ns, interleaved runs
// (docs/benchmarks.md). MarshalEvent and the error envelope (off the hot path) go through
// fxamacker with core deterministic encoding (cborx.Enc), the canonical form of
// ffi/envelope.cddl, and TestAppendEventMatchesMarshalEvent holds the two encoders to the
// same bytes.

// envelopeVersion is the major version every v1 envelope carries under key 0.
const envelopeVersion = 1

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

var (
	minUnixNano = time.Unix(0, math.MinInt64)
	maxUnixNano = time.Unix(0, math.MaxInt64)
)

// wireEvent is the envelope as fxamacker/cbor encodes it, for MarshalEvent.
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

// wireError is the error envelope as fxamacker/cbor encodes it.
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

// size helpers for EncodedEventSize: the length of a shortest-form CBOR head and of
// the items built on it.

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

func intSize(n int64) int {
	if n >= 0 {
		return headSize(uint64(n))
	}
	return headSize(uint64(^n))
}

func textSize(s string) int { return headSize(uint64(len(s))) + len(s) }

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

func validTime(t time.Time) bool {
	return t.IsZero() || (!t.Before(minUnixNano) && !t.After(maxUnixNano))
}

// Validate reports, as ErrInvalidEvent wrapped with the field, why ev could not be encoded:
// a required attribute empty, text that is not valid UTF-8 (which every decoder rejects as
// invalid_utf8), or a time outside int64 Unix nanoseconds. AppendEvent and MarshalEvent
// apply the same rules, and the runtime applies them to every event submitted or emitted,
// for either runtime's handlers. Safe for concurrent use.
func Validate(ev *Event) error {
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
	if asciiText(ev) {
		return nil
	}
	for _, f := range [...]struct{ name, value string }{
		{"ID", ev.ID}, {"Source", ev.Source}, {"Type", ev.Type}, {"SpecVersion", ev.SpecVersion},
		{"Subject", ev.Subject}, {"DataContentType", ev.DataContentType}, {"DataSchema", ev.DataSchema},
		{"CorrelationID", ev.CorrelationID}, {"CausationID", ev.CausationID},
		{"TraceParent", ev.TraceParent}, {"TraceState", ev.TraceState},
		{"IdempotencyKey", ev.IdempotencyKey}, {"PartitionKey", ev.PartitionKey},
	} {
		if !utf8.ValidString(f.value) {
			return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidEvent, f.name, f.value)
		}
	}
	for k, v := range ev.Extensions {
		switch {
		case !utf8.ValidString(k):
			return fmt.Errorf("%w: Extensions key %q is not valid UTF-8", ErrInvalidEvent, k)
		case !utf8.ValidString(v):
			return fmt.Errorf("%w: Extensions[%q] %q is not valid UTF-8", ErrInvalidEvent, k, v)
		}
	}
	return nil
}

// asciiText reports whether every text field of ev, its extensions included, is ASCII, and
// so UTF-8. Validate runs on every submit, and its caller's AppendEvent once more: this one
// pass, eight bytes at a time, costs a fifth of utf8.ValidString field by field, which
// Validate then runs only on text with a byte above 0x7f, to name the field.
func asciiText(ev *Event) bool {
	acc := orBytes(ev.ID, 0)
	acc = orBytes(ev.Source, acc)
	acc = orBytes(ev.Type, acc)
	acc = orBytes(ev.SpecVersion, acc)
	acc = orBytes(ev.Subject, acc)
	acc = orBytes(ev.DataContentType, acc)
	acc = orBytes(ev.DataSchema, acc)
	acc = orBytes(ev.CorrelationID, acc)
	acc = orBytes(ev.CausationID, acc)
	acc = orBytes(ev.TraceParent, acc)
	acc = orBytes(ev.TraceState, acc)
	acc = orBytes(ev.IdempotencyKey, acc)
	acc = orBytes(ev.PartitionKey, acc)
	// Ranging over a map, even an empty one, starts an iterator: a third of this check's
	// time for an event without extensions, most events.
	if len(ev.Extensions) != 0 {
		for k, v := range ev.Extensions {
			acc = orBytes(v, orBytes(k, acc))
		}
	}
	return acc&0x8080808080808080 == 0
}

// orBytes ORs the bytes of s into acc, eight at a time.
func orBytes(s string, acc uint64) uint64 {
	// Read only: the bytes of a string are never written through this slice.
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	for len(b) >= 8 {
		acc |= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		acc |= uint64(c)
	}
	return acc
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

// bufEnc is cborx.Enc's options in the mode that encodes into a caller's bytes.Buffer.
var bufEnc = func() cbor.UserBufferEncMode {
	m, err := cbor.CoreDetEncOptions().UserBufferEncMode()
	if err != nil {
		panic("tandem: envelope UserBufferEncMode: " + err.Error())
	}
	return m
}()

// eventScratch is the wire struct of an Event and the time values its pointers point at.
type eventScratch struct {
	w              wireEvent
	time, deadline int64
}

// fill sets s.w to ev, its time pointers pointing into s.
func (s *eventScratch) fill(ev *Event) {
	s.w = wireEvent{
		V:               envelopeVersion,
		ID:              ev.ID,
		Source:          ev.Source,
		Type:            ev.Type,
		SpecVersion:     specVersion(ev),
		Subject:         ev.Subject,
		DataContentType: ev.DataContentType,
		DataSchema:      ev.DataSchema,
		CorrelationID:   ev.CorrelationID,
		CausationID:     ev.CausationID,
		TraceParent:     ev.TraceParent,
		TraceState:      ev.TraceState,
		Attempt:         ev.Attempt,
		IdempotencyKey:  ev.IdempotencyKey,
		PartitionKey:    ev.PartitionKey,
		Extensions:      ev.Extensions,
		Data:            ev.Data,
	}
	if !ev.Time.IsZero() {
		s.time, s.w.Time = ev.Time.UnixNano(), &s.time
	}
	if !ev.Deadline.IsZero() {
		s.deadline, s.w.Deadline = ev.Deadline.UnixNano(), &s.deadline
	}
}

// EncodedEventSize returns the exact number of bytes AppendEvent appends for ev, so a
// caller can check that a buffer (a ring slot) has room before encoding. It is what the
// runtime holds to Config.MaxEventSize: an event to a Rust handler is accepted exactly when
// EncodedEventSize(ev) <= MaxEventSize. For an ev that AppendEvent rejects the result is
// meaningless. It does not allocate. Safe for concurrent use.
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

// MarshalEvent returns the canonical envelope of ev in a new slice: the bytes
// AppendEvent(nil, ev) returns. Prefer AppendEvent on hot paths. Safe for concurrent use.
func MarshalEvent(ev *Event) ([]byte, error) {
	if err := Validate(ev); err != nil {
		return nil, err
	}
	var s eventScratch
	s.fill(ev)
	return cborx.Enc.Marshal(&s.w)
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
	for _, f := range [...]struct{ name, value string }{
		{"Code", e.Code}, {"Message", e.Message}, {"Runtime", e.Runtime}, {"Handler", e.Handler},
	} {
		if !utf8.ValidString(f.value) {
			return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidErrorEnvelope, f.name, f.value)
		}
	}
	return nil
}

// errorScratch is eventScratch for error envelopes.
type errorScratch struct {
	w         wireError
	retry     wireRetry
	notBefore int64
	buf       bytes.Buffer
}

var errorScratchPool = sync.Pool{New: func() any { return new(errorScratch) }}

func (s *errorScratch) fill(e *ErrorEnvelope) {
	s.w = wireError{V: envelopeVersion, Code: e.Code, Message: e.Message, Runtime: e.Runtime, Handler: e.Handler}
	if r := e.Retry; r != nil {
		s.retry = wireRetry{Attempts: r.Attempts, BackoffNS: int64(r.Backoff)}
		if !r.NotBefore.IsZero() {
			s.notBefore, s.retry.NotBefore = r.NotBefore.UnixNano(), &s.notBefore
		}
		s.w.Retry = &s.retry
	}
}

// AppendErrorEnvelope appends the canonical error envelope of e to dst and returns the
// extended slice; like AppendEvent it writes into dst's array when there is room. On
// error (ErrInvalidErrorEnvelope, wrapped) dst is returned unchanged. Safe for concurrent
// use.
func AppendErrorEnvelope(dst []byte, e *ErrorEnvelope) ([]byte, error) {
	if err := validateErrorEnvelope(e); err != nil {
		return dst, err
	}
	s := errorScratchPool.Get().(*errorScratch)
	s.fill(e)
	s.buf = *bytes.NewBuffer(dst)
	err := bufEnc.MarshalToBuffer(&s.w, &s.buf)
	out := s.buf.Bytes()
	*s = errorScratch{}
	errorScratchPool.Put(s)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// MarshalErrorEnvelope returns the canonical error envelope of e in a new slice. Safe
// for concurrent use.
func MarshalErrorEnvelope(e *ErrorEnvelope) ([]byte, error) {
	if err := validateErrorEnvelope(e); err != nil {
		return nil, err
	}
	var s errorScratch
	s.fill(e)
	return cborx.Enc.Marshal(&s.w)
}
