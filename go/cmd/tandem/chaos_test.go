package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A short run of every fault exits 0 with every invariant holding, and writes the report.
func TestChaosCommandRunsEveryFault(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := chaosMain([]string{"-duration", "4s", "-q", "-out", dir}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr (tail):\n%s", code, out.String(), tail(errOut.String(), 2000))
	}
	s := out.String()
	if strings.Contains(s, "BROKEN") || strings.Count(s, "\nok  ") != 9 {
		t.Fatalf("want 9 invariants holding:\n%s", s)
	}
	if !strings.Contains(s, ", 2 restarts") {
		t.Errorf("want two restarts in a short run:\n%s", s)
	}
	for _, kind := range []string{"go panic", "go goexit", "rust panic", "rust retry storm", "go overload Shed", "cancel at Call (rust)"} {
		if !strings.Contains(s, kind) {
			t.Errorf("the report does not list %q:\n%s", kind, s)
		}
	}
	for _, f := range []string{"timeline.svg", "report.md"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v (%d bytes)", f, err, len(b))
		}
	}
}

func TestChaosCommandRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-faults", "go-panic,meteor"},
		{"-profile", "zigzag"},
		{"-profile", "replay"},
		{"-duration", "0s"},
		{"-trace", filepath.Join(t.TempDir(), "missing.txt")},
	} {
		var out, errOut bytes.Buffer
		if code := chaosMain(args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr: %s)", args, code, errOut.String())
		}
		if errOut.Len() == 0 {
			t.Errorf("%q: nothing said on stderr", args)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
