package tandem

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestChainAppliesMiddlewareFirstOutermost(t *testing.T) {
	var order []string
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, ev *Event) Result {
				order = append(order, name)
				return next.Handle(ctx, ev)
			})
		}
	}
	h := Chain(HandlerFunc(func(context.Context, *Event) Result {
		order = append(order, "handler")
		return Ack()
	}), mw("a"), mw("b"))
	h.Handle(context.Background(), &Event{})
	if fmt.Sprint(order) != "[a b handler]" {
		t.Fatalf("order %v", order)
	}
}

func TestErrorEnvelopeKeepsCodesAndNamesTheHandler(t *testing.T) {
	cases := []struct {
		err  error
		code string
	}{
		{Errorf("invalid_order", "no items"), "invalid_order"},
		{errors.New("plain"), "handler"},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), "timeout"},
		{context.Canceled, "cancelled"},
		{nil, "handler"},
	}
	for _, c := range cases {
		env := errorEnvelope(c.err, "pricing")
		if env.Code != c.code || env.Runtime != "go" || env.Handler != "pricing" || env.Message == "" {
			t.Errorf("errorEnvelope(%v) = %+v, want code %q", c.err, env, c.code)
		}
	}
	// A Rust failure passed through keeps its own runtime and handler.
	he := &HandlerError{Envelope: ErrorEnvelope{Code: "panic", Message: "boom", Runtime: "rust", Handler: "hash"}}
	if env := errorEnvelope(he, "caller"); env.Runtime != "rust" || env.Handler != "hash" || env.Code != "panic" {
		t.Errorf("passed-through Rust failure became %+v", env)
	}
}

func TestResultConstructors(t *testing.T) {
	boom := errors.New("boom")
	if r := Ack(); r.Outcome() != OutcomeAck || r.Reply() != nil || r.Err() != nil {
		t.Errorf("Ack() = %+v", r)
	}
	if r := AckReply([]byte("x")); string(r.Reply()) != "x" {
		t.Errorf("AckReply = %+v", r)
	}
	if r := Retry(5, boom); r.Outcome() != OutcomeRetry || r.After() != 5 || r.Err() != boom {
		t.Errorf("Retry = %+v", r)
	}
	if r := Term(boom); r.Outcome() != OutcomeTerm || r.Err() != boom {
		t.Errorf("Term = %+v", r)
	}
	var zero Result
	if zero.Outcome() != OutcomeAck {
		t.Error("the zero Result must be Ack")
	}
}
