package envelope

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/tandemrt/tandem/go/internal/unchecked"
)

func addGoldenSeeds(f *testing.F, kind string) {
	for _, v := range loadGolden(f) {
		if v.Kind == kind {
			b, err := hex.DecodeString(v.Hex)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// FuzzDecodeEvent checks that DecodeEvent never panics, rejects only with a
// *DecodeError, and that whatever it accepts re-encodes (both encoders agreeing) to
// canonical bytes that decode to the same Event.
func FuzzDecodeEvent(f *testing.F) {
	addGoldenSeeds(f, "event")
	f.Fuzz(func(t *testing.T, in []byte) {
		ev, err := DecodeEvent(in)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Kind == "" {
				t.Fatalf("not a DecodeError: %v", err)
			}
			return
		}
		appended, err := AppendEvent(nil, ev)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		marshalled, err := MarshalEvent(ev)
		if err != nil || !bytes.Equal(appended, marshalled) {
			t.Fatalf("AppendEvent %x != MarshalEvent %x (%v)", appended, marshalled, err)
		}
		if EncodedEventSize(ev) != len(appended) {
			t.Fatalf("EncodedEventSize %d, encoded %d", EncodedEventSize(ev), len(appended))
		}
		back, err := DecodeEvent(appended)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if !eventsEqual(back, ev) {
			t.Fatalf("round trip changed the event:\n %+v\n %+v", ev, back)
		}
		var f unchecked.Fields
		indexed := unchecked.AppendEvent.(func([]byte, *Event, *unchecked.Fields) []byte)(nil, ev, &f)
		if !bytes.Equal(indexed, appended) {
			t.Fatalf("the indexing encoder wrote %x, AppendEvent %x", indexed, appended)
		}
		checkFields(t, ev, indexed, &f)
	})
}

// FuzzDecodeErrorEnvelope is FuzzDecodeEvent for error envelopes.
func FuzzDecodeErrorEnvelope(f *testing.F) {
	addGoldenSeeds(f, "error")
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := DecodeErrorEnvelope(in)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Kind == "" {
				t.Fatalf("not a DecodeError: %v", err)
			}
			return
		}
		appended, err := AppendErrorEnvelope(nil, e)
		if err != nil {
			t.Fatalf("decoded error envelope does not encode: %v", err)
		}
		marshalled, err := MarshalErrorEnvelope(e)
		if err != nil || !bytes.Equal(appended, marshalled) {
			t.Fatalf("AppendErrorEnvelope %x != MarshalErrorEnvelope %x (%v)", appended, marshalled, err)
		}
		back, err := DecodeErrorEnvelope(appended)
		if err != nil || !errorEnvelopesEqual(back, e) {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, e)
		}
	})
}
