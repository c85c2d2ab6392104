// Package demo holds Go twins of the demo handlers the bundled Rust library registers
// (rust/tandem-native): the same logic in the other runtime, routed under types of their own,
// for the tandem command, the migration guide and tests. The conformance vectors in
// ffi/testdata/conformance prove each twin identical to its Rust original, in both test
// suites.
package demo

import (
	"context"

	"github.com/tandemrt/tandem/go/tandem"
)

// UpperType is the event type Routes gives the Go twin of the Rust handler demo.upper.
const UpperType = "demo.upper.go"

// UpperName is the Go twin's handler name, in errors, logs and metrics.
const UpperName = "upper-go"

// Upper replies with the payload's ASCII letters upper-cased and every other byte as it is:
// letters outside ASCII, and bytes that are not UTF-8, pass unchanged, exactly as Rust's
// demo.upper (to_ascii_uppercase) does. It always acknowledges; an empty payload gets an
// empty reply. Safe for concurrent use.
var Upper tandem.Handler = tandem.HandlerFunc(upper)

func upper(_ context.Context, ev *tandem.Event) tandem.Result {
	out := make([]byte, len(ev.Data))
	for i, b := range ev.Data {
		if 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		}
		out[i] = b
	}
	return tandem.AckReply(out)
}

// Routes routes the Go twins on rt under their types (UpperType). Call it before Start.
func Routes(rt *tandem.Runtime) error {
	return rt.Handle(UpperType, UpperName, Upper)
}
