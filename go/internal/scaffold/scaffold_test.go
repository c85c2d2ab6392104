package scaffold

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot is this module's directory: the tandem a scaffolded project replaces in tests.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// A new project depends on the tandem of the Go side: its crate's tandem path is the
// module directory go list reports, and go.mod has the tandem command as a tool.
func TestNewWritesAProjectOnTheGoModulesTandem(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hello-svc")
	if err := New(NewOptions{Path: dir, Tandem: repoRoot(t)}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "go.sum", "main.go", "build.sh", ".gitignore", "handlers/Cargo.toml", "handlers/Cargo.lock", "handlers/src/lib.rs"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	gomod := read("go.mod")
	for _, want := range []string{"module hello-svc", "tool " + Module + "/go/cmd/tandem", "replace " + Module + " => " + repoRoot(t)} {
		if !strings.Contains(gomod, want) {
			t.Errorf("go.mod lacks %q:\n%s", want, gomod)
		}
	}
	cargo := read("handlers/Cargo.toml")
	if want := `tandem = { path = "` + filepath.Join(repoRoot(t), "rust", "tandem") + `", features = ["exports"] }`; !strings.Contains(cargo, want) {
		t.Errorf("Cargo.toml lacks %q:\n%s", want, cargo)
	}
	if !strings.Contains(cargo, `name = "hello-svc-handlers"`) {
		t.Errorf("Cargo.toml names another package:\n%s", cargo)
	}
	if lib := read("handlers/src/lib.rs"); !strings.Contains(lib, `reg.register("hello-svc.shout"`) || !strings.Contains(lib, "tandem::register_handlers!(register)") {
		t.Errorf("lib.rs does not register hello-svc.shout:\n%s", lib)
	}
	if st, _ := os.Stat(filepath.Join(dir, "build.sh")); st == nil || st.Mode()&0o111 == 0 {
		t.Error("build.sh is not executable")
	}
	if got, err := ModuleDir(dir, nil); err != nil || got != repoRoot(t) {
		t.Errorf("ModuleDir = %q, %v; want %q", got, err, repoRoot(t))
	}
}

func TestNewRefusesABadNameAndAFullDirectory(t *testing.T) {
	if err := New(NewOptions{Path: filepath.Join(t.TempDir(), "Hello World"), Tandem: repoRoot(t)}); err == nil || !strings.Contains(err.Error(), "not a project name") {
		t.Errorf("bad name: %v", err)
	}
	full := filepath.Join(t.TempDir(), "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := New(NewOptions{Path: full, Tandem: repoRoot(t)}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("full directory: %v", err)
	}
}

// When go.mod moves to another tandem, the next build points the crate at it: the Go and
// the Rust halves cannot drift apart.
func TestSyncTandemPathFollowsTheGoModule(t *testing.T) {
	manifest := filepath.Join(t.TempDir(), "Cargo.toml")
	orig := "[dependencies]\ntandem = { path = \"/old/tandem@v0.1.0/rust/tandem\", features = [\"exports\"] }\ntokio = \"1\"\n"
	if err := os.WriteFile(manifest, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if err := syncTandemPath(manifest, "/new/tandem@v0.2.0/rust/tandem", &log); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(manifest)
	want := "[dependencies]\ntandem = { path = \"/new/tandem@v0.2.0/rust/tandem\", features = [\"exports\"] }\ntokio = \"1\"\n"
	if string(b) != want {
		t.Errorf("Cargo.toml:\n%s\nwant:\n%s", b, want)
	}
	if !strings.Contains(log.String(), "v0.2.0") {
		t.Errorf("no word of the change: %q", log.String())
	}

	if err := os.WriteFile(manifest, []byte("[dependencies]\ntandem = \"0.1\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syncTandemPath(manifest, "/new/rust/tandem", nil); err == nil || !strings.Contains(err.Error(), "tandem crate of the Go module") {
		t.Errorf("a registry dependency on tandem: %v", err)
	}
}

// The static link's glibc warnings are dropped with their header; anything else passes.
func TestStaticWarningsKeepsRealErrors(t *testing.T) {
	var out bytes.Buffer
	sw := &staticWarnings{w: &out}
	sw.Write([]byte("# hello\n/usr/bin/ld: x.o: in function `f':\nwarning: Using 'getaddrinfo' in statically linked applications requires at runtime the shared libraries\n"))
	sw.flush()
	if out.Len() != 0 {
		t.Errorf("warnings passed: %q", out.String())
	}
	sw.Write([]byte("# hello\nundefined reference to `g'\ncollect2: error"))
	sw.flush()
	if want := "# hello\nundefined reference to `g'\ncollect2: error\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

// The link flags name the library's content: they change when its bytes do (so that Go's
// build cache, which does not read the library, links a binary afresh), and only then; a
// library that is not there is an error, not flags that would link nothing.
func TestLinkFlagsNameTheLibrarysContent(t *testing.T) {
	t.Setenv("CGO_CFLAGS", "")
	t.Setenv("CGO_LDFLAGS", "-lextra")
	lib := filepath.Join(t.TempDir(), "libhello_handlers.a")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(lib, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	flags := func() string {
		t.Helper()
		cflags, ldflags, err := LinkFlags(lib)
		if err != nil {
			t.Fatal(err)
		}
		if cflags != "-DTANDEM_LINKED" {
			t.Fatalf("CGO_CFLAGS %q", cflags)
		}
		dir := filepath.Dir(lib)
		if !strings.HasPrefix(ldflags, "-L"+dir+" -l:libhello_handlers.a -L"+filepath.Join(dir, "tandem-library-")) ||
			!strings.HasSuffix(ldflags, " -lextra") {
			t.Fatalf("CGO_LDFLAGS %q", ldflags)
		}
		return ldflags
	}
	write("one build")
	first := flags()
	if again := flags(); again != first {
		t.Fatalf("the same library named twice: %q, then %q", first, again)
	}
	write("another build")
	if changed := flags(); changed == first {
		t.Fatalf("a changed library keeps its flags: %q", changed)
	}
	if _, _, err := LinkFlags(lib + ".missing"); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing library: %v", err)
	}
}
