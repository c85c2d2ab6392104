package engine

import (
	"unsafe"

	"github.com/tandemrt/tandem/go/internal/abi"
)

// Reply is a handler's reply payload: for a Rust handler, read in place from a reply slot
// in shared memory and lent until Release; for a Go handler, the handler's own bytes. Not
// safe for concurrent Release.
type Reply struct {
	e    *Engine
	slot uint32
	data []byte
}

// Data returns the payload, valid until Release. It panics if the runtime was shut down.
func (p *Reply) Data() []byte {
	if p.e != nil && p.e.freed.Load() {
		panic("tandem: Reply used after Shutdown")
	}
	return p.data
}

// Release hands the reply slot back to Rust. A second call does nothing.
func (p *Reply) Release() {
	if p.e == nil {
		return
	}
	p.e.releaseReply(p.slot)
	p.e, p.data = nil, nil
}

// Detach returns the payload as Go memory the caller owns, and releases the slot.
func (p *Reply) Detach() []byte {
	if p.e == nil {
		return p.data // a Go handler's reply, already Go memory
	}
	b := append([]byte(nil), p.data...)
	p.Release()
	return b
}

// lend takes reply slot slot (named by a completion) for Go; false, counted as a
// violation, if Rust lent it twice or it is out of range.
func (e *Engine) lend(slot uint32, what string) bool {
	if slot == abi.NoSlot || int(slot) >= len(e.replies) || !e.replies[slot].CompareAndSwap(0, 1) {
		e.violation(what, slot)
		return false
	}
	return true
}

func (e *Engine) replyBytes(slot, n uint32) []byte {
	l := &e.layout
	p := unsafe.Add(l.Base, l.RepArena+uint64(slot)*l.RepStride)
	return unsafe.Slice((*byte)(p), n)
}

func (e *Engine) releaseReply(slot uint32) {
	if e.freed.Load() {
		return // taken back at Shutdown
	}
	if !e.replies[slot].CompareAndSwap(1, 0) {
		e.violation("reply released twice", slot)
		return
	}
	e.pushRelease(slot)
}

// pushRelease hands reply slot `slot` back to Rust through the submission ring. Lazily: a
// sleeping consumer is left asleep and takes the record with the next event, so releasing a
// reply at idle costs no call and no wake. Only while a Rust writer waits for a reply slot
// (the ring is hungry) does a release wake the consumer, or cross, like an event. Push, then
// the read of hungry, against Rust's raise of hungry, then its look at the parked flag (both
// sequentially consistent): either this release sees the writer waiting, or the writer's
// wake-up finds the record in the ring.
func (e *Engine) pushRelease(slot uint32) {
	for !e.sq.Push(abi.SQERelease, slot, 0, 0, 0) {
		gosched()
	}
	if e.sq.Hungry() && e.sq.TakeWakeup() {
		e.crossToRust(0)
	}
}

// ReplyOf is a reply whose payload is Go memory (a Go handler's reply).
func ReplyOf(data []byte) Reply { return Reply{data: data} }
