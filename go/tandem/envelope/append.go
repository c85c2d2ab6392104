package envelope

import (
	"math"
	"slices"

	"github.com/tandemrt/tandem/go/internal/unchecked"
)

// The hand-written canonical encoder of events (encode.go says why it exists): shortest-form
// heads, keys in ascending order, optional fields omitted, extension keys sorted bytewise by
// their encodings (shorter first, then bytewise): RFC 8949 §4.2.1 core deterministic
// encoding, exactly what MarshalEvent produces through fxamacker/cbor.

// CBOR major types, shifted into the initial byte.
const (
	majorUint   byte = 0 << 5
	majorNegInt byte = 1 << 5
	majorBytes  byte = 2 << 5
	majorText   byte = 3 << 5
	majorMap    byte = 5 << 5
)

// AppendEvent appends the canonical envelope of ev to dst and returns the extended
// slice. It validates ev before writing anything: on error (ErrInvalidEvent, wrapped) dst
// is returned unchanged. It does not allocate when dst has room for EncodedEventSize(ev)
// more bytes and ev has at most 64 extensions. Safe for concurrent use.
func AppendEvent(dst []byte, ev *Event) ([]byte, error) {
	if err := Validate(ev); err != nil {
		return dst, err
	}
	return appendValidEvent(dst, ev), nil
}

func init() { unchecked.AppendEvent = appendEventFields }

// appendValidEvent is AppendEvent for an ev that Validate accepted.
func appendValidEvent(dst []byte, ev *Event) []byte { return appendEventFields(dst, ev, nil) }

// appendEventFields is appendValidEvent that also records in f, unless it is nil, where it
// put each field (unchecked.Fields): it knows as it writes, and a reader that is told skips
// parsing the whole envelope.
func appendEventFields(dst []byte, ev *Event, f *unchecked.Fields) []byte {
	base := len(dst)
	// at records, after a field's head, where its content starts (off) and its length.
	at := func(key int, dst []byte, n int) {
		f.At[key] = unchecked.Span{Off: uint32(len(dst) - base), Len: uint32(n)}
	}
	present := uint32(1)<<keyV | 1<<keyID | 1<<keySource | 1<<keyType | 1<<keySpecVersion
	dst = appendHead(dst, majorMap, eventFieldCount(ev))
	dst = append(dst, keyV, envelopeVersion)
	for _, field := range [...]struct {
		key int
		s   string
	}{{keyID, ev.ID}, {keySource, ev.Source}, {keyType, ev.Type}, {keySpecVersion, specVersion(ev)}} {
		dst = appendHead(append(dst, byte(field.key)), majorText, uint64(len(field.s)))
		if f != nil {
			at(field.key, dst, len(field.s))
		}
		dst = append(dst, field.s...)
	}
	if !ev.Time.IsZero() {
		t := ev.Time.UnixNano()
		dst = appendInt(append(dst, keyTime), t)
		if f != nil {
			f.Time, present = t, present|1<<keyTime
		}
	}
	text := func(dst []byte, key int, s string) []byte {
		if s == "" {
			return dst
		}
		dst = appendHead(append(dst, byte(key)), majorText, uint64(len(s)))
		if f != nil {
			at(key, dst, len(s))
			present |= 1 << key
		}
		return append(dst, s...)
	}
	dst = text(dst, keySubject, ev.Subject)
	dst = text(dst, keyDataContentType, ev.DataContentType)
	dst = text(dst, keyDataSchema, ev.DataSchema)
	dst = text(dst, keyCorrelationID, ev.CorrelationID)
	dst = text(dst, keyCausationID, ev.CausationID)
	dst = text(dst, keyTraceParent, ev.TraceParent)
	dst = text(dst, keyTraceState, ev.TraceState)
	if ev.Attempt != 0 {
		dst = appendHead(append(dst, keyAttempt), majorUint, uint64(ev.Attempt))
		if f != nil {
			f.Attempt, present = ev.Attempt, present|1<<keyAttempt
		}
	}
	if !ev.Deadline.IsZero() {
		d := ev.Deadline.UnixNano()
		dst = appendInt(append(dst, keyDeadline), d)
		if f != nil {
			f.Deadline, present = d, present|1<<keyDeadline
		}
	}
	dst = text(dst, keyIdempotencyKey, ev.IdempotencyKey)
	dst = text(dst, keyPartitionKey, ev.PartitionKey)
	if len(ev.Extensions) != 0 {
		start := len(dst) + 1 // after the key
		dst = appendExtensions(dst, ev.Extensions)
		if f != nil {
			f.At[keyExtensions] = unchecked.Span{Off: uint32(start - base), Len: uint32(len(dst) - start)}
			present |= 1 << keyExtensions
		}
	}
	if len(ev.Data) != 0 {
		dst = appendHead(append(dst, keyData), majorBytes, uint64(len(ev.Data)))
		if f != nil {
			at(keyData, dst, len(ev.Data))
			present |= 1 << keyData
		}
		dst = append(dst, ev.Data...)
	}
	if f != nil {
		f.Present = present
	}
	return dst
}

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

func appendInt(dst []byte, n int64) []byte {
	if n >= 0 {
		return appendHead(dst, majorUint, uint64(n))
	}
	return appendHead(dst, majorNegInt, uint64(^n))
}

func appendText(dst []byte, s string) []byte {
	dst = appendHead(dst, majorText, uint64(len(s)))
	return append(dst, s...)
}

// extensionLess orders extension keys canonically: bytewise by their encodings, which for
// text strings is shorter first, then bytewise.
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
const sortedKeysOnStack = 64

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
