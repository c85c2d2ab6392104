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

func init() { unchecked.AppendEvent = appendValidEvent }

// appendValidEvent is AppendEvent for an ev that Validate accepted.
func appendValidEvent(dst []byte, ev *Event) []byte {
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

// appendTextField appends key and value when the value is present (non-empty).
func appendTextField(dst []byte, key uint64, s string) []byte {
	if s == "" {
		return dst
	}
	return appendText(append(dst, byte(key)), s)
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
