package engine

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"unsafe"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/internal/perp"
	"github.com/tandemrt/tandem/go/internal/unchecked"
)

// Request slot owners; every hand-over is a compare-and-swap, so a double release is caught.
const (
	slotFree uint32 = iota // in the free list
	slotGo                 // taken by a submitter or held for a redelivery
	slotRust               // published to Rust
)

// requestSlot is Go's bookkeeping for one request slot of the shared region.
type requestSlot struct {
	owner atomic.Uint32
	// d is the delivery in the slot. The submitter's store, last before publishing, and the
	// poller's load also order the delivery's plain fields for the race detector, which
	// cannot see the ring's atomics in non-Go memory.
	d atomic.Pointer[Delivery]
	// gen tells a live completion from a stale one; written by the slot's owner only.
	gen uint32
	// own is the delivery of an event submitted into this slot: a submit allocates nothing.
	own Delivery
	// done is where a run (runHere) gets the event's completion record back: written by the
	// library during the run's call, read by the same goroutine after it.
	done abi.Cell
	// running is 1 while its event runs past the rings (runHere), which stopCrossings waits
	// for as for e.crossing. The slot's holder alone writes it, so it costs no line another
	// core writes.
	running atomic.Uint32
}

// slots are the request slots: free lists, each slot's owner word, and views of the
// shared region (a delivery header, then the envelope).
//
// A free slot waits in one of two places. Each P keeps one, near: the slot it freed last,
// taken first by the next submitter on that P, from a word on the P's own cache lines.
// The rest are on a stack every P shares: its head is a word both cores write, which with
// 64 callers on 2 cores took a tenth of the cycles. A submitter whose P has none pops the
// stack, and when that is empty too, takes another P's near slot: a free slot is always
// found, wherever it waits.
//
// The stack hands out the slot freed last as well: its lines are still in the caches and its
// page still in the TLB on both sides. (A queue hands out the slot idle longest: at idle,
// every event then starts with cache and TLB misses on a slot of its own, microseconds of a
// round trip that is otherwise one.)
//
// A submitter that finds no slot under the Block policy waits for room: it counts itself in
// waiters, then looks again, near slots included, and a free that sees a waiter puts its
// slot on the stack and signals room. A free puts its slot near first, then reads waiters,
// and takes the slot back to the stack if a waiter came: either the waiter's second look
// sees the slot, or the free sees the waiter (all sequentially consistent atomics), so no
// waiter sleeps beside a free slot. A channel operation per event took a runtime lock.
type slots struct {
	e       *Engine
	layout  *abi.Layout
	ledger  *perp.Cells[ledger] // near: each P's near slot
	_       cacheLinePad
	stack   freeStack
	_       cacheLinePad
	waiters atomic.Int32
	// room has a place for a signal per slot, so a free never blocks and no signal a
	// waiter needs is dropped; a stale signal costs a waiter one more look.
	room  chan struct{}
	table []requestSlot
	// first hands a freed slot straight to a callee of a Rust handler's call that waits for
	// one (acquireFirstWaiting), ahead of new submissions: the caller holds a slot while it
	// waits, so callees that queued behind submitters could starve. Unbuffered: a slot goes this
	// way only to a callee waiting at that moment. firstWaiting counts those callees.
	first        chan uint32
	firstWaiting atomic.Int32
}

func (s *slots) init(e *Engine, l *abi.Layout) {
	s.e, s.layout = e, l
	s.ledger = e.ledger
	s.room = make(chan struct{}, l.ReqSlots)
	s.first = make(chan uint32)
	s.stack.next = make([]atomic.Uint32, l.ReqSlots)
	for i := range l.ReqSlots {
		s.stack.push(l.ReqSlots - 1 - i) // slot 0 on top
	}
	s.table = make([]requestSlot, l.ReqSlots)
}

// freeStack is a lock-free stack of slot indices (Treiber's): many goroutines push and pop
// at once without a lock, which under contention would park them. head packs a tag, bumped
// by every change, above the top index + 1 (0: empty), so that a pop whose view of the top
// went stale (popped and pushed again meanwhile: ABA) fails its compare-and-swap.
type freeStack struct {
	head atomic.Uint64
	next []atomic.Uint32 // next[i]: the index + 1 below slot i on the stack (0: none)
}

func (f *freeStack) push(idx uint32) {
	for {
		old := f.head.Load()
		f.next[idx].Store(uint32(old))
		if f.head.CompareAndSwap(old, (old>>32+1)<<32|uint64(idx+1)) {
			return
		}
	}
}

