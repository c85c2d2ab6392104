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
        ring.header().hungry.store(0, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        ring
    }

    /// A second view of the same ring, for another part of the runtime.
    ///
    /// # Safety
    /// As `init`'s contract: the memory must outlive the new view too.
    pub(crate) unsafe fn alias(&self) -> Ring {
        Ring {
            hdr: self.hdr,
            cells: self.cells,
            mask: self.mask,
        }
    }

    /// Counts one more waiter for what only the consumer can free (the submission ring's
    /// reply slots, `tandem_ring_header::hungry`); producers read it after they push.
    pub(crate) fn hunger(&self) {
        self.header().hungry.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts one waiter fewer.
    pub(crate) fn fed(&self) {
        self.header().hungry.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether someone waits for what only the consumer can free, as Go reads it after pushing
    /// a release (tests play Go): its push and this read are sequentially consistent (Go's
    /// atomics are), so either it sees the waiter, or the waiter's raise and wake-up come
    /// after the push and find the release.
    #[cfg(test)]
    pub(crate) fn is_hungry(&self) -> bool {
        fence(Ordering::SeqCst);
        self.header().hungry.load(Ordering::SeqCst) != 0
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
        // A compare-and-swap, not a swap: losing the race writes nothing, so it can never
        // land after (and undo) a consumer's re-arm.
        parked.load(Ordering::Relaxed) == 1
            && parked
                .compare_exchange(1, 0, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the consumer's parked flag is up: a snapshot, for the other side's poller
    /// deciding whether to spin, and tests of the wake-up handshake.
    pub(crate) fn is_parked(&self) -> bool {
        self.header().parked.load(Ordering::SeqCst) == 1
    }

    /// Number of descriptors published and not yet consumed (approximate under concurrency).
    pub(crate) fn len(&self) -> u64 {
        let hdr = self.header();
        // Head first: it only grows, so a tail read after it is never behind it (reading tail
        // first could see head pass it and wrap to "full").
        let head = hdr.head.load(Ordering::Acquire);
        let tail = hdr.tail.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.mask + 1)
    }
}

/// A ring in heap memory for tests: the header and cells the shared region would hold, built
/// field by field (under loom the atomics are loom's and must be created inside the model).
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) struct HeapRing {
    ring: Ring,
    hdr: *mut tandem_ring_header,
    cells: *mut [tandem_desc],
}

#[cfg(any(test, feature = "bench-internals"))]
impl HeapRing {
    /// A fresh ring of `capacity` cells (a power of two), initialised as the runtime does.
    pub(crate) fn new(capacity: u32) -> HeapRing {
        use crate::sync::{AtomicU32, AtomicU64};
        assert!(capacity.is_power_of_two());
        let hdr = Box::into_raw(Box::new(tandem_ring_header {
            tail: AtomicU64::new(0),
            _pad_tail: [0; 7],
            head: AtomicU64::new(0),
            _pad_head: [0; 7],
            parked: AtomicU32::new(0),
            hungry: AtomicU32::new(0),
            _pad_parked: [0; 14],
        }));
        let cells: Box<[tandem_desc]> = (0..capacity)
            .map(|_| tandem_desc {
                seq: AtomicU64::new(0),
                token: AtomicU64::new(0),
                kind: AtomicU32::new(0),
                slot: AtomicU32::new(0),
                len: AtomicU32::new(0),
                flags: AtomicU32::new(0),
                reply_slot: AtomicU32::new(0),
                reply_len: AtomicU32::new(0),
                started_ns: AtomicU64::new(0),
                finished_ns: AtomicU64::new(0),
                aux: AtomicU64::new(0),
            })
            .collect();
        let cells = Box::into_raw(cells);
        // SAFETY: both allocations are zeroed, live until `drop`, never move (they are only
        // reached through these raw pointers), and nobody else sees them before `init` returns.
        let ring = unsafe { Ring::init(hdr, cells as *const tandem_desc, capacity) };
        HeapRing { ring, hdr, cells }
    }

    /// The header, for tests that place the cursors (e.g. next to the u64 wrap-around).
    #[cfg(test)]
    pub(crate) fn header(&self) -> &tandem_ring_header {
        // SAFETY: owned by `self` and live until `drop`.
        unsafe { &*self.hdr }
    }

    /// The cells, for tests that place sequence numbers by hand.
    #[cfg(test)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn cells(&self) -> &[tandem_desc] {
        // SAFETY: owned by `self` and live until `drop`.
        unsafe { &*self.cells }
    }
}

