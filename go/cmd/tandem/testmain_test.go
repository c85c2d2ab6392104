package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain points the purego mode at the cdylib ./build.sh builds (the cgo mode ignores it).
func TestMain(m *testing.M) {
	if os.Getenv("TANDEM_LIB") == "" {
		if p, err := filepath.Abs("../../../target/release/libtandem_native.so"); err == nil {
			os.Setenv("TANDEM_LIB", p)
		}
	}
	os.Exit(m.Run())
}
