// Command hello is a tandem service: Go handlers and Rust handlers (handlers/src/lib.rs)
// in one binary. Build it with ./build.sh (one static binary, cgo) or ./build.sh -purego (no
// cgo; the Rust library beside the binary).
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

func main() {
	if err := run(strings.Join(os.Args[1:], " ")); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run(name string) error {
	if name == "" {
		name = "world"
	}
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		return err
	}
	// hello.greet is a Go handler: it calls the Rust handler hello.shout (registered in
	// handlers/src/lib.rs) and wraps its reply.
	greet := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		reply, err := rt.Call(ctx, &tandem.Event{
			ID: ev.ID + "/shout", Source: "/hello", Type: "hello.shout", Data: ev.Data,
		})
		if err != nil {
			return tandem.Retry(100*time.Millisecond, err)
		}
		defer reply.Release() // the reply is read in place from shared memory until Release
		return tandem.AckReply(fmt.Appendf(nil, "Go handler hello.greet: %s", reply.Data()))
	})
	if err := rt.Handle("hello.greet", "greet", greet); err != nil {
		return err
	}
	if err := rt.Start(); err != nil {
		return err
	}
	defer rt.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := rt.Call(ctx, &tandem.Event{
		ID: "1", Source: "/hello", Type: "hello.greet", Data: []byte(name),
	})
	if err != nil {
		return err
	}
	defer reply.Release()
	fmt.Println(string(reply.Data()))
	return nil
}
