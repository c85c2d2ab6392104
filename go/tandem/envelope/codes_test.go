package envelope

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tandemrt/tandem/go/internal/cborx"
)

// cddlCodes returns the tandem-code rule of ffi/envelope.cddl: its alternatives in order.
func cddlCodes(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "ffi", "envelope.cddl"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "\ntandem-code =")
	if start < 0 {
		t.Fatal("ffi/envelope.cddl has no tandem-code rule")
	}
	var codes []string
	alt := regexp.MustCompile(`^(?:tandem-code =|\s+/)\s+"([^"]*)"`)
	for _, line := range strings.Split(text[start+1:], "\n") {
		m := alt.FindStringSubmatch(line)
		if m == nil {
			break // the rule ends at its first line that is not an alternative
		}
		codes = append(codes, m[1])
	}
	return codes
}

func TestCodesMatchCDDL(t *testing.T) {
	want := cddlCodes(t)
	if got := Codes(); !slices.Equal(got, want) {
		t.Fatalf("Codes() = %q\nffi/envelope.cddl tandem-code = %q", got, want)
	}
}

func TestCodesReturnsACopy(t *testing.T) {
	Codes()[0] = "changed"
	if Codes()[0] != CodeHandler {
		t.Fatal("changing the result of Codes changed the vocabulary")
	}
}

// TestCodesHaveGoldenVectors: every code of the vocabulary crosses the boundary in a
// vector both suites run.
func TestCodesHaveGoldenVectors(t *testing.T) {
	covered := map[string]bool{}
	for _, v := range loadGolden(t) {
		if v.Kind == "error" && v.Valid && v.Canonical {
			covered[v.Expect.Code] = true
		}
	}
	for _, c := range Codes() {
		if !covered[c] {
			t.Errorf("no canonical golden error vector has code %q", c)
		}
	}
}

func TestCustomCodeRoundTrips(t *testing.T) {
	in := &ErrorEnvelope{Code: "payment_declined", Message: "card expired"}
	b, err := AppendErrorEnvelope(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeErrorEnvelope(b)
	if err != nil || out.Code != in.Code {
		t.Fatalf("DecodeErrorEnvelope = %+v, %v; want the code passed through", out, err)
	}
}

// TestKindsMatchCborx: the kinds the shared decoder (go/internal/cborx) gives are this
// package's, spelled the same.
func TestKindsMatchCborx(t *testing.T) {
	for kind, internal := range map[DecodeErrorKind]string{
		KindTruncated: cborx.KindTruncated, KindTrailingBytes: cborx.KindTrailingBytes,
		KindNotMap: cborx.KindNotMap, KindIndefiniteLength: cborx.KindIndefiniteLength,
		KindDuplicateKey: cborx.KindDuplicateKey, KindMissingField: cborx.KindMissingField,
		KindWrongType: cborx.KindWrongType, KindUnsupportedVersion: cborx.KindUnsupportedVersion,
		KindInvalidUTF8: cborx.KindInvalidUTF8, KindTooDeep: cborx.KindTooDeep,
		KindMalformed: cborx.KindMalformed,
	} {
		if string(kind) != internal {
			t.Errorf("envelope kind %q, cborx kind %q", kind, internal)
		}
	}
}
