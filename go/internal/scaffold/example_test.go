package scaffold

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite examples/hello from the templates")

// exampleFiles are the files of examples/hello compared with what `tandem new hello` writes.
var exampleFiles = []string{"go.mod", "main.go", "build.sh", ".gitignore", "handlers/Cargo.toml", "handlers/src/lib.rs"}

// examples/hello is the project `tandem new hello` writes, with the tandem of this repository
// at relative paths: it must not drift from the templates. go test -update rewrites it.
func TestExampleIsWhatNewWrites(t *testing.T) {
	root := repoRoot(t)
	example := filepath.Join(root, "examples", "hello")
	fresh := filepath.Join(t.TempDir(), "hello")
	if err := New(NewOptions{Path: fresh, Tandem: root}); err != nil {
		t.Fatal(err)
	}
	relative := strings.NewReplacer(
		"=> "+root, "=> ../..",
		`path = "`+filepath.Join(root, "rust", "tandem")+`"`, `path = "../../../rust/tandem"`,
	)
	for _, f := range append(exampleFiles, "go.sum", "handlers/Cargo.lock") {
		b, err := os.ReadFile(filepath.Join(fresh, f))
		if err != nil {
			t.Fatal(err)
		}
		want := relative.Replace(string(b))
		path := filepath.Join(example, filepath.FromSlash(f))
		resolved := strings.HasSuffix(f, ".sum") || strings.HasSuffix(f, ".lock")
		if *update {
			if _, err := os.Stat(path); err == nil && resolved {
				continue // the resolved files are cargo's and go's to keep, once written
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(filepath.Join(fresh, f))
			if err := os.WriteFile(path, []byte(want), st.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if resolved {
			continue // resolved, not templated: written by -update, not compared
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test ./go/internal/scaffold -run Example -args -update writes it)", err)
		}
		if string(got) != want {
			t.Errorf("examples/hello/%s differs from what tandem new writes (go test ./go/internal/scaffold -run Example -args -update):\n%s\nwant:\n%s", f, got, want)
		}
	}
}
