package conform_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/conform"
)

// A Go handler judged by two cases, one of which it fails: the report says which, and how.
func ExampleCheck() {
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		panic(err)
	}
	defer rt.Shutdown(context.Background())
	greet := tandem.HandlerFunc(func(_ context.Context, ev *tandem.Event) tandem.Result {
		if len(ev.Data) == 0 {
			return tandem.Term(tandem.Errorf("invalid", "nobody to greet"))
		}
		return tandem.AckReply(append([]byte("hello, "), ev.Data...))
	})
	if err := rt.Handle("greet", "greeter", greet); err != nil {
		panic(err)
	}
	if err := rt.Start(); err != nil {
		panic(err)
	}
	v, err := conform.Parse("greet.jsonl", strings.NewReader(`{"format": "tandem.conformance", "version": 1}
{"case": "a name", "event": {"data": "ada"}, "expect": {"outcome": "ack", "reply": "hello, ada"}}
{"case": "no name", "event": {}, "expect": {"outcome": "term", "code": "invalid_input"}}
`))
	if err != nil {
		panic(err)
	}
	rep, err := conform.Check(context.Background(), rt, "greet", v)
	if err != nil {
		panic(err)
	}
	fmt.Println(rep)
	// Output:
	// greet.jsonl on route greet: 2 cases, 1 passed, 1 failed
	// greet.jsonl:3: case "no name"
	//     code: got "invalid", want "invalid_input" (message: nobody to greet)
}
