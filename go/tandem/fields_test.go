package tandem

import (
	"bytes"
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// reflected is what demo.reflect replied to a Call: the envelope its handler read, decoded.
func reflected(t *testing.T, rt *Runtime, ev *Event) *Event {
	t.Helper()
	reply, err := rt.Call(context.Background(), ev)
	if err != nil {
		t.Fatalf("Call %s: %v", ev.ID, err)
	}
	defer reply.Release()
	got, err := envelope.DecodeEvent(reply.Data())
	if err != nil {
		t.Fatalf("%s: the reply is no envelope: %v", ev.ID, err)
	}
	return got
}

// sameFields fails t unless got holds every field of want (an empty SpecVersion reads "1.0").
func sameFields(t *testing.T, got, want *Event) {
	t.Helper()
	w := *want
	if w.SpecVersion == "" {
		w.SpecVersion = "1.0"
	}
	if len(w.Extensions) == 0 {
		w.Extensions = nil
	}
	same := got.ID == w.ID && got.Source == w.Source && got.Type == w.Type && got.SpecVersion == w.SpecVersion &&
		got.Time.Equal(w.Time) && got.Subject == w.Subject && got.DataContentType == w.DataContentType &&
		got.DataSchema == w.DataSchema && got.CorrelationID == w.CorrelationID && got.CausationID == w.CausationID &&
		got.TraceParent == w.TraceParent && got.TraceState == w.TraceState && got.Attempt == w.Attempt &&
		got.Deadline.Equal(w.Deadline) && got.IdempotencyKey == w.IdempotencyKey &&
		got.PartitionKey == w.PartitionKey && maps.Equal(got.Extensions, w.Extensions) && bytes.Equal(got.Data, w.Data)
	if !same {
		t.Fatalf("the Rust handler read\n %+v\nwant\n %+v", got, &w)
	}
}

// Every field of an event reaches a Rust handler as it was submitted. Go writes, beside the
// envelope in the request slot, where each of its fields lies, and Rust reads the event from
// that index instead of parsing the CBOR: an event with every field and extensions, one with
// nothing optional, one whose data needs a 32-bit length, text beyond ASCII, a time before
// 1970. An envelope copied into a slot as bytes (an event a Rust handler sends, here the
// call demo.ask makes through Go) carries no index, and is read as it is even in a slot whose last event
// left one there.
func TestEveryFieldReachesARustHandler(t *testing.T) {
	rt := newRegistered(t, Config{MaxInFlight: 2, MaxEventSize: 1 << 17, MaxReplySize: 1 << 17})
	// A route with a policy of Go's own: a call to it goes through Go, which copies the
	// envelope Rust encoded into a request slot.
	var p admitCounter
	if err := rt.HandleRust("reflect.guarded", "demo.reflect", WithPolicy(&p)); err != nil {
		t.Fatal(err)
	}
	start(t, rt)
	deadline := time.Now().Add(time.Hour).Truncate(time.Nanosecond)
	events := []*Event{
		{ID: "all", Source: "/orders/api", Type: "demo.reflect", SpecVersion: "1.0",
			Time: time.Unix(-86400, 5), Subject: "order/42", DataContentType: "application/json",
			DataSchema: "https://example.com/schema", CorrelationID: "corr-7", CausationID: "cause-6",
			TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "k=v",
			Attempt: 4, Deadline: deadline, IdempotencyKey: "idem-1", PartitionKey: "client-é",
			Extensions: map[string]string{"region": "eu-west", "tenant": "ацме", "z": ""},
			Data:       []byte(`{"order":42}`)},
		{ID: "minimal", Source: "/s", Type: "demo.reflect"},
		{ID: "large", Source: "/s", Type: "demo.reflect", Subject: strings.Repeat("ü", 200),
			Data: bytes.Repeat([]byte{0xff, 0}, 35_000)},
	}
	for _, ev := range events {
		sameFields(t, reflected(t, rt, ev), ev)
	}
	// Two short events at once leave an index of a few bytes in both request slots, which
	// would hold for most envelopes. demo.ask's own event takes one slot, the call it sends
	// (an envelope Rust encoded, copied in whole) the other.
	var receipts []*Receipt
	for _, id := range []string{"a", "b"} {
		r, err := rt.Submit(context.Background(), &Event{ID: id, Source: "/", Type: "demo.sleep"})
		if err != nil {
			t.Fatalf("Submit: %v", err)
		}
		receipts = append(receipts, r)
	}
	for _, r := range receipts {
		if err := r.Wait(context.Background()); err != nil {
			t.Fatalf("demo.sleep: %v", err)
		}
	}
	if s := rt.Stats(); s.FreeRequestSlots != 2 {
		t.Fatalf("%d request slots free, want both", s.FreeRequestSlots)
	}
	ask := &Event{ID: "q", Source: "/s", Type: "demo.ask", Data: []byte("question"),
		Extensions: map[string]string{"call": "reflect.guarded"}}
	got := reflected(t, rt, ask)
	if got.ID != "q/ask" || got.Type != "reflect.guarded" || !bytes.Equal(got.Data, ask.Data) || !maps.Equal(got.Extensions, ask.Extensions) {
		t.Fatalf("the callee read %+v; want the call demo.ask sent: id q/ask, type reflect.guarded, its data and extensions", got)
	}
	if s := rt.Stats(); p.n.Load() != 1 || s.Rust.Calls != 1 {
		t.Fatalf("the call went through Go %d times (%d calls): want once", p.n.Load(), s.Rust.Calls)
	}
	shutdownClean(t, rt)
}