func (f *freeStack) pop() (uint32, bool) {
	for {
		old := f.head.Load()
		top := uint32(old)
		if top == 0 {
			return 0, false
		}
		next := f.next[top-1].Load()
		if f.head.CompareAndSwap(old, (old>>32+1)<<32|uint64(next)) {
			return top - 1, true
		}
	}
}

// tryAcquire takes a free request slot if there is one.
func (s *slots) tryAcquire() (uint32, bool) {
	idx, ok := s.take()
	if !ok {
		return 0, false
	}
	return s.own(idx), true
}

// take takes a free slot off the free lists: the P's near slot, the stack, another P's
// near slot.
func (s *slots) take() (uint32, bool) {
	if n := &s.ledger.At(perp.Hint()).near; n.Load() != 0 {
		if v := n.Swap(0); v != 0 {
			return v - 1, true
		}
	}
	if idx, ok := s.stack.pop(); ok {
		return idx, true
	}
	for i := range s.ledger.Len() {
		n := &s.ledger.At(perp.P(i)).near
		if v := n.Load(); v != 0 && n.CompareAndSwap(v, 0) {
			return v - 1, true
		}
	}
	return 0, false
}

// acquire takes a free request slot, applying the overload policy when there is none.
func (s *slots) acquire(ctx context.Context, policy Overload, closing <-chan struct{}) (uint32, error) {
	if idx, ok := s.tryAcquire(); ok {
		return idx, nil
	}
	return s.acquireWaiting(ctx, policy, closing)
}

// acquireWaiting is acquire once tryAcquire found no slot free.
func (s *slots) acquireWaiting(ctx context.Context, policy Overload, closing <-chan struct{}) (uint32, error) {
	switch policy {
	case Reject:
		return 0, ErrOverloaded
	case Shed:
		return 0, ErrShed
	}
	idx, err := s.await(ctx, closing, false)
	if err != nil {
		return 0, err
	}
	return s.own(idx), nil
}

// acquireFirstWaiting takes a free request slot for the callee of a Rust handler's call,
// once tryAcquire found none, waiting (until ctx ends) ahead of every submitter: the next
// slot freed while it waits is handed to it (one freed as it starts to wait goes to the free
// list, where anyone may take it, this callee too).
func (s *slots) acquireFirstWaiting(ctx context.Context, closing <-chan struct{}) (uint32, error) {
	s.firstWaiting.Add(1)
	defer s.firstWaiting.Add(-1)
	idx, err := s.await(ctx, closing, true)
	if err != nil {
		return 0, err
	}
	return s.own(idx), nil
}

// own marks slot idx, taken off the free list or handed over, Go's. The slot holds no index
// of its envelope's fields until an encoder writes one (intake): an envelope copied in as
// bytes is decoded by Rust, never read through the index of the slot's last event.
func (s *slots) own(idx uint32) uint32 {
	if !s.table[idx].owner.CompareAndSwap(slotFree, slotGo) {
		s.e.violation("request slot taken from the free list was not free", idx)
	}
	s.fields(idx).Present = 0
	return idx
}

// await waits for a free slot until ctx ends or the runtime closes; a callee (first) also
// takes a slot handed to it directly.
func (s *slots) await(ctx context.Context, closing <-chan struct{}, first bool) (uint32, error) {
	var handed chan uint32
	if first {
		handed = s.first
	}
	for {
		s.waiters.Add(1)
		idx, ok := s.take()
		if ok {
			s.waiters.Add(-1)
			return idx, nil
		}
		select {
		case idx := <-handed: // nil for a submitter: never ready
			s.waiters.Add(-1)
			return idx, nil
		case <-s.room:
			s.waiters.Add(-1)
		case <-ctx.Done():
			s.waiters.Add(-1)
			return 0, ctx.Err()
		case <-closing:
			s.waiters.Add(-1)
			return 0, ErrClosed
		}
	}
}

// free returns slot idx to a callee waiting for one, else to the free lists; whatever
// completion still names it is stale.
func (s *slots) free(idx uint32) {
	sl := &s.table[idx]
	sl.gen++
	sl.owner.Store(slotFree)
	if s.firstWaiting.Load() > 0 {
		select {
		case s.first <- idx:
			return
		default: // no callee at the hand-over point: the free lists, as for anyone
		}
	}
	if n := &s.ledger.At(perp.Hint()).near; n.Load() == 0 && n.CompareAndSwap(0, idx+1) {
		if s.waiters.Load() == 0 || !n.CompareAndSwap(idx+1, 0) {
			return // near, or taken from there already
		}
		// A waiter came: it sleeps on the stack's signal.
	}
	s.stack.push(idx)
	if s.waiters.Load() > 0 {
		select {
		case s.room <- struct{}{}:
		default: // a signal per slot is waiting already
		}
	}
}

