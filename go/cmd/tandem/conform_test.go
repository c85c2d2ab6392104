package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var upperVectors = filepath.Join("..", "..", "..", "ffi", "testdata", "conformance", "upper.jsonl")

func conformCmd(args ...string) (int, string, string) {
	var out, errs bytes.Buffer
	code := conformMain(args, &out, &errs)
	return code, out.String(), errs.String()
}

func TestConformPassesDemoUpperInBothRuntimes(t *testing.T) {
	for _, route := range []string{"demo.upper", "demo.upper.go"} {
		code, out, errs := conformCmd("-route", route, "-vectors", upperVectors)
		if code != 0 || !strings.Contains(out, "on route "+route+": 12 cases, 12 passed, 0 failed") {
			t.Fatalf("tandem conform -route %s = %d\n%s%s", route, code, out, errs)
		}
	}
}

// A mismatch exits 1 and prints each failing case with what differs.
func TestConformFailsOnAMismatchPrintingTheCase(t *testing.T) {
	code, out, _ := conformCmd("-route", "demo.echo", "-vectors", upperVectors)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{"failed", `upper.jsonl:9: case "lower-case ascii"`, `reply: got  "hello" (5 bytes)`, `want "HELLO" (5 bytes)`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, `case "empty data"`) {
		t.Errorf("a passing case is printed as failing:\n%s", out)
	}
}

// Bad command lines exit 2; files and routes the run cannot use exit 1, saying where.
func TestConformRefusesBadInput(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte(`{"format": "tandem.conformance", "version": 1}`+"\n"+`{"case": "x", "event": {}, "expect": {"outcome": "maybe"}}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "-route and -vectors are required"},
		{[]string{"-route", "demo.upper"}, 2, "-route and -vectors are required"},
		{[]string{"-route", "demo.upper", "-vectors", upperVectors, "extra"}, 2, "nothing else"},
		{[]string{"-bogus"}, 2, "flag provided but not defined"},
		{[]string{"-route", "demo.upper", "-vectors", "no-such.jsonl"}, 1, "no-such.jsonl"},
		{[]string{"-route", "demo.upper", "-vectors", bad}, 1, bad + `:2 (case "x"): conform: unknown outcome "maybe"`},
		{[]string{"-route", "no.such", "-vectors", upperVectors}, 1, `route "no.such": tandem: no route for event type`},
	}
	for _, c := range cases {
		code, _, errs := conformCmd(c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("tandem conform %q = %d %q, want %d and %q", c.args, code, errs, c.code, c.msg)
		}
	}
}