#[cfg(any(test, feature = "bench-internals"))]
impl std::ops::Deref for HeapRing {
    type Target = Ring;
    fn deref(&self) -> &Ring {
        &self.ring
    }
}

#[cfg(any(test, feature = "bench-internals"))]
impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: both pointers came from `Box::into_raw` in `new` and are freed once, here;
        // `&mut self` proves no view of them is still borrowed.
        unsafe {
            drop(Box::from_raw(self.cells));
            drop(Box::from_raw(self.hdr));
        }
    }
}

// SAFETY: the pointed-to memory consists of atomics and is owned by the value.
#[cfg(any(test, feature = "bench-internals"))]
unsafe impl Send for HeapRing {}
// SAFETY: as above; shared access goes through atomics only.
#[cfg(any(test, feature = "bench-internals"))]
unsafe impl Sync for HeapRing {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::HeapRing;
    use crate::layout::tandem_desc;
    use crate::sync::Ordering::Relaxed;
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread;
    use std::time::Duration;

    /// Writes a descriptor whose fields are all derived from `token`, so a torn or stale read
    /// shows up as a mismatch.
    fn fill(d: &tandem_desc, token: u64) {
        d.token.store(token, Relaxed);
        d.kind.store(token as u32 ^ 0x5a5a_5a5a, Relaxed);
        d.slot.store((token >> 32) as u32, Relaxed);
        d.len.store(!(token as u32), Relaxed);
        d.aux.store(token.rotate_left(17), Relaxed);
    }

    /// Reads a descriptor written by `fill`, checking its fields agree, and returns the token.
    fn read(d: &tandem_desc) -> u64 {
        let token = d.token.load(Relaxed);
        assert_eq!(
            d.kind.load(Relaxed),
            token as u32 ^ 0x5a5a_5a5a,
            "kind of {token:#x}"
        );
        assert_eq!(
            d.slot.load(Relaxed),
            (token >> 32) as u32,
            "slot of {token:#x}"
        );
        assert_eq!(d.len.load(Relaxed), !(token as u32), "len of {token:#x}");
        assert_eq!(
            d.aux.load(Relaxed),
            token.rotate_left(17),
            "aux of {token:#x}"
        );
        token
    }

