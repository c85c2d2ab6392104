package scaffold

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// BuildOptions says which project to build and how.
type BuildOptions struct {
	// Dir is the project's directory (go.mod and handlers/Cargo.toml); empty: the working
	// directory.
	Dir string
	// Output is the binary's path; empty: the project's name, in Dir.
	Output string
	// Purego builds the crate as a cdylib, copied beside the binary, and the Go program
	// without cgo; otherwise the crate is a staticlib linked into one static binary.
	Purego bool
	// EnvOnly builds the crate and, instead of the Go program, writes to Stdout the shell
	// exports that make a plain `go build`, `go vet` or `go test` of the project link it
	// (eval "$(go tool tandem build -env)").
	EnvOnly bool
	// Stdout and Stderr receive the tools' output; nil discards it.
	Stdout, Stderr io.Writer
}

// Build builds a project `tandem new` wrote: it points the crate's tandem dependency at the
// module directory the Go side uses (so the two halves are the same version), runs
// `cargo build --release` on handlers/, then `go build` linked against the library cargo
// produced. It returns the binary's path.
func Build(opt BuildOptions) (string, error) {
	stdout, stderr := opt.Stdout, opt.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	dir, err := filepath.Abs(opt.Dir)
	if err != nil {
		return "", err
	}
	manifest := filepath.Join(dir, "handlers", "Cargo.toml")
	if _, err := os.Stat(manifest); err != nil {
		return "", fmt.Errorf("tandem build: %s: run it in a project `tandem new` wrote (its Rust crate is handlers/)", err)
	}
	// With EnvOnly, stdout is for the exports alone.
	progress := stdout
	if opt.EnvOnly {
		progress = stderr
	}
	modDir, err := ModuleDir(dir, stderr)
	if err != nil {
		return "", fmt.Errorf("tandem build: %w", err)
	}
	if err := syncTandemPath(manifest, filepath.Join(modDir, "rust", "tandem"), progress); err != nil {
		return "", fmt.Errorf("tandem build: %w", err)
	}
	kind := "staticlib"
	if opt.Purego {
		kind = "cdylib"
	}
	lib, err := cargoBuild(manifest, kind, progress, stderr)
	if err != nil {
		return "", fmt.Errorf("tandem build: %w", err)
	}
	cflags, ldflags, err := LinkFlags(lib)
	if err != nil {
		return "", fmt.Errorf("tandem build: %w", err)
	}
	if opt.EnvOnly {
		if opt.Purego {
			fmt.Fprintf(stdout, "export CGO_ENABLED=0\nexport %s=%s\n", "TANDEM_LIB", shellQuote(lib))
		} else {
			fmt.Fprintf(stdout, "export CGO_CFLAGS=%s\nexport CGO_LDFLAGS=%s\n", shellQuote(cflags), shellQuote(ldflags))
		}
		return lib, nil
	}
	out := opt.Output
	if out == "" {
		out = filepath.Base(dir)
	}
	if !filepath.IsAbs(out) {
		out = filepath.Join(dir, out)
	}
	cmd := exec.Command("go", "build")
	cmd.Dir = dir
	cmd.Stdout = stdout
	if opt.Purego {
		// The binary looks for the library beside itself under its own name.
		cmd.Args = append(cmd.Args, "-ldflags", "-X "+Module+"/go/internal/abi.libraryFile="+filepath.Base(lib))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stderr = stderr
	} else {
		cmd.Args = append(cmd.Args, "-tags", "netgo,osusergo", "-ldflags", `-linkmode external -extldflags "-static"`)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS="+cflags, "CGO_LDFLAGS="+ldflags)
		cmd.Stderr = &staticWarnings{w: stderr}
	}
	cmd.Args = append(cmd.Args, "-o", out, ".")
	fmt.Fprintf(stdout, "go build -o %s (%s)\n", out, map[bool]string{false: "cgo, static", true: "purego"}[opt.Purego])
	err = cmd.Run()
	if sw, ok := cmd.Stderr.(*staticWarnings); ok {
		sw.flush()
	}
	if err != nil {
		if !opt.Purego {
			return "", fmt.Errorf("tandem build: go build: %w (a static binary needs the static C library: Debian apt-get install libc6-dev; or build with -purego)", err)
		}
		return "", fmt.Errorf("tandem build: go build: %w", err)
	}
	if opt.Purego {
		if err := copyFile(lib, filepath.Join(filepath.Dir(out), filepath.Base(lib))); err != nil {
			return "", fmt.Errorf("tandem build: %w", err)
		}
	}
	return out, nil
}

