package tandem_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// Call sends an event to a Rust handler and waits for its reply, read in place from
// shared memory until Release.
func ExampleRuntime_Call() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Shutdown(context.Background())

	reply, err := rt.Call(context.Background(), &tandem.Event{
		ID: "1", Source: "/example", Type: "demo.echo", Data: []byte("hello from Go"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("demo.echo replied %q\n", reply.Data())
	reply.Release()
	// Output: demo.echo replied "hello from Go"
}

// Handle routes an event type to a Go handler; Call reaches it exactly as it reaches a
// Rust handler.
func ExampleRuntime_Handle() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	greet := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		return tandem.AckReply([]byte("hello, " + string(ev.Data)))
	})
	if err := rt.Handle("greet", "greeter", greet, tandem.WithWorkers(1, 4), tandem.WithTimeout(time.Second)); err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Shutdown(context.Background())

	reply, err := rt.Call(context.Background(), &tandem.Event{ID: "1", Source: "/example", Type: "greet", Data: []byte("gopher")})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply.Data()))
	reply.Release() // a Go handler's reply is in Go memory: Release is harmless
	// Output: hello, gopher
}

// Emit, from inside a handler, routes a follow-up event to another handler and fills in
// its correlation and causation ids from the event being handled.
func ExampleEmit() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	confirmed := make(chan string, 1)
	place := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		err := tandem.Emit(ctx, &tandem.Event{ID: "confirm-" + ev.ID, Source: "/orders", Type: "order.confirmed"})
		if err != nil {
			return tandem.Retry(0, err)
		}
		return tandem.Ack()
	})
	confirm := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		confirmed <- fmt.Sprintf("%s: correlation %s, caused by %s", ev.ID, ev.CorrelationID, ev.CausationID)
		return tandem.Ack()
	})
	if err := rt.Handle("order.placed", "place", place); err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Handle("order.confirmed", "confirm", confirm); err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Shutdown(context.Background())

	receipt, err := rt.Submit(context.Background(), &tandem.Event{ID: "order-7", Source: "/shop", Type: "order.placed"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := receipt.Wait(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(<-confirmed)
	// Output: confirm-order-7: correlation order-7, caused by order-7
}

// HandleRust routes a pattern to a Rust handler registered under another type: here every
// "shout.…" event goes to demo.upper.
func ExampleRuntime_HandleRust() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.HandleRust("shout.>", "demo.upper"); err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Shutdown(context.Background())

	for i, typ := range []string{"shout.greeting", "shout.team.cheer"} {
		reply, err := rt.Call(context.Background(), &tandem.Event{
			ID: fmt.Sprint(i), Source: "/example", Type: typ, Data: []byte("go " + typ),
		})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s\n", reply.Data())
		reply.Release()
	}
	// Output:
	// GO SHOUT.GREETING
	// GO SHOUT.TEAM.CHEER
}

// A handler that asks for a retry is redelivered on the route's schedule; one that fails
// for good is dead-lettered, and its submitter learns why.
func Example_retriesAndDeadLetters() {
	sink := deadletter.NewMemorySink()
	rt, err := tandem.New(tandem.Config{DeadLetters: sink})
	if err != nil {
		fmt.Println(err)
		return
	}
	// demo.flaky asks for a retry until the delivery named by its succeed_at extension.
	fast := retry.Backoff{MaxAttempts: 5, Initial: time.Millisecond}
	if err := rt.HandleRust("payment.*", "demo.flaky", tandem.WithRetry(fast)); err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(); err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	reply, err := rt.Call(ctx, &tandem.Event{ID: "p1", Source: "/example", Type: "payment.authorize",
		Extensions: map[string]string{"succeed_at": "3"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("payment authorized on delivery %s\n", reply.Data())
	reply.Release()

	_, err = rt.Call(ctx, &tandem.Event{ID: "f1", Source: "/example", Type: "demo.fail", Data: []byte("term")})
	var he *tandem.HandlerError
	if errors.As(err, &he) {
		fmt.Printf("demo.fail: %s, dead-lettered (%s)\n", he.Code(), he.DeadLetter)
	}

	if err := rt.Shutdown(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("retried", rt.Stats().Retried)
	for _, dl := range sink.Records() {
		fmt.Println("dead letter:", dl.EventID, dl.Reason, dl.Error.Code)
	}
	// Output:
	// payment authorized on delivery 3
	// demo.fail: invalid, dead-lettered (term)
	// retried 2
	// dead letter: f1 term invalid
}

// Your own Rust handlers are the ones your crate registers (`tandem new` writes one, see
// README: "Your handlers, your binary"); the Go side reaches each by the type it registered,
// with no Go code per handler. A crate's handlers/src/lib.rs:
//
//	pub struct Shout;
//	impl Handler for Shout {
//	    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
//	        Outcome::Reply(ev.data().to_ascii_uppercase())
//	    }
//	}
//	pub fn register(reg: &mut Registry) {
//	    reg.register("hello.shout", "shout", Shout);
//	}
//	tandem::register_handlers!(register);
//
// RustTypes lists what the linked crate registered. This package's tests link the bundled demo
// crate, whose demo.upper is that same handler; in your binary, call "hello.shout".
func Example_yourRustHandler() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Shutdown(context.Background())

	fmt.Println("registered in Rust:", slices.Contains(rt.RustTypes(), "demo.upper"))
	reply, err := rt.Call(context.Background(), &tandem.Event{
		ID: "1", Source: "/hello", Type: "demo.upper", Data: []byte("hello, world"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reply.Release()
	fmt.Printf("%s\n", reply.Data())
	// Output:
	// registered in Rust: true
	// HELLO, WORLD
}

// A Go handler composes with your Rust handler: it calls it by type from inside its own
// handling, as the main.go `tandem new` writes does (hello.greet calls hello.shout).
func Example_goHandlerCallsYourRustHandler() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	greet := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		reply, err := rt.Call(ctx, &tandem.Event{
			ID: ev.ID + "/shout", Source: "/hello", Type: "demo.upper", Data: ev.Data,
		})
		if err != nil {
			return tandem.Retry(100*time.Millisecond, err)
		}
		defer reply.Release() // the reply is read in place from shared memory until Release
		return tandem.AckReply(fmt.Appendf(nil, "Go greets, Rust shouts: %s", reply.Data()))
	})
	if err := rt.Handle("hello.greet", "greet", greet); err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Shutdown(context.Background())

	reply, err := rt.Call(context.Background(), &tandem.Event{
		ID: "1", Source: "/hello", Type: "hello.greet", Data: []byte("world"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reply.Release()
	fmt.Printf("%s\n", reply.Data())
	// Output: Go greets, Rust shouts: WORLD
}

// Moving a route from Rust to Go while running: a shadow compares the Go handler with the
// Rust one, a split sends it a share of the traffic, a swap sends it all. Nothing stops.
func ExampleRuntime_Swap() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The Go version of demo.upper, registered with no route: a target to move to.
	upper := tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		return tandem.AckReply(bytes.ToUpper(ev.Data))
	})
	if err := rt.Register("upper-go", upper); err != nil {
		fmt.Println(err)
		return
	}
	if err := rt.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Shutdown(context.Background())
	call := func(id string) {
		reply, err := rt.Call(context.Background(), &tandem.Event{ID: id, Source: "/example", Type: "demo.upper", Data: []byte("ok")})
		if err != nil {
			fmt.Println(err)
			return
		}
		reply.Release()
	}

	// 1. Shadow: each event also runs on the Go handler, and the results are compared.
	rt.Shadow("demo.upper", tandem.GoTarget("upper-go"))
	for i := range 10 {
		call(fmt.Sprint("s", i))
	}
	for info, _ := rt.Route("demo.upper"); info.Shadowed.Matched+info.Shadowed.Mismatched < 10; info, _ = rt.Route("demo.upper") {
		time.Sleep(time.Millisecond)
	}
	info, _ := rt.Route("demo.upper")
	fmt.Printf("shadow: %d matched, %d mismatched\n", info.Shadowed.Matched, info.Shadowed.Mismatched)

	// 2. Split: half to each, by partition key.
	rt.Unshadow("demo.upper")
	rt.SetWeights("demo.upper", []tandem.Weighted{
		{Target: tandem.RustTarget("demo.upper"), Weight: 1},
		{Target: tandem.GoTarget("upper-go"), Weight: 1},
	}, tandem.Sticky())

	// 3. Swap: all of it to Go.
	rt.Swap("demo.upper", tandem.GoTarget("upper-go"))
	call("last")
	info, _ = rt.Route("demo.upper")
	fmt.Println("route:", info.Targets[0].Target)
	// Output:
	// shadow: 10 matched, 0 mismatched
	// route: go:upper-go
}
