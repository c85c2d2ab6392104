package conform

import (
	"testing"

	"github.com/tandemrt/tandem/go/tandem"
)

// Run is Check for a Go test: it loads the vector file at path and runs each case against
// route on rt, a running runtime, as a subtest named after the case, which fails with the
// case's Diff when the handler's outcome differs. A file that cannot be loaded, or a run that
// cannot judge the handler (see Check), fails t at once. Call it from the test's goroutine.
func Run(t *testing.T, rt *tandem.Runtime, route, path string) {
	t.Helper()
	v, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	RunVectors(t, rt, route, v)
}

// RunVectors is Run with vectors already loaded.
func RunVectors(t *testing.T, rt *tandem.Runtime, route string, v *Vectors) {
	t.Helper()
	if len(v.Cases) == 0 {
		t.Fatalf("%s: no cases", v.File)
	}
	for i := range v.Cases {
		c := &v.Cases[i]
		var abort error
		t.Run(c.Name, func(t *testing.T) {
			t.Helper()
			res, err := checkCase(t.Context(), rt, route, v.File, c)
			switch {
			case err != nil:
				abort = err
				t.Fatal(err)
			case !res.Passed():
				t.Error(res.Diff(v.File))
			}
		})
		if abort != nil {
			t.Fatalf("conformance run stopped: %v", abort)
		}
	}
}
