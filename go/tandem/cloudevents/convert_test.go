package cloudevents

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// The examples of the CloudEvents JSON event format specification (formats/json-format.md,
// section 3), as a sender writes them.
var specJSONExamples = map[string]string{
	"base64 data": `{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "A234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/vnd.apache.thrift.binary",
    "data_base64" : "AQIDBAUGBwgJ"
}`,
	"JSON data": `{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "C234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "unsetextension": null,
    "datacontenttype" : "application/json",
    "data" : {
        "appinfoA" : "abc",
        "appinfoB" : 123,
        "appinfoC" : true
    }
}`,
	"XML data": `{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "B234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/xml",
    "data" : "<much wow=\"xml\"/>"
}`,
}

// Every attribute and extension of the specification's examples survives the trip to a
// tandem Event and back, through either content mode, with its type: the integer
// extension stays an integer, the data stays byte for byte.
func TestSpecificationExamplesConvertLosslessly(t *testing.T) {
	for name, doc := range specJSONExamples {
		t.Run(name, func(t *testing.T) {
			var want event.Event
			if err := json.Unmarshal([]byte(doc), &want); err != nil {
				t.Fatal(err)
			}
			ev, err := FromCloudEvent(&want)
			if err != nil {
				t.Fatalf("FromCloudEvent: %v", err)
			}
			if ev.Extensions["comexampleothervalue"] != "5" || ev.Extensions[TypesExtension] != "comexampleothervalue:Integer" {
				t.Fatalf("extensions %v: want the integer as its canonical string, its type recorded", ev.Extensions)
			}
			for _, mode := range []Mode{Binary, Structured} {
				h, body, err := EncodeMessage(ev, mode)
				if err != nil {
					t.Fatalf("EncodeMessage(%v): %v", mode, err)
				}
				back, err := DecodeMessage(h, body)
				if err != nil {
					t.Fatalf("DecodeMessage(%v): %v", mode, err)
				}
				if !sameEvent(back, ev) {
					t.Fatalf("mode %v: came back as\n%+v\nwant\n%+v", mode, back, ev)
				}
				ce, err := ToCloudEvent(back)
				if err != nil {
					t.Fatalf("ToCloudEvent: %v", err)
				}
				if !reflect.DeepEqual(ce.Extensions(), want.Extensions()) {
					t.Fatalf("mode %v: extensions %#v, want %#v", mode, ce.Extensions(), want.Extensions())
				}
				if string(ce.Data()) != string(want.Data()) || ce.DataContentType() != want.DataContentType() ||
					!ce.Time().Equal(want.Time()) || ce.ID() != want.ID() || ce.Source() != want.Source() || ce.Type() != want.Type() {
					t.Fatalf("mode %v: %v, want %v", mode, ce, want)
				}
			}
		})
	}
}

// A tandem Event with every field set converts to CloudEvents and back unchanged, through
// binary and structured messages and through HTTP requests, whatever its data.
func TestEventRoundTripsThroughEveryMode(t *testing.T) {
	full := &envelope.Event{
		ID: "e-1", Source: "/orders", Type: "order.placed", SpecVersion: "1.0",
		Time: time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC), Subject: "order 42",
		DataSchema: "https://example.com/schema", CorrelationID: "corr", CausationID: "cause",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "k=v",
		Attempt: 3, Deadline: time.Date(2026, 11, 28, 12, 0, 5, 0, time.UTC),
		IdempotencyKey: "idem key", PartitionKey: "p1",
		Extensions: map[string]string{"tenant": "acme", "note": "Euro € 😀 \"quoted\" 100%", "count": "7", "flag": "true",
			TypesExtension: "count:Integer,flag:Boolean"},
	}
	datas := []struct {
		contentType string
		data        []byte
	}{
		{"application/json", []byte(`{"a": [1, 2]}`)},
		{"", []byte(`[true]`)},
		{"", []byte("not json")},
		{"text/plain; charset=utf-8", []byte("héllo\nworld")},
		{"text/plain", []byte{0xff, 0xfe}},
		{"application/octet-stream", []byte{0, 1, 2, 3}},
		{"application/json", []byte("{not json")},
		{"", nil},
	}
	for _, d := range datas {
		ev := *full
		ev.DataContentType, ev.Data = d.contentType, d.data
		for _, mode := range []Mode{Binary, Structured} {
			h, body, err := EncodeMessage(&ev, mode)
			if err != nil {
				t.Fatalf("%q %q: EncodeMessage: %v", d.contentType, d.data, err)
			}
			back, err := DecodeMessage(h, body)
			if err != nil {
				t.Fatalf("%q %q mode %v: DecodeMessage: %v", d.contentType, d.data, mode, err)
			}
			if !sameEvent(back, &ev) {
				t.Fatalf("%q %q mode %v: came back as\n%+v\nwant\n%+v", d.contentType, d.data, mode, back, &ev)
			}
			req, err := NewRequest(t.Context(), "http://127.0.0.1/events", &ev, mode)
			if err != nil {
				t.Fatalf("NewRequest: %v", err)
			}
			events, batch, err := ReadRequest(req)
			if err != nil || batch || len(events) != 1 {
				t.Fatalf("%q %q mode %v: ReadRequest: %v, %v, %d events", d.contentType, d.data, mode, err, batch, len(events))
			}
			if !sameEvent(events[0], &ev) {
				t.Fatalf("%q %q mode %v over HTTP: came back as\n%+v\nwant\n%+v", d.contentType, d.data, mode, events[0], &ev)
			}
		}
	}
	req, err := NewBatchRequest(t.Context(), "http://127.0.0.1/events", []*envelope.Event{full, full})
	if err != nil {
		t.Fatal(err)
	}
	events, batch, err := ReadRequest(req)
	if err != nil || !batch || len(events) != 2 || !sameEvent(events[1], full) {
		t.Fatalf("batch: %v, %v, %d events", err, batch, len(events))
	}
}

