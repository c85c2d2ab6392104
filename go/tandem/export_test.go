package tandem

import "maps"

// AssertInvariant lets the external tests (package tandem_test) end as the composition tests
// do: shut down, and every accepted event settled, every buffer back with its owner.
var AssertInvariant = assertInvariant

// submitRaw publishes already-encoded bytes to the Rust handler of eventType, bypassing the
// encoder: tests prove with it that Rust refuses malformed envelopes.
func (r *Runtime) submitRaw(raw []byte, eventType string) (*Receipt, error) {
	a := &Receipt{w: receiptWaiter{e: r.e, ch: make(chan struct{})}}
	if err := r.e.SubmitRaw(raw, eventType, &a.w); err != nil {
		return nil, err
	}
	return a, nil
}

// cloneEvent copies ev, so a test may keep an event its handler saw.
func cloneEvent(ev *Event) Event {
	c := *ev
	c.Data = append([]byte(nil), ev.Data...)
	c.Extensions = maps.Clone(ev.Extensions)
	return c
}
