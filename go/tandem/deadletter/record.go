package deadletter

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/tandemrt/tandem/go/internal/cborx"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// The record: a definite-length map with unsigned keys, version 1 (docs/deadletters.md).

// recordVersion is the major version every record carries under key 0.
const recordVersion = 1

const (
	keyV = iota
	keyReason
	keyError
	keyAttempts
	keyEventID
	keyEventType
	keySource
	keyRoute
	keyTime
	keyEnvelope
)

// majorMap is CBOR major type 5 in an initial byte: every record starts with a map head.
const majorMap = 5 << 5

var (
	minUnixNano = time.Unix(0, math.MinInt64)
	maxUnixNano = time.Unix(0, math.MaxInt64)
)

// The error envelope is embedded as a byte string holding its own canonical encoding, so
// envelope.DecodeErrorEnvelope reads the error exactly as it reads one off the
// completion ring. A record is checked with the envelope's rules (cborx.Decode).
var recordShapes = [...]cborx.Shape{
	keyV: cborx.Uint, keyReason: cborx.Text, keyError: cborx.Bytes,
	keyAttempts: cborx.Uint, keyEventID: cborx.Text, keyEventType: cborx.Text,
	keySource: cborx.Text, keyRoute: cborx.Text, keyTime: cborx.Int, keyEnvelope: cborx.Bytes,
}

// wireRecord is the record as fxamacker/cbor encodes it.
type wireRecord struct {
	V         uint64 `cbor:"0,keyasint"`
	Reason    string `cbor:"1,keyasint"`
	Error     []byte `cbor:"2,keyasint,omitempty"`
	Attempts  uint32 `cbor:"3,keyasint,omitempty"`
	EventID   string `cbor:"4,keyasint,omitempty"`
	EventType string `cbor:"5,keyasint,omitempty"`
	Source    string `cbor:"6,keyasint,omitempty"`
	Route     string `cbor:"7,keyasint,omitempty"`
	Time      int64  `cbor:"8,keyasint"`
	Envelope  []byte `cbor:"9,keyasint,omitempty"`
}

// validUTF8 replaces what is not UTF-8 in s with U+FFFD. A record's text is diagnostic and
// comes from anywhere (a Go handler's error message, a route's name); written as it is, it
// would make the record, and every record after it, unreadable to both decoders, and
// refusing it would lose the letter.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// marshalRecord encodes dl as one canonical record, stamping a zero Time with now.
func marshalRecord(dl *Record, now time.Time) ([]byte, error) {
	if dl == nil {
		return nil, fmt.Errorf("%w: nil", ErrInvalidRecord)
	}
	if dl.Reason == "" {
		return nil, fmt.Errorf("%w: Reason is empty", ErrInvalidRecord)
	}
	t := dl.Time
	if t.IsZero() {
		t = now
	}
	if t.Before(minUnixNano) || t.After(maxUnixNano) {
		return nil, fmt.Errorf("%w: Time %v is outside int64 Unix nanoseconds", ErrInvalidRecord, t)
	}
	w := wireRecord{
		V:         recordVersion,
		Reason:    validUTF8(string(dl.Reason)),
		Attempts:  dl.Attempts,
		EventID:   validUTF8(dl.EventID),
		EventType: validUTF8(dl.EventType),
		Source:    validUTF8(dl.Source),
		Route:     validUTF8(dl.Route),
		Time:      t.UnixNano(),
		Envelope:  dl.Envelope,
	}
	if dl.Error != nil {
		e := *dl.Error
		e.Code, e.Message, e.Runtime, e.Handler = validUTF8(e.Code), validUTF8(e.Message), validUTF8(e.Runtime), validUTF8(e.Handler)
		b, err := envelope.MarshalErrorEnvelope(&e)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
		}
		w.Error = b
	}
	return cborx.Enc.Marshal(&w)
}

// decodeRecord decodes one complete record. Like the envelope decoders it skips unknown
// unsigned keys and rejects another version, and reports an *envelope.DecodeError.
func decodeRecord(b []byte) (*Record, error) {
	r := &Record{}
	var ns int64
	present, err := cborx.Decode(b, recordShapes[:], func(key uint64, val []byte) error {
		var dst any
		switch key {
		case keyReason:
			dst = (*string)(&r.Reason)
		case keyError:
			var raw []byte
			if err := cborx.Dec.Unmarshal(val, &raw); err != nil {
				return err
			}
			e, err := envelope.DecodeErrorEnvelope(raw)
			if err != nil {
				return fmt.Errorf("error envelope (key %d): %w", keyError, err)
			}
			r.Error = e
			return nil
		case keyAttempts:
			dst = &r.Attempts
		case keyEventID:
			dst = &r.EventID
		case keyEventType:
			dst = &r.EventType
		case keySource:
			dst = &r.Source
		case keyRoute:
			dst = &r.Route
		case keyTime:
			dst = &ns
		case keyEnvelope:
			dst = &r.Envelope
		}
		return cborx.Dec.Unmarshal(val, dst)
	})
	if err != nil {
		e := cborx.AsError(err)
		return nil, &envelope.DecodeError{Kind: envelope.DecodeErrorKind(e.Kind), Err: e.Err}
	}
	switch {
	case r.Reason == "":
		return nil, decodeErr(envelope.KindMissingField, "reason (key %d)", keyReason)
	case present&(1<<keyTime) == 0:
		return nil, decodeErr(envelope.KindMissingField, "time (key %d)", keyTime)
	}
	r.Time = time.Unix(0, ns).UTC()
	if len(r.Envelope) == 0 {
		r.Envelope = nil
	}
	return r, nil
}

func decodeErr(kind envelope.DecodeErrorKind, format string, args ...any) *envelope.DecodeError {
	return &envelope.DecodeError{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// cloneRecord returns a deep copy, so a sink keeps nothing of the caller's.
func cloneRecord(dl *Record) Record {
	c := *dl
	if dl.Error != nil {
		e := *dl.Error
		if e.Retry != nil {
			r := *e.Retry
			e.Retry = &r
		}
		c.Error = &e
	}
	c.Envelope = bytes.Clone(dl.Envelope)
	return c
}

// MarshalRecord encodes r as one record in the format the file sink writes (docs/
// deadletters.md), for a sink that stores records one by one (a message per dead letter);
// a zero Time is stamped with the current time. Errors wrap ErrInvalidRecord.
func MarshalRecord(r *Record) ([]byte, error) { return marshalRecord(r, time.Now()) }

// UnmarshalRecord decodes one record MarshalRecord encoded. Like the envelope decoders it
// skips keys it does not know and refuses another version, with an *envelope.DecodeError.
func UnmarshalRecord(b []byte) (*Record, error) { return decodeRecord(b) }
