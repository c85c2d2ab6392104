package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/tandemrt/tandem/go/internal/scaffold"
)

// newMain is `tandem new [-tandem DIR] NAME`: it writes a project, a Go main and a Rust
// crate of handlers, into the directory NAME.
func newMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("new", flag.ContinueOnError)
	fs.SetOutput(stderr)
	local := fs.String("tandem", "", "use this local tandem module directory (a go.mod replace) instead of this command's version")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tandem new [-tandem DIR] NAME")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	if err := scaffold.New(scaffold.NewOptions{Path: fs.Arg(0), Tandem: *local, Log: stdout}); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// buildMain is `tandem build [-purego] [-env] [-o FILE] [-C DIR]`, run in a project `tandem new` wrote.
func buildMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	purego := fs.Bool("purego", false, "build the Rust crate as a cdylib beside a Go binary built without cgo")
	out := fs.String("o", "", "the binary (default: the project's name, in the project)")
	dir := fs.String("C", ".", "the project's directory")
	env := fs.Bool("env", false, "build the Rust crate, then print the exports that link it into go build, go vet and go test: eval \"$(go tool tandem build -env)\"")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	bin, err := scaffold.Build(scaffold.BuildOptions{Dir: *dir, Output: *out, Purego: *purego, EnvOnly: *env, Stdout: stdout, Stderr: stderr})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *env {
		return 0
	}
	fmt.Fprintf(stdout, "built %s\n", bin)
	return 0
}
