package cborx

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// shapes of a small versioned map: 0 v, 1 text, 2 int.
var testShapes = []Shape{Uint, Text, Int}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWalkRulesAreNotFxamackers holds the walk to its reason to exist: for each rule it
// checks by hand, fxamacker with Dec accepts an input that breaks the rule, and Decode
// rejects it. If a fxamacker release learns one of these, the test says which rule's
// hand-written check can go.
func TestWalkRulesAreNotFxamackers(t *testing.T) {
	type lenient struct {
		V    uint64 `cbor:"0,keyasint"`
		Text string `cbor:"1,keyasint"`
		Int  int64  `cbor:"2,keyasint"`
	}
	for _, tc := range []struct {
		rule, hex, kind string
	}{
		{"null for a typed field", "a2 0001 01f6", KindWrongType},
		{"tag on a known value", "a2 0001 02c105", KindWrongType},
		{"text key", "a2 0001 61780a", KindWrongType},
		{"negative key", "a2 0001 200a", KindWrongType},
		{"version first", "a2 0002 0105", KindUnsupportedVersion},
		{"a single tag is a level", "a2 0001 03" + strings.Repeat("81", 15) + "c100", KindTooDeep},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			in := mustHex(t, tc.hex)
			var l lenient
			if err := Dec.Unmarshal(in, &l); err != nil && tc.kind != KindUnsupportedVersion {
				t.Errorf("fxamacker now rejects it (%v): the hand-written check may be redundant", err)
			}
			_, err := Decode(in, testShapes, func(uint64, []byte) error { return nil })
			var e *Error
			if !errors.As(err, &e) || e.Kind != tc.kind {
				t.Fatalf("Decode = %v, want kind %s", err, tc.kind)
			}
		})
	}
}

func TestDecodeSkipsUnknownKeysAboveInt64(t *testing.T) {
	// fxamacker's struct decoder cannot hold the key; the walk skips it like any other.
	in := mustHex(t, "a3 0001 0161 78 1bffffffffffffffff 01")
	var got []uint64
	present, err := Decode(in, testShapes, func(k uint64, _ []byte) error { got = append(got, k); return nil })
	if err != nil || present != 0b11 || len(got) != 1 || got[0] != 1 {
		t.Fatalf("Decode = %b, %v, keys %v; want keys 0 and 1 present, 1 handed over", present, err, got)
	}
	// Distinct keys are distinct however close: either side of math.MaxInt64, equal as
	// float64, or equal in their low 63 bits. Rust's decoder holds the same.
	for _, keys := range []string{
		"1b7fffffffffffffff 00 1b8000000000000000 00",
		"1b8000000000000000 00 1b7fffffffffffffff 00",
		"1bffffffffffffffff 00 1bfffffffffffffffe 00",
		"13 00 1b8000000000000013 00",
	} {
		in := mustHex(t, "a3 0001"+keys)
		if _, err := Decode(in, testShapes, func(uint64, []byte) error { return nil }); err != nil {
			t.Errorf("keys %s: %v, want them skipped as distinct", keys, err)
		}
	}
	dup := mustHex(t, "a3 0001 1bffffffffffffffff 01 1bffffffffffffffff 02")
	if _, err := Decode(dup, testShapes, func(uint64, []byte) error { return nil }); err == nil ||
		AsError(err).Kind != KindDuplicateKey {
		t.Fatalf("repeated huge key: %v, want duplicate_key", err)
	}
}
