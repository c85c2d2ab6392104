package abi

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// realLibrary is the cdylib ./build.sh builds, for the purego mode.
func realLibrary(t testing.TB) string {
	if p := os.Getenv(LibraryEnv); p != "" {
		return p
	}
	p, err := filepath.Abs("../../../target/release/" + LibraryFile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func loadReal(t testing.TB) *Library {
	t.Helper()
	l, err := Load(realLibrary(t))
	if err != nil {
		t.Fatalf("loading the library: %v", err)
	}
	return l
}

func TestCheckVersionRefusesAnotherABI(t *testing.T) {
	lib := loadReal(t)
	if err := lib.CheckVersion(); err != nil {
		t.Fatalf("matching library refused: %v", err)
	}
	expectedVersion = Version + 1
	defer func() { expectedVersion = Version }()
	err := lib.CheckVersion()
	if !errors.Is(err, ErrABIMismatch) {
		t.Fatalf("CheckVersion() = %v, want ErrABIMismatch", err)
	}
}

func TestCreateRejectsCallerOfAnotherABI(t *testing.T) {
	lib := loadReal(t)
	expectedVersion = Version + 7
	defer func() { expectedVersion = Version }()
	cfg := Config{Workers: 1, SQCapacity: 8, CQCapacity: 4, ReqSlotSize: 1024, ReqSlots: 4, RepSlotSize: 1024, RepSlots: 4}
	_, _, err := Create(lib, &cfg)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrABIMismatch) {
		t.Fatalf("Create = %v, want *Error wrapping ErrABIMismatch", err)
	}
	if e.Message == "" {
		t.Fatal("library gave no message for the mismatch")
	}
}

func TestCreateRejectsBadConfigWithMessage(t *testing.T) {
	lib := loadReal(t)
	cfg := Config{Workers: 1, SQCapacity: 6, CQCapacity: 4, ReqSlotSize: 1024, ReqSlots: 4, RepSlotSize: 1024, RepSlots: 4}
	_, _, err := Create(lib, &cfg)
	if !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("Create = %v, want ErrInvalidArg", err)
	}
	t.Logf("message: %v", err)
}

// A purego binary finds its library beside itself under the name its build gave
// (tandem build -purego sets it with -X); the configured path and $TANDEM_LIB come first.
func TestLibraryPathLooksBesideTheBinaryUnderItsBuildsName(t *testing.T) {
	t.Setenv(LibraryEnv, "")
	defer func(f string) { libraryFile = f }(libraryFile)
	libraryFile = "libhello_handlers.so"
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	if got, want := LibraryPath(""), filepath.Join(filepath.Dir(exe), "libhello_handlers.so"); got != want {
		t.Errorf("LibraryPath = %q, want %q", got, want)
	}
	t.Setenv(LibraryEnv, "/opt/lib/libx.so")
	if got := LibraryPath(""); got != "/opt/lib/libx.so" {
		t.Errorf("with $%s: %q", LibraryEnv, got)
	}
	if got := LibraryPath("/etc/liby.so"); got != "/etc/liby.so" {
		t.Errorf("configured: %q", got)
	}
}
