//go:build !cgo || tandem_purego

package abi

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// buildLibrary compiles C source into a shared library in dir: a real wrong library.
func buildLibrary(t *testing.T, dir, name, src string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("these tests build wrong libraries with gcc, which is missing: %v", err)
	}
	c := filepath.Join(dir, name+".c")
	so := filepath.Join(dir, name+".so")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return so
}

func TestLoadRefusesWrongLibrariesWithTypedErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name     string
		path     string
		want     error
		mentions []string
	}{
		{"missing file", filepath.Join(dir, "nope.so"), ErrLibraryNotFound, []string{"nope.so", "./build.sh"}},
		{"not a library", func() string {
			p := filepath.Join(dir, "garbage.so")
			os.WriteFile(p, []byte("not an ELF file"), 0o644)
			return p
		}(), ErrLibraryNotFound, []string{"garbage.so", "dlopen"}},
		{"another ABI version", buildLibrary(t, dir, "v999",
			"#include <stdint.h>\nuint32_t tandem_abi_version(void) { return 999; }\n"),
			ErrABIMismatch, []string{"v999.so", "999", "./build.sh"}},
		{"missing export", buildLibrary(t, dir, "partial",
			"#include <stdint.h>\nuint32_t tandem_abi_version(void) { return "+strconv.Itoa(int(Version))+"; }\n"+
				"uintptr_t tandem_last_error(char *b, uintptr_t n) { return 0; }\n"),
			ErrMissingSymbol, []string{"partial.so", "tandem_runtime_create", "./build.sh"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := open(c.path)
			var le *LoadError
			if !errors.Is(err, c.want) || !errors.As(err, &le) {
				t.Fatalf("Load = %v, want a *LoadError wrapping %v", err, c.want)
			}
			for _, m := range c.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if l != nil {
				t.Fatalf("a refused library was returned: %s", l.path)
			}
		})
	}
	real := loadReal(t)
	if l, err := Load(realLibrary(t)); err != nil || l != real {
		t.Fatalf("loading the same library again: %v, %p (want %p)", err, l, real)
	}
	if _, err := Load(cases[2].path); !errors.Is(err, ErrABIMismatch) {
		t.Fatalf("a library of another ABI beside the first: %v, want ErrABIMismatch", err)
	}
}

// A second library (another file: the next version of a process's handlers) loads beside the
// first, with runtimes of its own: each runtime's calls go through its own library.
func TestTwoLibrariesRunSideBySide(t *testing.T) {
	first := loadReal(t)
	copyPath := filepath.Join(t.TempDir(), "libtandem_next.so")
	b, err := os.ReadFile(realLibrary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o755); err != nil {
		t.Fatal(err)
	}
	second, err := Load(copyPath)
	if err != nil {
		t.Fatalf("the second library: %v", err)
	}
	if second == first || second.Path() != copyPath {
		t.Fatalf("the second library is the first (%s)", second.Path())
	}
	for _, lib := range []*Library{first, second} {
		cfg := Config{Workers: 1, SQCapacity: 8, CQCapacity: 4, ReqSlotSize: 1024, ReqSlots: 4, RepSlotSize: 1024, RepSlots: 4}
		h, _, err := Create(lib, &cfg)
		if err != nil {
			t.Fatalf("%s: Create: %v", lib.Path(), err)
		}
		if types, err := EventTypes(h); err != nil || len(types) == 0 {
			t.Fatalf("%s: EventTypes: %v, %v", lib.Path(), types, err)
		}
		Free(h)
	}
}
