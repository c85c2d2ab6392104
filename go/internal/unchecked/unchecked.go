// Package unchecked holds what package envelope lends the engine and nobody else: its event
// encoder without the checks AppendEvent makes first. Intake validates every event once,
// before routing and before a policy sees it (envelope.Validate); encoding it into the
// request slot with AppendEvent would check it all again on the submit path.
//
// Package envelope sets AppendEvent in its init; it is read-only afterwards and safe for
// concurrent use.
package unchecked

// AppendEvent is a func(dst []byte, ev *envelope.Event) []byte (this package cannot name
// the type: envelope imports it): envelope.AppendEvent for an ev that envelope.Validate
// accepted. Given any other ev, the bytes it appends are no valid envelope.
var AppendEvent any
