package tandem

import "github.com/tandemrt/tandem/go/internal/abi"

// LinkMode says how this binary reaches the Rust library: "cgo" (linked in, the default) or
// "purego" (CGO_ENABLED=0 or -tags tandem_purego: dlopen of libtandem_native.so). Safe for
// concurrent use: it is fixed at build time.
func LinkMode() string { return abi.Mode }
