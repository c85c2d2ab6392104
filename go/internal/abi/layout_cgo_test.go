//go:build cgo && !tandem_purego

package abi

import "testing"

// The Go mirrors serve both link modes; cgo compiles the header, so it checks them.
func TestLayoutMatchesHeader(t *testing.T) {
	if bad := layoutMismatches(); len(bad) > 0 {
		t.Fatalf("Go mirrors disagree with ffi/tandem.h on: %v", bad)
	}
}
