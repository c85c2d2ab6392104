package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -trace writes one order chain with spans from both runtimes, correctly nested.
func TestDemoWritesOneChainAcrossBothRuntimes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "trace.txt")
	var out bytes.Buffer
	args := []string{"-events", "300", "-concurrency", "4", "-http", "127.0.0.1:0",
		"-dlq", filepath.Join(dir, "dlq.cbor"), "-trace", path}
	if err := run(args, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "/metrics, /healthz, /readyz were served on 127.0.0.1:") {
		t.Errorf("report does not say where metrics were served:\n%s", out.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{"publish order.placed", "process order.placed", "publish demo.upper", "process demo.upper", "publish order.priced", "process order.priced"}
	if len(lines) != 1+len(want) {
		t.Fatalf("trace:\n%s", b)
	}
	prevIndent := -1
	for i, name := range want {
		line := lines[i+1]
		if !strings.Contains(line, name) {
			t.Fatalf("line %d = %q, want %q", i+1, line, name)
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if name == "process demo.upper" && !strings.Contains(line, " rust ") {
			t.Errorf("the Rust delivery is not marked rust: %q", line)
		}
		if i < 4 && indent <= prevIndent {
			t.Errorf("%q is not nested under the line before:\n%s", name, b)
		}
		prevIndent = indent
	}
}
