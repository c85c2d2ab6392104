// Package ring is the Go side of the shared rings of ffi/tandem.h: a bounded queue of 64-byte
// descriptors with a sequence number per cell (Vyukov), many producers and one consumer, in
// memory the Rust runtime owns. rust/tandem/src/ring.rs implements the same protocol; the
// memory-ordering argument is in docs/ring.md.
//
// Go's sync/atomic operations are sequentially consistent, which is at least as strong as
// every ordering the protocol asks for. Payload fields are written with plain stores before
// the publishing store of seq and read after the acquiring load of seq.
package ring

import (
	"sync/atomic"
	"unsafe"

	"github.com/tandemrt/tandem/go/internal/abi"
)

// Ring is a view of one ring. It holds no Go pointers into the region, so it may be copied;
// the region must stay mapped while it is used.
type Ring struct {
	hdr   unsafe.Pointer
	cells unsafe.Pointer
	mask  uint64
}

// New views the ring whose header and cells live at the given addresses, already initialised
// by the library. capacity must be a power of two.
func New(hdr, cells unsafe.Pointer, capacity uint32) Ring {
	return Ring{hdr: hdr, cells: cells, mask: uint64(capacity) - 1}
}

func (r *Ring) u64(off uintptr) *uint64 { return (*uint64)(unsafe.Add(r.hdr, off)) }
func (r *Ring) u32(off uintptr) *uint32 { return (*uint32)(unsafe.Add(r.hdr, off)) }

// Desc is one descriptor as read by the consumer.
type Desc struct {
	Token      uint64
	Kind       uint32
	Slot       uint32
	Len        uint32
	Flags      uint32
	ReplySlot  uint32
	ReplyLen   uint32
	StartedNs  uint64
	FinishedNs uint64
	Aux        uint64
}

func (r *Ring) cell(pos uint64) unsafe.Pointer {
	return unsafe.Add(r.cells, uintptr(pos&r.mask)*abi.DescSize)
}

func field64(cell unsafe.Pointer, off uintptr) *uint64 { return (*uint64)(unsafe.Add(cell, off)) }
func field32(cell unsafe.Pointer, off uintptr) *uint32 { return (*uint32)(unsafe.Add(cell, off)) }

// Push publishes a submission descriptor; false when the ring is full. flags is the
// descriptor's flags word (for events: 0, or 1 + the Rust handler's index). Safe for
// concurrent use by many goroutines.
func (r *Ring) Push(kind, slot, length, flags uint32, token uint64) bool {
	tail := r.u64(abi.RingTail)
	pos := atomic.LoadUint64(tail)
	for {
		c := r.cell(pos)
		seq := atomic.LoadUint64(field64(c, abi.DescSeq))
		switch diff := int64(seq - pos); {
		case diff == 0:
			if atomic.CompareAndSwapUint64(tail, pos, pos+1) {
				*field64(c, abi.DescToken) = token
				*field32(c, abi.DescKind) = kind
				*field32(c, abi.DescSlot) = slot
				*field32(c, abi.DescLen) = length
				*field32(c, abi.DescFlags) = flags
				atomic.StoreUint64(field64(c, abi.DescSeq), pos+1)
				return true
			}
			pos = atomic.LoadUint64(tail)
		case diff < 0:
			return false
		default:
			pos = atomic.LoadUint64(tail)
		}
	}
}

// Pop takes the next published descriptor. Only one goroutine may consume a ring.
func (r *Ring) Pop(d *Desc) bool {
	head := r.u64(abi.RingHead)
	pos := atomic.LoadUint64(head)
	c := r.cell(pos)
	if atomic.LoadUint64(field64(c, abi.DescSeq)) != pos+1 {
		return false
	}
	read(c, d)
	atomic.StoreUint64(field64(c, abi.DescSeq), pos+r.mask+1)
	atomic.StoreUint64(head, pos+1)
	return true
}

// read copies cell c's descriptor into d.
func read(c unsafe.Pointer, d *Desc) {
	d.Token = *field64(c, abi.DescToken)
	d.Kind = *field32(c, abi.DescKind)
	d.Slot = *field32(c, abi.DescSlot)
	d.Len = *field32(c, abi.DescLen)
	d.Flags = *field32(c, abi.DescFlags)
	d.ReplySlot = *field32(c, abi.DescReplySlot)
	d.ReplyLen = *field32(c, abi.DescReplyLen)
	d.StartedNs = *field64(c, abi.DescStartedNs)
	d.FinishedNs = *field64(c, abi.DescFinishedNs)
	d.Aux = *field64(c, abi.DescAux)
}

// ReadCell copies the descriptor the library wrote into c, a cell of no ring (abi.Run's),
// into d. The call that wrote it has returned: it needs no synchronisation.
func ReadCell(c *abi.Cell, d *Desc) { read(unsafe.Pointer(c), d) }

// Empty reports whether the consumer would find nothing now.
func (r *Ring) Empty() bool {
	pos := atomic.LoadUint64(r.u64(abi.RingHead))
	return atomic.LoadUint64(field64(r.cell(pos), abi.DescSeq)) != pos+1
}

// Len is the number of published, unconsumed descriptors (approximate under concurrency).
func (r *Ring) Len() uint64 {
	// Head first: it only grows, so a tail read after it is never behind it.
	head := atomic.LoadUint64(r.u64(abi.RingHead))
	tail := atomic.LoadUint64(r.u64(abi.RingTail))
	return min(tail-head, r.mask+1) // modular: positions may wrap around 2^64
}

// PreparePark is the consumer's half of the parking handshake: it raises the parked flag and
// re-checks the ring. True means sleep (a producer publishing from now on sees the flag);
// false means work arrived and the flag is lowered again.
func (r *Ring) PreparePark() bool {
	parked := r.u32(abi.RingParked)
	atomic.StoreUint32(parked, 1) // sequentially consistent: ordered before the check below
	if r.Empty() {
		return true
	}
	atomic.StoreUint32(parked, 0)
	return false
}

// Parked reports whether the consumer's parked flag is raised (a snapshot): it sleeps, or is
// about to, and the next producer must wake it (or cross). The other side's poller reads it
// to decide whether to spin; tests wait on it rather than sleep past a spin window.
func (r *Ring) Parked() bool { return atomic.LoadUint32(r.u32(abi.RingParked)) == 1 }

// Unpark lowers the parked flag after a wake-up.
func (r *Ring) Unpark() { atomic.StoreUint32(r.u32(abi.RingParked), 0) }

// Hungry reports whether someone waits for what only the consumer can free: on the
// submission ring, Rust writers waiting for a reply slot (tandem_ring_header.hungry). A
// producer of a release record reads it after Push: while nobody is hungry the record can
// wait for the consumer's next pass, and a parked consumer is left asleep.
func (r *Ring) Hungry() bool { return atomic.LoadUint32(r.u32(abi.RingHungry)) != 0 }

// TakeWakeup is the producer's half, called after Push: true if the consumer was parked and
// this caller must wake it (exactly one producer wins).
func (r *Ring) TakeWakeup() bool {
	parked := r.u32(abi.RingParked)
	// A compare-and-swap, not a swap: losing the race writes nothing, so it can never land
	// after (and undo) a consumer's re-arm (rust/tandem/src/ring.rs has the same).
	return atomic.LoadUint32(parked) == 1 && atomic.CompareAndSwapUint32(parked, 1, 0)
}
