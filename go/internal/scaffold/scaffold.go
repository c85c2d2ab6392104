// Package scaffold writes and builds a user's tandem project: `tandem new NAME` and
// `tandem build`. A project is a Go main package and a Rust crate (handlers/) that depends
// on the tandem crate of the same module version as the Go package; `tandem build` compiles
// the crate as a staticlib and links the Go program statically against it (or, -purego, as
// a cdylib beside a Go program built without cgo).
//
// Nothing here links the Rust core: the tandem command runs `new` and `build` built with
// CGO_ENABLED=0, before any library exists.
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"text/template"
)

// Module is the Go module path of tandem.
const Module = "github.com/tandemrt/tandem"

//go:embed template
var templates embed.FS

// NewOptions says where to write a project and which tandem it uses.
type NewOptions struct {
	// Path is the project's directory, created; its base name names the Go module, the
	// binary and the event types (letters, digits, '-' and '_', starting with a letter).
	Path string
	// Tandem is a local tandem module directory the project uses through a go.mod replace.
	// Empty: the version of the running tandem command (`go run ...@version new`), or, when
	// it was built from a clone, that clone as `go list -m` reports it in the working
	// directory.
	Tandem string
	// Log receives the commands run; nil discards them.
	Log io.Writer
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// data fills the templates.
type data struct {
	Name        string // the module, the binary, the event types' prefix
	Crate       string // the Rust package: <name>-handlers
	Lib         string // its library name: <name>_handlers
	Version     string // the tandem module version required
	Replace     string // the local tandem directory replacing it, or ""
	TandemCrate string // <module dir>/rust/tandem
}

// New writes a project into opt.Path: go.mod (requiring tandem, with the tandem command as
// a tool), main.go (a Go handler calling a Rust one), handlers/ (the Rust crate with one
// async handler, its Cargo.lock seeded with tandem's own), build.sh and .gitignore; then
// resolves the Go dependencies (go mod tidy). The directory must not exist or be empty.
func New(opt NewOptions) error {
	log := opt.Log
	if log == nil {
		log = io.Discard
	}
	dir, err := filepath.Abs(opt.Path)
	if err != nil {
		return err
	}
	name := filepath.Base(dir)
	if !validName.MatchString(name) {
		return fmt.Errorf("tandem new: %q is not a project name: use lower-case letters, digits, '-' and '_', starting with a letter", name)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("tandem new: %s exists and is not empty", dir)
	}
	d := data{Name: name, Crate: name + "-handlers", Lib: strings.ReplaceAll(name, "-", "_") + "_handlers"}
	switch {
	case opt.Tandem != "":
		d.Replace, err = filepath.Abs(opt.Tandem)
	case ownVersion() != "":
		d.Version = ownVersion()
	default:
		d.Replace, err = goOutput("", log, "list", "-m", "-f", "{{.Dir}}", Module)
		if err != nil {
			err = fmt.Errorf("tandem new: this tandem command is not a released version and the working directory is not in a tandem module: run `go run %s/go/cmd/tandem@VERSION new`, or pass -tandem DIR (%v)", Module, err)
		}
	}
	if err != nil {
		return err
	}
	if d.Replace != "" {
		// The version a replaced requirement conventionally names: the replace decides.
		d.Version = "v0.0.0-00010101000000-000000000000"
	}
	if err := os.MkdirAll(filepath.Join(dir, "handlers", "src"), 0o755); err != nil {
		return err
	}
	for _, f := range []string{"go.mod", "main.go", "build.sh", "gitignore"} {
		if err := write(dir, f, d); err != nil {
			return err
		}
	}
	// tidy resolves tandem (downloading it when not replaced), so the module's directory,
	// which the Rust crate depends on, is known only after it.
	fmt.Fprintf(log, "go mod tidy\n")
	if _, err := goOutput(dir, log, "mod", "tidy"); err != nil {
		return fmt.Errorf("tandem new: %w", err)
	}
	modDir, err := ModuleDir(dir, log)
	if err != nil {
		return err
	}
	d.TandemCrate = filepath.Join(modDir, "rust", "tandem")
	for _, f := range []string{"handlers/Cargo.toml", "handlers/src/lib.rs"} {
		if err := write(dir, f, d); err != nil {
			return err
		}
	}
	// Seeding the crate's lock file with tandem's own gives it the dependency versions
	// tandem was tested with; cargo adds the crate's own entry at its first build.
	lock, err := os.ReadFile(filepath.Join(modDir, "Cargo.lock"))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "handlers", "Cargo.lock"), lock, 0o644)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	fmt.Fprintf(log, "wrote %s: build it with ./build.sh (or ./build.sh -purego), run ./%s\n", dir, name)
	return nil
}

// write renders template/<f>.tmpl into dir; "gitignore" becomes .gitignore, build.sh is
// executable.
func write(dir, f string, d data) error {
	t, err := template.ParseFS(templates, path.Join("template", f+".tmpl"))
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return err
	}
	out, mode := f, fs.FileMode(0o644)
	switch f {
	case "gitignore":
		out = ".gitignore"
	case "build.sh":
		mode = 0o755
	}
	return os.WriteFile(filepath.Join(dir, filepath.FromSlash(out)), b.Bytes(), mode)
}

// ownVersion is the tandem module version this command was built from, or "" for a
// build from a clone.
func ownVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, m := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
		if m.Path == Module && m.Version != "" && m.Version != "(devel)" {
			if m.Replace != nil {
				return ""
			}
			return m.Version
		}
	}
	return ""
}

// ModuleDir is the directory of the tandem module the Go project in dir uses, as
// `go list -m` reports it: the module cache's copy, or the replacement.
func ModuleDir(dir string, log io.Writer) (string, error) {
	d, err := goOutput(dir, log, "list", "-m", "-f", "{{if .Replace}}{{.Replace.Dir}}{{else}}{{.Dir}}{{end}}", Module)
	if err != nil {
		return "", fmt.Errorf("finding the tandem module: %w", err)
	}
	if d == "" {
		return "", fmt.Errorf("finding the tandem module: go list -m reports no directory for %s: run go mod download", Module)
	}
	if !filepath.IsAbs(d) {
		d = filepath.Join(dir, d)
	}
	return d, nil
}

// goOutput runs the go command in dir and returns its trimmed standard output.
func goOutput(dir string, log io.Writer, args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = io.MultiWriter(&stderr, log)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
