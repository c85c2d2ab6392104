package engine

import (
	"time"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/ring"
)

// The crossing. A thread wake costs tens of microseconds on small VMs, many round trips'
// worth, so when the other side sleeps the side that has work does it itself:
//
//   - Submission: a publisher that wins the submission ring's wake-up duty (the Rust poller
//     is parked) makes one call into the library instead of writing the eventfd, and the
//     submission step runs on its own thread (rust/tandem/src/kick.rs): an inline handler
//     completes before the call returns.
//   - Completion: completions published during that call do not wake Go's parked poller;
//     the duty comes back with the call, and the publisher consumes the completion ring
//     itself: a Call settles its own reply without a netpoller wake.
//
//   - Run: a Call, which blocks on its event anyway, pushes no descriptor where it would
//     cross: it runs its event with one call (runHere), and settles it from the call's return
//     when the handler finished there, no ring crossed either way.
//
// Under load both pollers are awake (spinning or draining), no duty is won, and events go
// through the rings with no call per event. The ring's parked-flag handshake decides which
// path an event takes; the counters say how often each was taken (Stats).
//
// Who may consume the completion ring: whoever holds cqOwner, the poller or a publisher
// discharging a wake duty. Every holder re-checks the ring after letting go (the poller in
// PreparePark before it parks, a publisher in its re-arm), and every completion pushed after
// a successful re-check finds the parked flag set and carries the duty again: nothing is
// stranded, and at most one goroutine consumes at a time.

// completionBatch bounds how many completions one turn of a consumer settles; a publisher
// that finds more hands the rest to the poller.
const completionBatch = 256

// cqOwner states.
const (
	cqFree uint32 = iota
	cqHeld
)

// A duty crossing counts one in the low half of e.crossing, a helper one in the high half.
const (
	dutyCrossing   = 1
	helperCrossing = 1 << 32
)

// enterLibrary counts a call into the library in (by: dutyCrossing or helperCrossing) and
// reports whether it may go ahead: not once tokio's shutdown has begun. The count, then the
// flag; stopCrossings sets the flag, then waits for the count: with both sequentially
// consistent, one of the two sees the other, so no call overlaps the shutdown. It is the
// read lock a crossing would otherwise take, at no extra atomic operation.
func (e *Engine) enterLibrary(by uint64) bool {
	e.crossing.Add(by)
	if e.rustStopping.Load() {
		e.crossing.Add(-by)
		return false
	}
	return true
}

// wakeRustLive wakes the Rust poller unless the runtime is freed, whose eventfd's number
// may name another file by then: for a duty discharged outside intake (a batch's flush, a
// release, a call's answer), which shutdown does not wait for.
func (e *Engine) wakeRustLive() {
	e.lifeMu.RLock()
	if !e.freed.Load() {
		e.wakeRust()
	}
	e.lifeMu.RUnlock()
}

// leaveLibrary counts out a call enterLibrary let in.
func (e *Engine) leaveLibrary(by uint64) { e.crossing.Add(-by) }

// stopCrossings refuses further crossings and waits for those in progress: a crossing is
// one call into the library, as short as the submission step it runs.
func (e *Engine) stopCrossings() {
	e.lifeMu.Lock() // Stats, calls' answers and local routes read rustStopping under it
	e.rustStopping.Store(true)
	e.lifeMu.Unlock()
	for e.crossing.Load() != 0 {
		time.Sleep(10 * time.Microsecond)
	}
	for i := range e.slots.table {
		for e.slots.table[i].running.Load() != 0 {
			time.Sleep(10 * time.Microsecond)
		}
	}
}

// crossToRust discharges the duty to wake the parked Rust poller by running its submission
// step on this goroutine's thread: one call into the library in place of a thread wake.
// Crossings closer together than the spin window tell Rust so, which may hand the ring back
// to its poller. flags adds to the kick's (abi.KickBatch).
func (e *Engine) crossToRust(flags uint32) {
	if !e.enterLibrary(dutyCrossing) {
		e.wakeRustLive()
		return
	}
	if e.frequent(nanotime()) {
		flags |= abi.KickFrequent
	}
	_, owed, err := abi.Kick(e.h, flags)
	e.leaveLibrary(dutyCrossing)
	if err != nil {
		failedCrossing()
		e.wakeRustLive() // not running (stopping): the poller takes it
		return
	}
	e.crossed(owed, 0)
}

// frequent reports whether a crossing at now (nanotime) follows the last closer than the
// spin window. The last crossing's time is written only when it has moved on by an eighth of
// the window: back-to-back crossings then share one write, not one each, and a gap reads at
// most an eighth of the window longer than it was.
func (e *Engine) frequent(now int64) bool {
	w := int64(e.cfg.SpinWindow)
	last := e.lastCross.Load()
	if now-last >= w/8 {
		e.lastCross.Store(now)
	}
	return now-last < w
}

