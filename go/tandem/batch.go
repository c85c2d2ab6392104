package tandem

import (
	"context"
	"errors"

	"github.com/tandemrt/tandem/go/internal/engine"
)

// ErrBatchEnded is returned by a Batch's methods once the Runtime.Batch call that made it
// has returned.
var ErrBatchEnded = errors.New("tandem: the batch is used after Runtime.Batch returned")

// Batch submits events that cross into Rust together: see Runtime.Batch. A Batch belongs
// to the goroutine running the function Runtime.Batch was given, and only while it runs.
type Batch struct {
	r *Runtime
	b *engine.Batch
}

// Batch runs fn with a Batch, through which events are submitted as by Submit and
// SubmitFrom, and returns when fn does, after one crossing into Rust for every event fn
// submitted. When the Rust poller is parked, Submit makes one call into the library per
// event (a crossing); a batch makes one for the batch, which runs its events back to back on
// this goroutine's thread. Under load, with the poller awake, a batch changes nothing.
//
// Until fn returns, the events it submitted to Rust handlers, and those others submit
// meanwhile, wait for the batch's crossing: give fn the events at hand, not a loop that
// waits for more. A submission that has to wait (for a request slot, a policy's admission,
// or a Go handler's queue) crosses first, so a batch never waits on the events it holds.
// Call and CallOnce wait for their outcome and are not offered in a batch. A Shutdown
// begun meanwhile waits, within its grace, for the events fn submitted, which settle either
// way.
//
// Batch is safe for concurrent use; each call's Batch belongs to the goroutine running fn.
func (r *Runtime) Batch(fn func(*Batch)) {
	b := &Batch{r: r, b: r.e.NewBatch()}
	defer func() {
		eb := b.b
		b.b = nil
		eb.Flush()
	}()
	fn(b)
}

// Submit is Runtime.Submit within the batch.
func (b *Batch) Submit(ctx context.Context, ev *Event) (*Receipt, error) {
	if b.b == nil {
		return nil, ErrBatchEnded
	}
	a := &Receipt{w: receiptWaiter{e: b.r.e, ch: make(chan struct{})}}
	if err := b.b.Submit(ctx, ev, &a.w); err != nil {
		return nil, err
	}
	return a, nil
}

// SubmitFrom is Runtime.SubmitFrom within the batch.
func (b *Batch) SubmitFrom(ctx context.Context, ev *Event, src Redelivery) error {
	if b.b == nil {
		return ErrBatchEnded
	}
	if src == nil {
		return errors.New("tandem: SubmitFrom: the Redelivery is nil")
	}
	return b.b.Submit(ctx, ev, redeliveryWaiter{src})
}
