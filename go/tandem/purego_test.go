//go:build !cgo || tandem_purego

package tandem

import (
	"errors"
	"strings"
	"testing"
)

func TestNewNamesTheLibraryItCannotLoad(t *testing.T) {
	_, err := New(Config{Library: "/no/such/dir/libtandem_native.so"})
	var le *LoadError
	if !errors.Is(err, ErrLibrary) || !errors.As(err, &le) {
		t.Fatalf("New = %v, want ErrLibrary with a *LoadError", err)
	}
	if !strings.Contains(err.Error(), "/no/such/dir/libtandem_native.so") {
		t.Fatalf("error %q does not name the file", err)
	}
}

func TestPuregoModeIsTheLinkMode(t *testing.T) {
	if LinkMode() != "purego" {
		t.Fatalf("LinkMode = %q in a purego build", LinkMode())
	}
}
