// Package unchecked holds what package envelope lends the engine and nobody else: its event
// encoder without the checks AppendEvent makes first, which also says where it put each
// field. Intake validates every event once, before routing and before a policy sees it
// (envelope.Validate); encoding it into the request slot with AppendEvent would check it all
// again on the submit path.
//
// Package envelope sets AppendEvent in its init; it is read-only afterwards and safe for
// concurrent use.
package unchecked

// AppendEvent is a func(dst []byte, ev *envelope.Event, f *Fields) []byte (this package
// cannot name the type: envelope imports it): envelope.AppendEvent for an ev that
// envelope.Validate accepted, which also fills f (unless nil) with where each field of the
// envelope lies. Given any other ev, the bytes it appends are no valid envelope.
var AppendEvent any

// Fields is tandem_fields of ffi/tandem.h, field for field (package abi checks the layout):
// where each field of an envelope lies, from the envelope's first byte, so that Rust reads
// the event without parsing its CBOR. Present has bit k set for each envelope key k the
// envelope holds (bit 0, the version, in every index); 0 means no index. At[k] is the
// content of text key k (its UTF-8 bytes, after the head), of data (key 18, after the head)
// and of the extensions (key 17, the whole map item); Time, Attempt and Deadline are keys 5,
// 13 and 14.
type Fields struct {
	Present  uint32
	Attempt  uint32
	Time     int64
	Deadline int64
	At       [19]Span
}

// Span is tandem_span: Len bytes from offset Off.
type Span struct{ Off, Len uint32 }
