package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// A caller's TANDEM_CQE_CALL_CANCEL ends its callee's context and stops its retries; one for
// a call Go no longer knows does nothing.
func TestACancelledCallEndsItsCalleeAndIsNotRetried(t *testing.T) {
	e := &Engine{goCtx: context.Background(), budget: retry.NewBudget(time.Second, 10, 1),
		retry: retry.Backoff{MaxAttempts: 5}}
	e.initCounts()
	e.SetState(Running)
	call := &rustCall{e: e, id: 7}
	call.ctx, call.cancel = context.WithCancel(e.goCtx)
	e.calls.Store(uint64(7), call)
	d := &Delivery{waiter: call, route: &Route{}, attempt: 1}
	if e.callContext(d) != call.ctx {
		t.Fatal("a Go callee must run in its caller's context")
	}
	f := failure(OutcomeRetry, "x", envelope.CodeHandler, "try again", "h")
	if v := e.judge(d, f); v.settle {
		t.Fatal("a call still waited on was settled instead of retried")
	}
	e.onCallCancel(99) // unknown: nothing happens
	e.onCallCancel(7)
	if !errors.Is(call.ctx.Err(), context.Canceled) || !callAbandoned(d) {
		t.Fatalf("after the cancel: ctx %v, abandoned %v", call.ctx.Err(), callAbandoned(d))
	}
	if v := e.judge(d, f); !v.settle {
		t.Fatalf("an abandoned call's failure was judged %+v, want settled without a retry", v)
	}
}

// An error envelope longer than the reply slot is shortened to fit, never dropped.
func TestAnAnswersErrorEnvelopeFitsItsSlot(t *testing.T) {
	buf := make([]byte, 96)
	long := make([]byte, 500)
	for i := range long {
		long[i] = 'x'
	}
	n := appendErrorInto(buf, &envelope.ErrorEnvelope{Code: envelope.CodeHandler, Message: string(long), Runtime: "go", Handler: "h"})
	ee, err := envelope.DecodeErrorEnvelope(buf[:n])
	if err != nil || ee.Code != envelope.CodeHandler || ee.Handler != "h" || len(ee.Message) == 0 {
		t.Fatalf("decoded %+v, %v", ee, err)
	}
}

// A callee of a Rust handler's call gets the next freed request slot ahead of a submitter
// that waited longer: its caller holds a slot while it waits.
func TestACalleeGetsTheNextFreedSlotFirst(t *testing.T) {
	e := &Engine{}
	e.initCounts()
	e.slots.init(e, slotLayout(1))
	ctx := context.Background()
	held, err := e.slots.acquire(ctx, Block, nil)
	if err != nil {
		t.Fatal(err)
	}
	submitter, callee := make(chan uint32, 1), make(chan uint32, 1)
	go func() {
		idx, _ := e.slots.acquire(ctx, Block, nil)
		submitter <- idx
	}()
	time.Sleep(20 * time.Millisecond) // the submitter waits first
	go func() {
		idx, _ := e.slots.acquireFirstWaiting(ctx, nil) // every slot is held
		callee <- idx
	}()
	for e.slots.firstWaiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The callee counts itself before it blocks on the hand-over: a slot freed in between
	// goes to the free list, where the submitter may take it first (the hand-over is for a
	// callee that waits, as this one does after the pause).
	time.Sleep(20 * time.Millisecond)
	e.slots.free(held)
	select {
	case idx := <-callee:
		e.slots.free(idx)
	case <-submitter:
		t.Fatal("the submitter took the freed slot ahead of a waiting callee")
	case <-time.After(5 * time.Second):
		t.Fatal("nobody got the freed slot")
	}
	select {
	case idx := <-submitter:
		e.slots.free(idx)
	case <-time.After(5 * time.Second):
		t.Fatal("the submitter never got the slot the callee freed")
	}
}
