package main

// tandem conform: run a conformance vector file against a route of the bundled handlers, the
// Rust library's demo.* and their Go twins (package demo), and fail on a mismatch
// (docs/conformance.md).
//
//	tandem conform -route R -vectors FILE

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/conform"
	"github.com/tandemrt/tandem/go/tandem/demo"
)

const conformUsage = "usage: tandem conform -route R -vectors FILE"

// conformMain runs `tandem conform` and returns the exit status: 0 when every case passed, 1
// on a mismatch or when the run could not judge the handler, 2 on a usage error.
func conformMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("conform", flag.ContinueOnError)
	fs.SetOutput(stderr)
	route := fs.String("route", "", "the route (event type) whose handler the vectors judge, e.g. demo.upper or "+demo.UpperType)
	vectors := fs.String("vectors", "", "the vector file (JSON Lines)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, conformUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *route == "" || *vectors == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "tandem conform: -route and -vectors are required, and nothing else")
		fmt.Fprintln(stderr, conformUsage)
		return 2
	}
	v, err := conform.Load(*vectors)
	if err != nil {
		fmt.Fprintln(stderr, "tandem conform:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := runConform(ctx, *route, v)
	if err != nil {
		fmt.Fprintln(stderr, "tandem conform:", err)
		return 1
	}
	fmt.Fprintln(stdout, rep)
	if !rep.OK() {
		return 1
	}
	return 0
}

// runConform starts a runtime of the bundled handlers, runs v against route, and shuts it
// down.
func runConform(ctx context.Context, route string, v *conform.Vectors) (rep *conform.Report, err error) {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := rt.Shutdown(context.Background()); serr != nil && err == nil {
			err = serr
		}
	}()
	if err := demo.Routes(rt); err != nil {
		return nil, err
	}
	if err := rt.Start(); err != nil {
		return nil, err
	}
	return conform.Check(ctx, rt, route, v)
}
