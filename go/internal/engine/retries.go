package engine

import (
	"sync"
	"time"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// retries holds the deliveries waiting for their next attempt: each keeps what it holds (a
// request slot stays Go's, its waiter attached), and a timer, not a goroutine or a worker,
// brings it back. One table for every route and origin.
type retries struct {
	e       *Engine
	mu      sync.Mutex
	closed  bool // set at shutdown: no more redeliveries
	waiting map[*Delivery]*time.Timer
	// firing counts redeliveries taken from the table and not yet handed to their route, so
	// shutdown can wait for them before it stops the pools they go to.
	firing sync.WaitGroup
}

func (t *retries) init(e *Engine) {
	t.e = e
	t.waiting = make(map[*Delivery]*time.Timer)
}

// schedule brings d back after delay; false once the runtime is stopping.
func (t *retries) schedule(d *Delivery, delay time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.waiting[d] = time.AfterFunc(delay, func() { t.fire(d) })
	t.e.obs.retried(d)
	return true
}

func (t *retries) fire(d *Delivery) {
	t.mu.Lock()
	if _, ok := t.waiting[d]; !ok || t.closed {
		t.mu.Unlock()
		return // settled by cancel
	}
	delete(t.waiting, d)
	t.firing.Add(1)
	t.mu.Unlock()
	defer t.firing.Done()
	t.e.redeliver(d)
}

// cancel stops every pending redelivery and settles its event as retryable (dead-letters it
// when nobody waits for it), then waits for redeliveries already on their way.
func (t *retries) cancel() {
	t.mu.Lock()
	t.closed = true
	waiting := t.waiting
	t.waiting = map[*Delivery]*time.Timer{}
	t.mu.Unlock()
	for d, timer := range waiting {
		timer.Stop()
		t.e.obs.cancelled()
		t.e.settleRetryable(d, failure(OutcomeRetry, d.typ, envelope.CodeCancelled,
			"the runtime shut down before the next attempt", d.route.name()))
	}
	t.firing.Wait()
}