// crossed counts a crossing with the completions its publisher settled: settled already
// (a run's own), and, when the call returned the completion duty (owed), those it settles
// now. One atomic add for both counts.
func (e *Engine) crossed(owed bool, settled int) {
	if owed {
		settled += e.consumeCompletions()
	}
	e.obs.crossings.add(1, uint32(settled))
}

// dutyCrossings is how many crossings holding a wake-up duty are in progress.
func (e *Engine) dutyCrossings() uint32 { return uint32(e.crossing.Load()) }

// helpRust is the crossing of a publisher that won no wake-up duty while another crossing
// was in progress: its event runs on its own thread (one call into the library) instead of
// waiting for that crossing, whose thread may be descheduled on a busy machine, and callers
// on every core run their events at once, as with a direct call. It re-arms nothing: the
// duty stays with the crossing that holds it.
func (e *Engine) helpRust() {
	if !e.enterLibrary(helperCrossing) {
		return // the crossing in progress, or the poller at shutdown, takes the event
	}
	_, owed, err := abi.Kick(e.h, abi.KickHelp)
	e.leaveLibrary(helperCrossing)
	if err != nil {
		failedCrossing()
		return
	}
	e.crossed(owed, 0)
}

// runHere runs the event published in sl (its descriptor's token, slot, length and route)
// on this goroutine's thread, past the submission ring: for a submitter that blocks on the
// event's outcome and would otherwise push it and cross. When its handler finished during the
// call, its completion comes back with the call and is settled here, as a ring's would be
// (complete): no ring cell, no consumer's role on either side, nobody else's completion to
// settle, a direct call's path with the slots' ownership kept. Otherwise the completion comes
// through the ring like any other. It reports false, having taken nothing, when the library
// refuses (the runtime is stopping): the caller then publishes through the ring.
//
// It holds no wake-up duty: the submission ring, with whatever others published there, stays
// with the crossing or the poller that holds it. It keeps out of tokio's shutdown as
// enterLibrary does, with the slot's running flag in place of the count all crossings share:
// the flag, then rustStopping; stopCrossings sets rustStopping, then waits for every flag.
//
// From intake (the submitter's own Call, not a redelivery) it needs neither the flag nor a
// synchronised settlement: the submitter is inside intake's gate, which Shutdown closes
// before it stops the crossings, and an event acknowledged during the call is settled on
// the goroutine that reads its outcome once Submit returns (HereSettler). Those are four
// atomic operations of the twenty or so a Call makes.
func (e *Engine) runHere(sl *requestSlot, token uint64, slot, length, route uint32, intake bool) bool {
	if !intake {
		sl.running.Store(1)
	}
	if e.rustStopping.Load() {
		if !intake {
			sl.running.Store(0)
		}
		return false
	}
	done, owed, err := abi.Run(e.h, token, slot, length, route, &sl.done)
	if !intake {
		sl.running.Store(0)
	}
	if err != nil {
		failedCrossing()
		return false
	}
	n := 0
	if done {
		var d ring.Desc
		ring.ReadCell(&sl.done, &d)
		e.completeBy(&d, intake)
		n = 1
	}
	e.crossed(owed, n)
	return true
}

// consumeCompletions takes the completion poller's role while completions wait, for a
// goroutine that holds the duty to wake the parked poller: it settles them here, then
// re-arms the parked flag on the poller's behalf. A burst goes to the poller instead. It
// returns how many completions it settled.
func (e *Engine) consumeCompletions() (settled int) {
	var d ring.Desc
	for {
		if !e.cqOwner.CompareAndSwap(cqFree, cqHeld) {
			return settled // the holder re-checks the ring after it lets go
		}
		n := 0
		for n < completionBatch && e.cq.Pop(&d) {
			e.complete(&d)
			n++
		}
		e.cqOwner.Store(cqFree)
		settled += n
		if n == completionBatch {
			e.wakeGo()
			e.yieldToOthers(n)
			return settled
		}
		if e.cq.PreparePark() {
			e.yieldToOthers(n)
			return settled
		}
	}
}

// yieldToOthers yields the P of a caller that settled n completions, some of them others'.
// It readied their callers onto its own P and, its own reply settled too, never blocks: left
// alone it would run on for the scheduler's whole 10 ms time slice while they wait (a p99 in
// milliseconds with 64 callers on 2 cores). Yielding every time costs less than it saves:
// with 64 callers on 2 cores, 5% more events per second and half the p99, against a yield
// at most every 20 µs across callers (docs/benchmarks.md).
func (e *Engine) yieldToOthers(n int) {
	if n >= 2 {
		gosched()
	}
}

// pollTurn is one turn of the poller at the completion ring: up to completionBatch
// completions settled, unless a publisher holds the consumer's role.
func (e *Engine) pollTurn(d *ring.Desc) int {
	if !e.cqOwner.CompareAndSwap(cqFree, cqHeld) {
		return 0
	}
	n := 0
	for n < completionBatch && e.cq.Pop(d) {
		e.complete(d)
		n++
	}
	e.cqOwner.Store(cqFree)
	return n
}