// base is the start of request slot idx: its delivery header.
func (s *slots) base(idx uint32) unsafe.Pointer {
	l := s.layout
	return unsafe.Add(l.Base, l.ReqArena+uint64(idx)*l.ReqStride)
}

// fields is request slot idx's index of its envelope's fields (tandem_fields).
func (s *slots) fields(idx uint32) *unchecked.Fields {
	return (*unchecked.Fields)(unsafe.Add(s.base(idx), abi.DeliveryFields))
}

// buffer is request slot idx's envelope area as an empty slice, capacity MaxEventSize.
func (s *slots) buffer(idx uint32) []byte {
	p := unsafe.Add(s.base(idx), abi.DeliverySize)
	return unsafe.Slice((*byte)(p), s.layout.ReqSlotSize)[:0]
}

// envelope is the n-byte envelope in request slot idx.
func (s *slots) envelope(idx, n uint32) []byte {
	return s.buffer(idx)[:n]
}

// writeHeader writes a delivery's facts into its slot's header (tandem_delivery), beside the
// envelope it never rewrites.
func (s *slots) writeHeader(d *Delivery) {
	h := unsafe.Slice((*byte)(s.base(d.slot)), abi.DeliverySize)
	binary.LittleEndian.PutUint64(h[abi.DeliveryDeadlineNs:], uint64(d.deadline))
	binary.LittleEndian.PutUint32(h[abi.DeliveryAttempt:], d.attempt)
	var flags uint32
	if d.waited {
		flags = abi.DeliveryWaited
	}
	if s.e.obs.timesRust() {
		flags |= abi.DeliveryTimed
	}
	if d.probe != nil {
		flags |= abi.DeliveryShadow
	}
	if _, callee := d.waiter.(*rustCall); callee {
		flags |= abi.DeliveryCancellable // calls.go
	}
	binary.LittleEndian.PutUint32(h[abi.DeliveryFlags:], flags)
}

// publish hands a delivery whose envelope is in its slot to Rust: the header, then the
// descriptor on the submission ring; if the Rust poller is parked, the submission step runs
// here instead of waking it, or a Call runs its event past the ring (crossing.go). Nothing
// of the delivery is read once its slot holds it: its completion may settle it at once.
func (e *Engine) publish(d *Delivery) { e.publishIn(d, nil, false) }

// publishIn is publish within batch bt (nil: none), which keeps a wake-up duty the delivery
// wins for its Flush and helps no crossing: the batch's own crossing runs its events. intake
// says the caller is the event's submitter, inside intake (runHere).
func (e *Engine) publishIn(d *Delivery, bt *Batch, intake bool) {
	sl := &e.slots.table[d.slot]
	e.slots.writeHeader(d)
	token := uint64(sl.gen)<<32 | uint64(d.slot)
	idx, length, flags, waited := d.slot, d.length, d.bound.target.RustIndex, d.waited
	if !sl.owner.CompareAndSwap(slotGo, slotRust) {
		e.violation("published a request slot Go did not hold", idx)
	}
	if c, callee := d.waiter.(*rustCall); callee {
		c.rustToken.Store(token) // what its cancel names (calls.go)
	}
	sl.d.Store(d)
	p := perp.Pin()
	e.ledger.At(p).toRust.Add(1)
	perp.Unpin(p)
	// A Call blocks on its event anyway: where it would cross to run it (the Rust poller
	// parked, or another crossing in progress), it runs it past the ring instead.
	if waited && bt == nil && (e.sq.Parked() || e.dutyCrossings() > 0) && e.runHere(sl, token, idx, length, flags, intake) {
		return
	}
	for !e.sq.Push(abi.SQEEvent, idx, length, flags, token) {
		// Unreachable: the ring holds every slot's descriptor at once. Stay correct anyway.
		gosched()
	}
	switch {
	case e.sq.TakeWakeup():
		if bt != nil {
			bt.owed = true
			return
		}
		e.crossToRust(0)
	case bt == nil && e.dutyCrossings() > 0:
		e.helpRust()
	}
}