// LinkFlags returns CGO_CFLAGS and CGO_LDFLAGS that link the staticlib lib into a cgo build
// of the tandem Go package, added to the environment's own.
//
// The flags name the library's content too: Go's build cache does not read a library the
// flags link (go.dev/issue/24355), so a `go build -o` over a binary it built before, or a
// `go run`, would otherwise keep the handlers the crate had then. The content travels as a
// search directory that does not exist, which the linker skips: it changes the flags, and so
// what Go's cache keys the package and the link on, whenever the library changes, and nothing
// else.
func LinkFlags(lib string) (cflags, ldflags string, err error) {
	sum, err := fileSum(lib)
	if err != nil {
		return "", "", err
	}
	dir := filepath.Dir(lib)
	cflags = strings.TrimSpace(os.Getenv("CGO_CFLAGS") + " -DTANDEM_LINKED")
	ldflags = strings.TrimSpace("-L" + dir + " -l:" + filepath.Base(lib) + " -L" +
		filepath.Join(dir, "tandem-library-"+sum) + " " + os.Getenv("CGO_LDFLAGS"))
	return cflags, ldflags, nil
}

// fileSum is the first 16 bytes of the file's SHA-256, in hex.
func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tandemDep matches the crate's dependency line on tandem, capturing its path.
var tandemDep = regexp.MustCompile(`(?m)^(tandem\s*=\s*\{[^}\n]*\bpath\s*=\s*")([^"\n]*)(")`)

// syncTandemPath points the crate's tandem dependency at crate (the tandem crate of the Go
// side's module), rewriting the line when go.mod moved to another tandem version.
func syncTandemPath(manifest, crate string, log io.Writer) error {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return err
	}
	m := tandemDep.FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("%s has no `tandem = { path = \"...\" }` dependency: the Rust crate must use the tandem crate of the Go module (%s)", manifest, crate)
	}
	// A relative path (as in the repository's examples/) counts where it points.
	cur := string(m[2])
	if !filepath.IsAbs(cur) {
		cur = filepath.Join(filepath.Dir(manifest), cur)
	}
	if filepath.Clean(cur) == filepath.Clean(crate) {
		return nil
	}
	fmt.Fprintf(log, "handlers/Cargo.toml: tandem now at %s (the Go module's)\n", crate)
	b = tandemDep.ReplaceAllLiteral(b, append(append(append([]byte{}, m[1]...), crate...), m[3]...))
	return os.WriteFile(manifest, b, 0o644)
}

// cargoBuild builds the crate in release and returns the path of its library of kind
// (staticlib or cdylib), as cargo reports it.
func cargoBuild(manifest, kind string, stdout, stderr io.Writer) (string, error) {
	fmt.Fprintf(stdout, "cargo build --release --manifest-path %s\n", manifest)
	cmd := exec.Command("cargo", "build", "--release", "--manifest-path", manifest, "--message-format=json-render-diagnostics")
	cmd.Stderr = stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("cargo: %w (install Rust: https://rustup.rs)", err)
	}
	ext := map[string]string{"staticlib": ".a", "cdylib": ".so"}[kind]
	var lib string
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var msg struct {
			Reason   string `json:"reason"`
			Manifest string `json:"manifest_path"`
			Target   struct {
				Kind []string `json:"kind"`
			} `json:"target"`
			Filenames []string `json:"filenames"`
		}
		if json.Unmarshal(sc.Bytes(), &msg) != nil || msg.Reason != "compiler-artifact" {
			continue
		}
		if filepath.Clean(msg.Manifest) != filepath.Clean(manifest) {
			continue
		}
		for _, f := range msg.Filenames {
			if strings.HasSuffix(f, ext) {
				lib = f
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("cargo build: %w", err)
	}
	if lib == "" {
		return "", fmt.Errorf("cargo built no %s of %s: its [lib] crate-type must include %q", kind, manifest, kind)
	}
	return lib, nil
}

// staticWarnings passes go build's stderr on without the linker's warnings that glibc's
// getaddrinfo and getpwnam want the shared libc at run time (a static binary built with
// netgo and osusergo never calls them), and without the `# <package>` header above them
// when nothing else follows it.
type staticWarnings struct {
	w      io.Writer
	buf    []byte
	header string
}

func (s *staticWarnings) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		s.line(string(s.buf[:i]))
		s.buf = s.buf[i+1:]
	}
}

func (s *staticWarnings) line(l string) {
	switch {
	case strings.HasPrefix(l, "# "):
		s.header = l
	case strings.Contains(l, "statically linked applications requires at runtime"), strings.Contains(l, "in function"):
	default:
		if s.header != "" {
			fmt.Fprintln(s.w, s.header)
			s.header = ""
		}
		fmt.Fprintln(s.w, l)
	}
}

func (s *staticWarnings) flush() {
	if len(s.buf) > 0 {
		s.line(string(s.buf))
		s.buf = nil
	}
}

func copyFile(from, to string) error {
	if filepath.Clean(from) == filepath.Clean(to) {
		return nil
	}
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}
