package demo_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/conform"
	"github.com/tandemrt/tandem/go/tandem/demo"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

func TestMain(m *testing.M) {
	// The purego mode loads the cdylib ./build.sh builds; the cgo mode ignores this.
	if os.Getenv("TANDEM_LIB") == "" {
		if p, err := filepath.Abs("../../../target/release/libtandem_native.so"); err == nil {
			os.Setenv("TANDEM_LIB", p)
		}
	}
	goleak.VerifyTestMain(m)
}

// upperVectors is the one vector file both test suites run against demo.upper.
var upperVectors = filepath.Join("..", "..", "..", "ffi", "testdata", "conformance", "upper.jsonl")

func running(t *testing.T) *tandem.Runtime {
	t.Helper()
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if err := demo.Routes(rt); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	return rt
}

// The Go twin and the Rust original pass the same vectors: they are the same handler.
func TestConformanceUpperInBothRuntimes(t *testing.T) {
	rt := running(t)
	t.Run("rust", func(t *testing.T) { conform.Run(t, rt, "demo.upper", upperVectors) })
	t.Run("go", func(t *testing.T) { conform.Run(t, rt, demo.UpperType, upperVectors) })
}

// The vectors' largest event is near the limit a Rust route allows, and within it.
func TestUpperVectorsReachTheEventSizeLimit(t *testing.T) {
	v, err := conform.Load(upperVectors)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 64 << 10 // Config.MaxEventSize's default
	largest := 0
	for _, c := range v.Cases {
		ev := c.Event
		ev.Type = "demo.upper"
		largest = max(largest, envelope.EncodedEventSize(&ev))
	}
	if largest > limit || largest < limit-256 {
		t.Fatalf("the largest event is %d bytes encoded; want within 256 bytes under %d", largest, limit)
	}
}

// A handler that differs from demo.upper by one letter fails the vectors: they tell the
// twins apart.
func TestUpperVectorsCatchAUnicodeUpper(t *testing.T) {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	unicodeUpper := tandem.HandlerFunc(func(_ context.Context, ev *tandem.Event) tandem.Result {
		return tandem.AckReply(bytesToUpper(ev.Data))
	})
	if err := rt.Handle("upper.unicode", "unicode-upper", unicodeUpper); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	rep, err := conform.CheckFile(t.Context(), rt, "upper.unicode", upperVectors)
	if err != nil {
		t.Fatal(err)
	}
	failed := map[string]bool{}
	for _, f := range rep.Failures() {
		failed[f.Case.Name] = true
	}
	for _, name := range []string{"latin letters outside ascii stay", "greek, cyrillic, emoji stay", "bytes that are not utf-8 pass unchanged", "every byte value"} {
		if !failed[name] {
			t.Errorf("case %q passed a Unicode upper-caser", name)
		}
	}
	if failed["lower-case ascii"] {
		t.Errorf("ASCII cases failed:\n%s", rep)
	}
}

// bytesToUpper is what a Go programmer reaches for first: Unicode upper-casing.
func bytesToUpper(b []byte) []byte { return []byte(strings.ToUpper(string(b))) }
