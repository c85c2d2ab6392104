package cloudevents

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// viaSDK reads a binary-mode message the long way, through the SDK's event and
// FromCloudEvent: the reference decodeBinary must agree with.
func viaSDK(header map[string][]string, body []byte) (*envelope.Event, error) {
	ce := event.New(event.CloudEventsVersionV1)
	ce.Context = &event.EventContextV1{}
	seen := map[string]bool{}
	for name, values := range header {
		if len(name) <= len(HeaderPrefix) || !strings.EqualFold(name[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		attr := strings.ToLower(name[len(HeaderPrefix):])
		if len(values) != 1 || seen[attr] {
			return nil, &AttributeError{Name: attr, Reason: "more than one header carries it"}
		}
		seen[attr] = true
		value, err := percentDecode(unquote(values[0]))
		if err != nil {
			return nil, &AttributeError{Name: attr, Reason: err.Error()}
		}
		fail := func(err error) error { return &AttributeError{Name: attr, Reason: err.Error()} }
		switch attr {
		case "specversion":
			if value != event.CloudEventsVersionV1 {
				return nil, fail(fmt.Errorf("%q is not 1.0", value))
			}
		case "id":
			ce.SetID(value)
		case "source":
			ce.SetSource(value)
		case "type":
			ce.SetType(value)
		case "subject":
			ce.SetSubject(value)
		case "datacontenttype":
			ce.SetDataContentType(value)
		case "dataschema":
			if err := ce.Context.SetDataSchema(value); err != nil {
				return nil, fail(err)
			}
		case "time":
			t, err := types.ParseTime(value)
			if err != nil {
				return nil, fail(err)
			}
			ce.SetTime(t)
		default:
			if err := ce.Context.SetExtension(attr, value); err != nil {
				return nil, fail(err)
			}
		}
	}
	if !seen["specversion"] {
		return nil, &AttributeError{Name: "specversion", Reason: "missing"}
	}
	if len(body) > 0 {
		ce.DataEncoded = bytes.Clone(body)
	}
	if err := ce.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConversion, err)
	}
	return FromCloudEvent(&ce)
}

// The direct reading of binary mode accepts what the SDK's event accepts, refuses what it
// refuses, and reads the same event: over valid messages of every attribute and over each
// kind of malformed one.
func TestBinaryDecodingAgreesWithTheSDK(t *testing.T) {
	base := func() map[string][]string {
		return map[string][]string{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}}
	}
	with := func(k, v string) map[string][]string { h := base(); h[k] = []string{v}; return h }
	without := func(k string) map[string][]string { h := base(); delete(h, k); return h }
	full := base()
	for k, v := range map[string]string{"Ce-Subject": "s%20x", "Ce-Datacontenttype": "application/json; charset=utf-8",
		"Ce-Dataschema": "https://example.com/s", "Ce-Time": "2026-11-28T12:00:00.123456789Z", "Ce-Correlationid": "c",
		"Ce-Causationid": "k", "Ce-Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Ce-Tracestate": "a=b", "Ce-Idempotencykey": "i", "Ce-Partitionkey": "p", "Ce-Tandemattempt": "3",
		"Ce-Tandemdeadline": "2026-11-28T12:00:05Z", "Ce-Tenant": "acme", "Ce-Count": "007",
		"Ce-Flag": "true", "Ce-Tandemtypes": "flag:Boolean,count:Integer", "Content-Type": "text/plain"} {
		full[k] = []string{v}
	}
	cases := map[string]map[string][]string{
		"minimal":                base(),
		"every attribute":        full,
		"no specversion":         without("Ce-Specversion"),
		"specversion 0.3":        with("Ce-Specversion", "0.3"),
		"no id":                  without("Ce-Id"),
		"blank id":               with("Ce-Id", "%20"),
		"no source":              without("Ce-Source"),
		"no type":                without("Ce-Type"),
		"blank subject (none)":   with("Ce-Subject", "%20"),
		"bad media type":         with("Ce-Datacontenttype", "not a/type/at all"),
		"relative data schema":   with("Ce-Dataschema", "/relative"),
		"bad time":               with("Ce-Time", "yesterday"),
		"attempt 0":              with("Ce-Tandemattempt", "0"),
		"bad deadline":           with("Ce-Tandemdeadline", "soon"),
		"extension with a dash":  with("Ce-My-Key", "v"),
		"a long extension name":  with("Ce-"+strings.Repeat("a", 40), "v"),
		"text that is not UTF-8": with("Ce-Tenant", "%FF"),
		"an unknown type":        with("Ce-Tandemtypes", "tenant:Float"),
		"a type for nothing":     with("Ce-Tandemtypes", "nothing:Integer"),
	}
	// One Event takes every case in turn, as a source reuses one: nothing of a case may
	// show in the next.
	reused := &envelope.Event{}
	for name, h := range cases {
		body := []byte("data")
		gotErr := DecodeMessageInto(reused, h, body)
		got := reused
		want, wantErr := viaSDK(h, body)
		if (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s: direct %v, through the SDK %v", name, gotErr, wantErr)
			continue
		}
		if gotErr != nil {
			if !errors.Is(gotErr, ErrConversion) && !errors.Is(gotErr, envelope.ErrInvalidEvent) {
				t.Errorf("%s: %v is not a typed error", name, gotErr)
			}
			continue
		}
		if !sameEvent(got, want) {
			t.Errorf("%s: direct\n%+v\nthrough the SDK\n%+v", name, got, want)
		}
	}
}

func BenchmarkDecodeBinary(b *testing.B) {
	h, body, err := EncodeMessage(&envelope.Event{ID: "1", Source: "/bench", Type: "demo.noop", CorrelationID: "c",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Data: make([]byte, 64)}, Binary)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := DecodeMessage(h, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("into", func(b *testing.B) {
		b.ReportAllocs()
		var ev envelope.Event
		for range b.N {
			if err := DecodeMessageInto(&ev, h, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := viaSDK(h, body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
