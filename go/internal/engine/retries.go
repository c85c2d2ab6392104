package engine

import (
	"sync"
	"time"
)

// retries holds the deliveries waiting for their next attempt: each keeps what it holds (a
// request slot stays Go's, its waiter attached), and a timer, not a goroutine or a worker,
// brings it back. One table for every route and origin.
type retries struct {
	e       *Engine
	mu      sync.Mutex
	closed  bool // set at shutdown: no more redeliveries
	waiting map[*Delivery]pendingRetry
	// firing counts redeliveries taken from the table and not yet handed to their route, so
	// shutdown can wait for them before it stops the pools they go to.
	firing sync.WaitGroup
}

// pendingRetry is a delivery's wait for its next attempt: the timer that ends it, and the
// failure that began it, which a cancelled event's error names.
type pendingRetry struct {
	timer *time.Timer
	last  *Failure
}

func (t *retries) init(e *Engine) {
	t.e = e
	t.waiting = make(map[*Delivery]pendingRetry)
}

// schedule brings d back after delay, d's last attempt having failed with f; false once the
// runtime is stopping.
func (t *retries) schedule(d *Delivery, delay time.Duration, f *Failure) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.waiting[d] = pendingRetry{timer: time.AfterFunc(delay, func() { t.fire(d) }), last: f}
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

// cancel stops every pending redelivery and settles its event as cancelled, retryable
// (dead-letters it when nobody waits for it), then waits for redeliveries already on their
// way.
func (t *retries) cancel() {
	t.mu.Lock()
	t.closed = true
	waiting := t.waiting
	t.waiting = map[*Delivery]pendingRetry{}
	t.mu.Unlock()
	for d, p := range waiting {
		p.timer.Stop()
		t.e.settleRetryable(d, cancelledAfter(p.last))
	}
	t.firing.Wait()
}