    #[test]
    fn many_producers_one_consumer_every_token_once_in_producer_order() {
        const PRODUCERS: u64 = 4;
        const PER_PRODUCER: u64 = 10_000;
        let ring = Arc::new(HeapRing::new(64));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut full = 0u64;
                    for i in 0..PER_PRODUCER {
                        let token = p << 32 | i;
                        while !ring.push(|d| fill(d, token)) {
                            full += 1;
                            thread::yield_now();
                        }
                    }
                    full
                })
            })
            .collect();
        let mut next = [0u64; PRODUCERS as usize];
        let mut seen = 0;
        while seen < PRODUCERS * PER_PRODUCER {
            match ring.pop(read) {
                Some(token) => {
                    let (p, i) = ((token >> 32) as usize, token & 0xffff_ffff);
                    assert!(p < PRODUCERS as usize, "unknown producer in {token:#x}");
                    assert_eq!(i, next[p], "producer {p}: out of order or duplicated");
                    next[p] += 1;
                    seen += 1;
                }
                None => thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(next, [PER_PRODUCER; PRODUCERS as usize]);
        assert!(ring.is_empty());
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.pop(read), None);
    }

    #[test]
    fn full_ring_refuses_without_calling_fill_and_keeps_its_contents() {
        let ring = HeapRing::new(4);
        for t in 0..4 {
            assert!(ring.push(|d| fill(d, t)));
        }
        assert_eq!(ring.len(), 4);
        let mut called = false;
        assert!(!ring.push(|_| called = true), "a full ring accepted a push");
        assert!(!called, "fill ran for a refused push");
        assert_eq!(ring.pop(read), Some(0));
        assert!(ring.push(|d| fill(d, 4)), "a freed cell was not reusable");
        assert!(!ring.push(|d| fill(d, 99)));
        let drained: Vec<u64> = std::iter::from_fn(|| ring.pop(read)).collect();
        assert_eq!(drained, [1, 2, 3, 4]);
    }

    #[test]
    fn len_and_is_empty_follow_pushes_and_pops_across_many_laps() {
        let ring = HeapRing::new(8);
        assert!(ring.is_empty());
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.pop(read), None);
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        // Uneven batches so head and tail meet every cell at every phase.
        for lap in 0..100u64 {
            for _ in 0..(lap % 8) + 1 {
                if next_in - next_out == 8 {
                    assert!(!ring.push(|d| fill(d, next_in)), "pushed into a full ring");
                    continue;
                }
                assert!(ring.push(|d| fill(d, next_in)));
                next_in += 1;
                assert!(!ring.is_empty());
                assert_eq!(ring.len(), next_in - next_out);
            }
            for _ in 0..(lap * 5 % 8) + 1 {
                if let Some(t) = ring.pop(read) {
                    assert_eq!(t, next_out);
                    next_out += 1;
                }
                assert_eq!(ring.len(), next_in - next_out);
                assert_eq!(ring.is_empty(), next_in == next_out);
            }
        }
        while let Some(t) = ring.pop(read) {
            assert_eq!(t, next_out);
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
    }

    #[test]
    fn positions_wrap_around_u64() {
        let ring = HeapRing::new(4);
        // Place both cursors just below 2^64, as if 2^64 - 2 descriptors had gone through.
        let start = u64::MAX - 1;
        ring.header().head.store(start, Relaxed);
        ring.header().tail.store(start, Relaxed);
        for k in 0..4u64 {
            let pos = start.wrapping_add(k);
            ring.cells()[(pos & 3) as usize].seq.store(pos, Relaxed);
        }
        for t in 0..4 {
            assert!(ring.push(|d| fill(d, t)));
        }
        assert!(!ring.push(|d| fill(d, 9)), "full across the wrap");
        assert_eq!(ring.len(), 4);
        for t in 0..10 {
            assert_eq!(ring.pop(read), Some(t));
            assert!(ring.push(|d| fill(d, t + 4)));
        }
        assert_eq!(ring.header().head.load(Relaxed), start.wrapping_add(10));
    }

    /// An eventfd stand-in: a counter a sleeper waits on.
    #[derive(Default)]
    struct Event {
        count: Mutex<u64>,
        cv: Condvar,
    }

    impl Event {
        fn signal(&self) {
            *self.count.lock().unwrap() += 1;
            self.cv.notify_one();
        }
    }

    #[test]
    fn parked_consumer_is_always_woken() {
        const PRODUCERS: u64 = 3;
        const PER_PRODUCER: u64 = 20_000;
        let ring = Arc::new(HeapRing::new(16));
        let event = Arc::new(Event::default());
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (ring, event) = (ring.clone(), event.clone());
                thread::spawn(move || {
                    let mut signals = 0u64;
                    for i in 0..PER_PRODUCER {
                        while !ring.push(|d| fill(d, p << 32 | i)) {
                            thread::yield_now();
                        }
                        if ring.take_wakeup() {
                            signals += 1;
                            event.signal();
                        }
                        // Pause now and then so the consumer finds the ring empty and parks.
                        if i % 64 == p {
                            thread::sleep(Duration::from_micros(20));
                        }
                    }
                    signals
                })
            })
            .collect();

        let (mut seen, mut parks, mut attempts) = (0, 0u64, 0u64);
        let mut next = [0u64; PRODUCERS as usize];
        while seen < PRODUCERS * PER_PRODUCER {
            if let Some(token) = ring.pop(read) {
                let (p, i) = ((token >> 32) as usize, token & 0xffff_ffff);
                assert_eq!(i, next[p]);
                next[p] += 1;
                seen += 1;
                continue;
            }
            attempts += 1;
            if !ring.prepare_park() {
                continue;
            }
            parks += 1;
            let mut count = event.count.lock().unwrap();
            while *count == 0 {
                let (c, timeout) = event
                    .cv
                    .wait_timeout(count, Duration::from_secs(5))
                    .unwrap();
                count = c;
                // Five seconds asleep with work in the ring and no signal pending: the producer
                // that published it saw no parked flag. That is the lost wake-up.
                assert!(
                    !timeout.timed_out() || *count > 0 || ring.is_empty(),
                    "lost wake-up: consumer parked, ring holds {} descriptors, no signal",
                    ring.len()
                );
            }
            *count = 0;
            drop(count);
            ring.unpark();
        }
        let signals: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        assert!(
            parks > 0,
            "the consumer never parked: the test did not exercise the handshake"
        );
        // Every signal took a parked flag some prepare_park raised, and each raise is taken once.
        assert!(
            signals <= attempts,
            "{signals} signals for {attempts} park attempts"
        );
        assert!(ring.is_empty());
    }
}

