//! A bounded ring of fixed-size descriptors in shared memory: many producers, one consumer.
//!
//! The algorithm is Dmitry Vyukov's bounded queue with a sequence number per cell; see
//! docs/ring.md for the memory-ordering argument. Go implements the same protocol over the same
//! memory (go/internal/ring); both sides must change together.

use crate::layout::{tandem_desc, tandem_ring_header};
use crate::sync::{Ordering, fence};

/// A view of one ring: its header and `capacity` cells, living in memory someone else owns.
pub(crate) struct Ring {
    hdr: *const tandem_ring_header,
    cells: *const tandem_desc,
    mask: u64,
}

// SAFETY: every field of the shared structures is an atomic; the view itself is immutable.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Builds a view and initialises the cells' sequence numbers.
    ///
    /// # Safety
    /// `hdr` must point to a zeroed `tandem_ring_header` and `cells` to `capacity` zeroed
    /// `tandem_desc`, both valid and not moved for as long as the view and every copy of the
    /// memory's address handed out live. `capacity` must be a power of two. No other party may
    /// use the ring before this returns.
    pub(crate) unsafe fn init(
        hdr: *const tandem_ring_header,
        cells: *const tandem_desc,
        capacity: u32,
    ) -> Ring {
        debug_assert!(capacity.is_power_of_two());
        let ring = Ring {
            hdr,
            cells,
            mask: u64::from(capacity) - 1,
        };
        for i in 0..u64::from(capacity) {
            ring.cell(i).seq.store(i, Ordering::Relaxed);
        }
        ring.header().head.store(0, Ordering::Relaxed);
        ring.header().tail.store(0, Ordering::Relaxed);
        ring.header().parked.store(0, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        ring
    }

    fn header(&self) -> &tandem_ring_header {
        // SAFETY: valid for the view's life (contract of `init`).
        unsafe { &*self.hdr }
    }

    fn cell(&self, pos: u64) -> &tandem_desc {
        // SAFETY: the index is masked into 0..capacity; the cells are valid (contract of `init`).
        unsafe { &*self.cells.add((pos & self.mask) as usize) }
    }

    /// Claims a cell, lets `fill` write the descriptor with relaxed stores, and publishes it.
    /// Returns false, having called nothing, when the ring is full. Safe from many threads.
    pub(crate) fn push(&self, fill: impl FnOnce(&tandem_desc)) -> bool {
        let hdr = self.header();
        let mut pos = hdr.tail.load(Ordering::Relaxed);
        loop {
            let cell = self.cell(pos);
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as i64;
            if diff == 0 {
                match hdr.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        fill(cell);
                        cell.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return true;
                    }
                    Err(current) => pos = current,
                }
            } else if diff < 0 {
                return false;
            } else {
                pos = hdr.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the next published descriptor, if any, handing it to `read`. Only one thread may
    /// consume a ring at a time (the single consumer of MPSC).
    pub(crate) fn pop<R>(&self, read: impl FnOnce(&tandem_desc) -> R) -> Option<R> {
        let hdr = self.header();
        let pos = hdr.head.load(Ordering::Relaxed);
        let cell = self.cell(pos);
        if cell.seq.load(Ordering::Acquire) != pos.wrapping_add(1) {
            return None;
        }
        let out = read(cell);
        cell.seq
            .store(pos.wrapping_add(self.mask + 1), Ordering::Release);
        hdr.head.store(pos.wrapping_add(1), Ordering::Relaxed);
        Some(out)
    }

    /// Whether the consumer would find nothing now (a snapshot; producers may publish at once).
    pub(crate) fn is_empty(&self) -> bool {
        let pos = self.header().head.load(Ordering::Relaxed);
        self.cell(pos).seq.load(Ordering::Acquire) != pos.wrapping_add(1)
    }

    /// Consumer side of the parking handshake. Marks the consumer parked, then re-checks the
    /// ring after a full fence: returns true if the consumer may sleep (a producer that
    /// publishes from now on will see the flag and wake it), false if work arrived, in which
    /// case the flag is cleared again.
    pub(crate) fn prepare_park(&self) -> bool {
        let hdr = self.header();
        hdr.parked.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.is_empty() {
            return true;
        }
        hdr.parked.store(0, Ordering::SeqCst);
        false
    }

    /// Clears the parked flag after a wake-up (the waker usually cleared it already).
    pub(crate) fn unpark(&self) {
        self.header().parked.store(0, Ordering::SeqCst);
    }

    /// Producer side of the handshake, called after `push`: true if the consumer was parked and
    /// this caller won the right (and duty) to wake it.
    pub(crate) fn take_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        let parked = &self.header().parked;
        parked.load(Ordering::Relaxed) == 1 && parked.swap(0, Ordering::SeqCst) == 1
    }

    /// Number of descriptors published and not yet consumed (approximate under concurrency).
    pub(crate) fn len(&self) -> u64 {
        let hdr = self.header();
        let tail = hdr.tail.load(Ordering::Relaxed);
        let head = hdr.head.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(self.mask + 1)
    }
}