// Binary mode percent-encodes what a header may not carry, upper case, as the NATS binding's
// example shows; decoding accepts lower case and quoted strings, and refuses bytes that are
// not UTF-8.
func TestBinaryHeadersArePercentEncoded(t *testing.T) {
	ev := &envelope.Event{ID: "1", Source: "/s", Type: "t", Subject: "Euro € 😀"}
	h, _, err := EncodeMessage(ev, Binary)
	if err != nil {
		t.Fatal(err)
	}
	if got := h["Ce-Subject"]; len(got) != 1 || got[0] != "Euro%20%E2%82%AC%20%F0%9F%98%80" {
		t.Fatalf("ce-subject = %q, want the specification's encoding", got)
	}
	if got := h["Ce-Specversion"]; len(got) != 1 || got[0] != "1.0" {
		t.Fatalf("ce-specversion = %q", got)
	}
	in := map[string][]string{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"},
		"ce-subject": {"euro%e2%82%ac"}, "CE-TENANT": {`"a \"b\""`}}
	back, err := DecodeMessage(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if back.Subject != "euro€" || back.Extensions["tenant"] != `a "b"` {
		t.Fatalf("decoded subject %q, tenant %q", back.Subject, back.Extensions["tenant"])
	}
	in["ce-subject"] = []string{"%C0%A0"}
	if _, err := DecodeMessage(in, nil); !errors.Is(err, ErrConversion) {
		t.Fatalf("an overlong encoding: %v, want ErrConversion", err)
	}
}

// What does not convert fails whole, with a typed error naming the attribute.
func TestBadInputIsATypedError(t *testing.T) {
	valid := func() *envelope.Event { return &envelope.Event{ID: "1", Source: "/s", Type: "t"} }
	cases := map[string]struct {
		ev   func() *envelope.Event
		attr string
	}{
		"extension name with a dash": {func() *envelope.Event { e := valid(); e.Extensions = map[string]string{"my-key": "v"}; return e }, "my-key"},
		"extension shadows a field":  {func() *envelope.Event { e := valid(); e.Extensions = map[string]string{"correlationid": "v"}; return e }, "correlationid"},
		"spec version 0.3":           {func() *envelope.Event { e := valid(); e.SpecVersion = "0.3"; return e }, "specversion"},
		"a typed value that is not": {func() *envelope.Event {
			e := valid()
			e.Extensions = map[string]string{"n": "x", TypesExtension: "n:Integer"}
			return e
		}, "n"},
		"an unknown type": {func() *envelope.Event {
			e := valid()
			e.Extensions = map[string]string{"n": "1", TypesExtension: "n:Float"}
			return e
		}, TypesExtension},
		"a type for nothing": {func() *envelope.Event {
			e := valid()
			e.Extensions = map[string]string{TypesExtension: "n:Integer"}
			return e
		}, TypesExtension},
	}
	for name, c := range cases {
		_, err := ToCloudEvent(c.ev())
		var ae *AttributeError
		if !errors.As(err, &ae) || ae.Name != c.attr || !errors.Is(err, ErrConversion) {
			t.Errorf("%s: %v, want an *AttributeError naming %q", name, err, c.attr)
		}
	}
	if _, err := ToCloudEvent(&envelope.Event{ID: "1", Source: "/s"}); !errors.Is(err, envelope.ErrInvalidEvent) {
		t.Errorf("no type: %v, want ErrInvalidEvent", err)
	}

	bad := map[string]map[string][]string{
		"no specversion":       {"ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}},
		"specversion 0.3":      {"ce-specversion": {"0.3"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}},
		"no id":                {"ce-specversion": {"1.0"}, "ce-source": {"/s"}, "ce-type": {"t"}},
		"a bad time":           {"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}, "ce-time": {"yesterday"}},
		"a bad attempt":        {"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}, "ce-tandemattempt": {"0"}},
		"a type for nothing":   {"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}, "ce-tandemtypes": {"a:Integer"}},
		"a header twice":       {"ce-specversion": {"1.0"}, "ce-id": {"1", "2"}, "ce-source": {"/s"}, "ce-type": {"t"}},
		"a lone percent sign":  {"ce-specversion": {"1.0"}, "ce-id": {"1%"}, "ce-source": {"/s"}, "ce-type": {"t"}},
		"structured, not JSON": {"Content-Type": {ContentTypeJSON}},
		"structured, any case": {"Content-Type": {"  Application/CloudEvents+JSON; charset=utf-8"}},
		"a source not a URI":   {"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"http://[::1"}, "ce-type": {"t"}},
		"a bad media type":     {"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}, "ce-datacontenttype": {"text/plain; =x"}},
	}
	for name, h := range bad {
		if _, err := DecodeMessage(h, []byte("{")); !errors.Is(err, ErrConversion) && !errors.Is(err, envelope.ErrInvalidEvent) {
			t.Errorf("%s: %v, want ErrConversion or ErrInvalidEvent", name, err)
		}
	}
	// A source and a media type that parsed are remembered: the next of each is accepted
	// unparsed only when it is the same string, and a bad one after it is still refused.
	for i := range 3 {
		good := map[string][]string{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/good"}, "ce-type": {"t"}, "ce-datacontenttype": {"text/plain"}}
		if _, err := DecodeMessage(good, nil); err != nil {
			t.Fatalf("round %d: a good event: %v", i, err)
		}
		for _, name := range []string{"a source not a URI", "a bad media type"} {
			if _, err := DecodeMessage(bad[name], nil); !errors.Is(err, ErrConversion) {
				t.Errorf("round %d: %s after a good event: %v, want ErrConversion", i, name, err)
			}
		}
	}
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/", strings.NewReader("hello"))
	req.Header.Set("Content-Type", "text/plain")
	if _, _, err := ReadRequest(req); !errors.Is(err, ErrConversion) {
		t.Errorf("a plain request: %v, want ErrConversion", err)
	}
	req, _ = http.NewRequest(http.MethodPost, "http://127.0.0.1/", strings.NewReader(`[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0"}]`))
	req.Header.Set("Content-Type", ContentTypeBatch)
	if _, _, err := ReadRequest(req); !errors.Is(err, ErrConversion) || !strings.Contains(err.Error(), "batch event 1") {
		t.Errorf("a batch with a bad second event: %v, want ErrConversion naming event 1", err)
	}
}

// sameEvent compares events as instants and values (a time's zone is not carried).
func sameEvent(a, b *envelope.Event) bool {
	x, y := *a, *b
	if !x.Time.Equal(y.Time) || !x.Deadline.Equal(y.Deadline) {
		return false
	}
	x.Time, y.Time, x.Deadline, y.Deadline = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if x.SpecVersion == "" {
		x.SpecVersion = "1.0"
	}
	if y.SpecVersion == "" {
		y.SpecVersion = "1.0"
	}
	if len(x.Data) == 0 && len(y.Data) == 0 {
		x.Data, y.Data = nil, nil
	}
	if len(x.Extensions) == 0 && len(y.Extensions) == 0 {
		x.Extensions, y.Extensions = nil, nil
	}
	return reflect.DeepEqual(x, y)
}