/// Loom models of the ring: run with
/// `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p tandem --release --lib loom`.
/// Each is small (capacity 2, two producers) so loom explores every interleaving and every
/// value a relaxed or acquire load may return under the C++/Rust memory model.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::HeapRing;
    use crate::layout::tandem_desc;
    use crate::sync::Ordering::{Relaxed, SeqCst};
    use loom::sync::atomic::{AtomicU32, AtomicU64};
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    /// Payload derived from the token; written with relaxed stores, as production does.
    fn fill(d: &tandem_desc, token: u64) {
        d.token.store(token, Relaxed);
        d.kind.store(token as u32 ^ 0x5a, Relaxed);
        d.slot.store(token as u32 + 7, Relaxed);
    }

    /// Reads a descriptor and checks the payload is the one its producer wrote, not a stale or
    /// partly written one.
    fn read(d: &tandem_desc) -> u64 {
        let token = d.token.load(Relaxed);
        assert_eq!(
            d.kind.load(Relaxed),
            token as u32 ^ 0x5a,
            "stale kind for {token}"
        );
        assert_eq!(
            d.slot.load(Relaxed),
            token as u32 + 7,
            "stale slot for {token}"
        );
        token
    }

    /// Tokens are 1-based so a never-written cell (all zero) fails `read`'s checks.
    fn token(producer: u64, i: u64) -> u64 {
        1 + producer * 16 + i
    }

    /// Two producers push one value each into a ring of two cells while one consumer pops
    /// until it has both: each arrives exactly once, with the payload its producer wrote.
    #[test]
    fn loom_two_producers_one_push_each_exactly_once() {
        loom::model(|| {
            let ring = Arc::new(HeapRing::new(2));
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let ring = ring.clone();
                    thread::spawn(move || assert!(ring.push(|d| fill(d, token(p, 0)))))
                })
                .collect();
            let mut got = Vec::new();
            while got.len() < 2 {
                match ring.pop(read) {
                    Some(t) => got.push(t),
                    None => thread::yield_now(),
                }
            }
            for p in producers {
                p.join().unwrap();
            }
            got.sort_unstable();
            assert_eq!(got, [token(0, 0), token(1, 0)]);
            assert!(ring.pop(read).is_none());
            assert!(ring.is_empty());
        });
    }

    /// Cell reuse: three pushes (one by producer 0, two by producer 1) race a consumer that
    /// makes `pops` attempts, through a ring of two cells, so the third claim reuses the cell the
    /// consumer frees concurrently. Nobody spins: a push may find the ring full and give up,
    /// and what the consumer does not take is drained after the threads finish. Every value
    /// pushed is then received exactly once, producer 1's in order, and no payload read is
    /// stale or overwritten by the next lap's producer (the consumer's reads happen before its
    /// release of `seq = pos + capacity`, which the reusing producer acquires).
    fn reuse_model(pops: usize) {
        loom::model(move || {
            let ring = Arc::new(HeapRing::new(2));
            let consumer = {
                let ring = ring.clone();
                thread::spawn(move || (0..pops).filter_map(|_| ring.pop(read)).collect::<Vec<_>>())
            };
            let p0 = {
                let ring = ring.clone();
                thread::spawn(move || {
                    let t = token(0, 0);
                    ring.push(|d| fill(d, t))
                        .then_some(t)
                        .into_iter()
                        .collect::<Vec<_>>()
                })
            };
            let p1 = {
                let ring = ring.clone();
                thread::spawn(move || {
                    (0..2)
                        .map(|i| token(1, i))
                        .filter(|&t| ring.push(|d| fill(d, t)))
                        .collect::<Vec<_>>()
                })
            };
            let mut pushed = p0.join().unwrap();
            pushed.extend(p1.join().unwrap());
            let mut got = consumer.join().unwrap();
            got.extend(std::iter::from_fn(|| ring.pop(read)));

            // The first two claims are on the first lap, whose cells are free from the start.
            assert!(
                pushed.len() >= 2,
                "a push failed on an empty lap: {pushed:?}"
            );
            let ones: Vec<u64> = got.iter().copied().filter(|&t| t > 16).collect();
            assert!(ones.is_sorted(), "producer 1 out of order: {got:?}");
            got.sort_unstable();
            pushed.sort_unstable();
            assert_eq!(got, pushed, "received != pushed");
            assert!(ring.is_empty());
        });
    }

    #[test]
    fn loom_cell_reuse_one_pop_races_three_pushes() {
        reuse_model(1);
    }

    #[test]
    fn loom_cell_reuse_two_pops_race_three_pushes() {
        reuse_model(2);
    }

    /// A full ring refuses a push without calling `fill`, and never overwrites a cell that has
    /// not been consumed, while a consumer frees one cell concurrently.
    #[test]
    fn loom_full_ring_refuses_and_never_overwrites() {
        loom::model(|| {
            let ring = Arc::new(HeapRing::new(2));
            assert!(ring.push(|d| fill(d, token(2, 0))));
            assert!(ring.push(|d| fill(d, token(2, 1))));
            // Full: refused, and fill never runs.
            assert!(!ring.push(|_| panic!("fill ran for a refused push")));

            let fills = Arc::new(AtomicU32::new(0));
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let (ring, fills) = (ring.clone(), fills.clone());
                    thread::spawn(move || {
                        let ok = ring.push(|d| {
                            fills.fetch_add(1, Relaxed);
                            fill(d, token(p, 0))
                        });
                        ok.then_some(token(p, 0))
                    })
                })
                .collect();
            let consumer = {
                let ring = ring.clone();
                thread::spawn(move || ring.pop(read))
            };
            let popped = consumer.join().unwrap();
            let pushed: Vec<u64> = producers
                .into_iter()
                .filter_map(|p| p.join().unwrap())
                .collect();

            // The consumer found the first value (the ring was full when it started).
            assert_eq!(popped, Some(token(2, 0)));
            // One cell was freed, so at most one of the two racing pushes got in.
            assert!(
                pushed.len() <= 1,
                "two pushes fit in one free cell: {pushed:?}"
            );
            assert_eq!(
                fills.load(Relaxed) as usize,
                pushed.len(),
                "fill ran for a refused push"
            );
            // What remains is the unconsumed value, intact, then whatever was pushed.
            assert_eq!(
                ring.pop(read),
                Some(token(2, 1)),
                "an unconsumed cell was overwritten"
            );
            let rest: Vec<u64> = std::iter::from_fn(|| ring.pop(read)).collect();
            assert_eq!(rest, pushed);
        });
    }

    /// One round of the parking handshake. The consumer finds the ring empty, calls
    /// `prepare_park`, and sleeps if it returns true; each producer pushes and, if
    /// `take_wakeup` says so, writes the "eventfd" (a counter). Afterwards: a consumer that
    /// slept with a value in the ring it had not seen must have a signal pending, and no park is
    /// signalled twice.
    #[test]
    fn loom_park_single_round_never_loses_the_wakeup() {
        loom::model(|| {
            let ring = Arc::new(HeapRing::new(2));
            let eventfd = Arc::new(AtomicU64::new(0));
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let (ring, eventfd) = (ring.clone(), eventfd.clone());
                    thread::spawn(move || {
                        assert!(ring.push(|d| fill(d, token(p, 0))));
                        if ring.take_wakeup() {
                            eventfd.fetch_add(1, SeqCst);
                        }
                    })
                })
                .collect();

            let mut popped = 0;
            while ring.pop(read).is_some() {
                popped += 1;
            }
            let slept = popped == 0 && ring.prepare_park();
            for p in producers {
                p.join().unwrap();
            }
            let signals = eventfd.load(SeqCst);
            if slept {
                assert_eq!(
                    signals, 1,
                    "consumer parked on an empty ring; expected exactly one wake-up"
                );
                assert_eq!(
                    ring.header().parked.load(SeqCst),
                    0,
                    "the waker must lower the flag"
                );
            }
            // A consumer that did not sleep may still get one harmless spurious signal.
            assert!(signals <= 1, "a single park was signalled {signals} times");
        });
    }

    /// The whole consumer loop: drain, prepare to park, sleep until the "eventfd" is written,
    /// drain it, unpark, repeat, until both producers' values have arrived. A lost wake-up shows
    /// as a consumer asleep, with no signal pending, after every producer finished, while the
    /// ring still holds a value.
    #[test]
    fn loom_park_loop_consumer_receives_everything() {
        loom::model(|| {
            let ring = Arc::new(HeapRing::new(2));
            let eventfd = Arc::new(AtomicU64::new(0));
            let done = Arc::new(AtomicU32::new(0));
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let (ring, eventfd, done) = (ring.clone(), eventfd.clone(), done.clone());
                    thread::spawn(move || {
                        assert!(ring.push(|d| fill(d, token(p, 0))));
                        if ring.take_wakeup() {
                            eventfd.fetch_add(1, SeqCst);
                        }
                        done.fetch_add(1, SeqCst);
                    })
                })
                .collect();

            let mut received = 0;
            'outer: while received < 2 {
                while ring.pop(read).is_some() {
                    received += 1;
                }
                if received == 2 || !ring.prepare_park() {
                    continue;
                }
                // Asleep on the eventfd.
                loop {
                    if eventfd.swap(0, SeqCst) > 0 {
                        break;
                    }
                    if done.load(SeqCst) == 2 && eventfd.load(SeqCst) == 0 {
                        // Nobody is left to wake us: that is only fine if nothing is waiting.
                        assert!(
                            ring.is_empty(),
                            "lost wake-up: asleep with a value in the ring"
                        );
                        break 'outer;
                    }
                    thread::yield_now();
                }
                ring.unpark();
            }
            for p in producers {
                p.join().unwrap();
            }
            assert_eq!(received, 2);
        });
    }

    /// Lazy releases (completion.rs; go/internal/engine/reply.go): the consumer is parked; a
    /// producer of a release record (Go) wakes it only if it then sees a writer hungry, and a
    /// writer out of reply slots raises hungry, then wakes the consumer itself if it is parked.
    /// Whatever the interleaving, the consumer never sleeps for good with the release in the
    /// ring while the writer waits for it.
    #[test]
    fn loom_a_hungry_writer_is_never_left_beside_a_lazy_release() {
        loom::model(|| {
            let ring = Arc::new(HeapRing::new(2));
            let eventfd = Arc::new(AtomicU64::new(0));
            let done = Arc::new(AtomicU32::new(0));
            assert!(ring.prepare_park(), "the poller parks on an empty ring");
            let releaser = {
                let (ring, eventfd, done) = (ring.clone(), eventfd.clone(), done.clone());
                thread::spawn(move || {
                    assert!(ring.push(|d| fill(d, token(0, 0))));
                    if ring.is_hungry() && ring.take_wakeup() {
                        eventfd.fetch_add(1, SeqCst);
                    }
                    done.fetch_add(1, SeqCst);
                })
            };
            let writer = {
                let (ring, eventfd, done) = (ring.clone(), eventfd.clone(), done.clone());
                thread::spawn(move || {
                    ring.hunger();
                    if ring.take_wakeup() {
                        eventfd.fetch_add(1, SeqCst);
                    }
                    done.fetch_add(1, SeqCst);
                })
            };
            'outer: loop {
                // Asleep on the eventfd.
                loop {
                    if eventfd.swap(0, SeqCst) > 0 {
                        break;
                    }
                    if done.load(SeqCst) == 2 && eventfd.load(SeqCst) == 0 {
                        assert!(
                            ring.is_empty(),
                            "asleep for good while a hungry writer waits for the release"
                        );
                        break 'outer;
                    }
                    thread::yield_now();
                }
                ring.unpark();
                loop {
                    if ring.pop(read).is_some() {
                        break 'outer;
                    }
                    if ring.prepare_park() {
                        break;
                    }
                }
            }
            releaser.join().unwrap();
            writer.join().unwrap();
        });
    }

    /// The crossing (kick.rs): the consumer has parked, and each producer that wins the
    /// wake-up duty drains the ring itself instead of waking it: it takes the consumer's role
    /// if free, drains, lets go, and re-arms the parked flag for the sleeper, looping while
    /// the re-check finds more. With nobody ever writing the eventfd, no value may be left
    /// behind, and the sleeper must end re-armed so the next producer crosses again.
    #[test]
    fn loom_kick_strands_nothing() {
        loom::model(|| {
            let ring = Arc::new(HeapRing::new(2));
            let consumer = Arc::new(Mutex::new(()));
            let received = Arc::new(AtomicU32::new(0));
            assert!(ring.prepare_park(), "the poller parks on an empty ring");
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let (ring, consumer, received) =
                        (ring.clone(), consumer.clone(), received.clone());
                    thread::spawn(move || {
                        assert!(ring.push(|d| fill(d, token(p, 0))));
                        if ring.take_wakeup() {
                            kick(&ring, &consumer, &received);
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            assert_eq!(received.load(SeqCst), 2, "a submission was stranded");
            assert!(ring.is_empty());
            assert_eq!(
                ring.header().parked.load(SeqCst),
                1,
                "the sleeping consumer must be left re-armed"
            );
        });
    }

    /// The crossing against an awake consumer: the poller loop (drain under the consumer's
    /// role, re-check in prepare_park, sleep on the eventfd) and two producers that kick when
    /// they win the duty. Everything arrives exactly once, and the poller is never left
    /// asleep with a value in the ring.
    #[test]
    fn loom_kick_and_poller_share_the_consumer_role() {
        loom::model(|| {
            let ring = Arc::new(HeapRing::new(2));
            let consumer = Arc::new(Mutex::new(()));
            let received = Arc::new(AtomicU32::new(0));
            let done = Arc::new(AtomicU32::new(0));
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let (ring, consumer, received, done) = (
                        ring.clone(),
                        consumer.clone(),
                        received.clone(),
                        done.clone(),
                    );
                    thread::spawn(move || {
                        assert!(ring.push(|d| fill(d, token(p, 0))));
                        if ring.take_wakeup() {
                            kick(&ring, &consumer, &received);
                        }
                        done.fetch_add(1, SeqCst);
                    })
                })
                .collect();
            loop {
                {
                    let _role = consumer.lock().unwrap();
                    while ring.pop(read).is_some() {
                        received.fetch_add(1, SeqCst);
                    }
                }
                if received.load(SeqCst) == 2 {
                    break;
                }
                if !ring.prepare_park() {
                    continue;
                }
                // Asleep: kicks never write the eventfd, so sleep until every producer is
                // done, then nothing may be waiting.
                while done.load(SeqCst) < 2 {
                    thread::yield_now();
                }
                assert!(
                    ring.is_empty(),
                    "the poller sleeps with a value in the ring"
                );
                break;
            }
            for p in producers {
                p.join().unwrap();
            }
            assert_eq!(received.load(SeqCst), 2);
        });
    }

    /// A producer's kick, as kick.rs does it: drain, taking the consumer's role for each pop
    /// (waiting for it), then re-arm; again while the re-check finds more.
    fn kick(ring: &HeapRing, consumer: &Mutex<()>, received: &AtomicU32) {
        loop {
            loop {
                let role = consumer.lock().unwrap();
                let popped = ring.pop(read).is_some();
                drop(role);
                if !popped {
                    break;
                }
                received.fetch_add(1, SeqCst);
            }
            if ring.prepare_park() {
                return;
            }
        }
    }

    /// A helping crossing, as kick.rs's `help`: no duty; pop while the consumer's role is
    /// free, re-arm nothing.
    fn help(ring: &HeapRing, consumer: &Mutex<()>, received: &AtomicU32) {
        loop {
            let Ok(role) = consumer.try_lock() else {
                return;
            };
            let popped = ring.pop(read).is_some();
            drop(role);
            if !popped {
                return;
            }
            received.fetch_add(1, SeqCst);
        }
    }

    /// Crossings with helpers (kick.rs, go/internal/engine/crossing.go): the consumer has
    /// parked; a producer that wins the wake-up duty kicks, one that does not while a crossing
    /// is in progress helps. Nobody writes the eventfd: every value must still be consumed,
    /// and the sleeper left re-armed.
    #[test]
    fn loom_helpers_strand_nothing() {
        loom::model(|| {
            let ring = Arc::new(HeapRing::new(2));
            let consumer = Arc::new(Mutex::new(()));
            let received = Arc::new(AtomicU32::new(0));
            let crossing = Arc::new(AtomicU32::new(0));
            assert!(ring.prepare_park(), "the poller parks on an empty ring");
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let (ring, consumer, received, crossing) = (
                        ring.clone(),
                        consumer.clone(),
                        received.clone(),
                        crossing.clone(),
                    );
                    thread::spawn(move || {
                        assert!(ring.push(|d| fill(d, token(p, 0))));
                        if ring.take_wakeup() {
                            crossing.fetch_add(1, SeqCst);
                            kick(&ring, &consumer, &received);
                            crossing.fetch_sub(1, SeqCst);
                        } else if crossing.load(SeqCst) > 0 {
                            help(&ring, &consumer, &received);
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            assert_eq!(received.load(SeqCst), 2, "a submission was stranded");
            assert!(ring.is_empty());
            assert_eq!(
                ring.header().parked.load(SeqCst),
                1,
                "the sleeping consumer must be left re-armed"
            );
        });
    }
}

/// The ring alone in heap memory, for the criterion benchmarks (`benches/ring.rs`): not part
/// of tandem's API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub struct BenchRing(HeapRing);

#[cfg(feature = "bench-internals")]
impl BenchRing {
    /// A ring of `capacity` cells (a power of two).
    pub fn new(capacity: u32) -> BenchRing {
        BenchRing(HeapRing::new(capacity))
    }
    /// Publishes a descriptor carrying `token`; false when full.
    pub fn push(&self, token: u64) -> bool {
        self.0.push(|d| {
            d.token.store(token, crate::sync::Ordering::Relaxed);
            d.kind.store(1, crate::sync::Ordering::Relaxed);
        })
    }
    /// Takes the next descriptor's token (single consumer).
    pub fn pop(&self) -> Option<u64> {
        self.0.pop(|d| d.token.load(crate::sync::Ordering::Relaxed))
    }
}
