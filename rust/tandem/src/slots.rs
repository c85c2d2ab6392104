//! The two slab arenas of the shared region and who owns each slot.
//!
//! A request slot is Go's until it publishes an event naming it, then Rust's until the
//! completion naming it is published. A reply slot is Rust's until a completion lends it to
//! Go, then Go's until a release record hands it back. Every hand-over swaps the slot's owner
//! flag, so a slot handed over by a side that did not own it is counted as a violation
//! instead of being acted on twice.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::waiters::Waiters;

use crate::config::{Config, RegionLayout};
use crate::envelope::{self, DecodeError, Envelope};
use crate::layout::{
    TANDEM_DELIVERY_CANCELLABLE, TANDEM_DELIVERY_SHADOW, TANDEM_DELIVERY_TIMED,
    TANDEM_DELIVERY_WAITED, tandem_delivery,
};
use crate::shm::Region;
use crate::stats::Counters;
use crate::sync::{AtomicU32, Ordering};

const OWNER_GO: u32 = 0;
const OWNER_RUST: u32 = 1;

/// A slot's owner flag, on a cache line of its own. Flags packed sixteen to a line made every
/// hand-over on one core pull the line from the other, whose slots shared it: under load that
/// miss was the dearest step of taking a slot and of giving it back.
///
/// The slot's counts sit on the same line, written by the slot's holder only (a load and a
/// store, no read-modify-write), so counting touches no line but the one the hand-over has
/// just written. A count shared by every slot would be written by both cores for every event.
/// What the runtime holds is read from the flags themselves (`RequestSlots::held`,
/// `ReplySlots::lent`).
#[repr(align(64))]
struct Owner {
    flag: AtomicU32,
    /// Request slots: the events run in this slot on their submitter's thread
    /// (crate::kick::run); `RequestSlots::runs` sums them.
    runs: AtomicU64,
    /// Request slots: completions given back (`RequestSlots::completed`). Reply slots:
    /// releases from Go (`ReplySlots::releases`).
    done: AtomicU64,
}

/// Adds one to a count only the holder of its slot writes. Holders follow one another
/// through the flag's swaps, which order each one's store before the next one's load.
fn bump(count: &AtomicU64) {
    count.store(count.load(Relaxed) + 1, Relaxed);
}

impl Owner {
    fn swap(&self, who: u32, order: Ordering) -> u32 {
        self.flag.swap(who, order)
    }

    fn store(&self, who: u32, order: Ordering) {
        self.flag.store(who, order)
    }
}

fn owners(n: u32, who: u32) -> Box<[Owner]> {
    (0..n)
        .map(|_| Owner {
            flag: AtomicU32::new(who),
            runs: AtomicU64::new(0),
            done: AtomicU64::new(0),
        })
        .collect()
}

/// How many of `owners` `who` holds now. Sequentially consistent with the hand-overs: of two
/// slots handed over at once, the later one's reading sees both.
fn holding(owners: &[Owner], who: u32) -> u64 {
    let held = owners
        .iter()
        .filter(|o| o.flag.load(Ordering::SeqCst) == who);
    held.count() as u64
}

/// The sum of one count over `owners`.
fn total(owners: &[Owner], count: impl Fn(&Owner) -> &AtomicU64) -> u64 {
    owners.iter().map(|o| count(o).load(Relaxed)).sum()
}

/// Where a request slot's envelope starts: after its delivery header.
const ENVELOPE_AT: usize = std::mem::size_of::<tandem_delivery>();

/// The per-delivery facts of one event: from its request slot's header, or, for an event
/// with no slot (emitted and routed inside Rust, or a direct call), from its envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The delivery number, from 1 (0: unset, for an envelope that leaves it unset).
    pub(crate) attempt: u32,
    /// The delivery's deadline, Unix nanoseconds.
    pub(crate) deadline: Option<i64>,
    /// The submitter blocks until the outcome (`TANDEM_DELIVERY_WAITED`).
    pub(crate) waited: bool,
    /// Go wants the handler's start and end times (`TANDEM_DELIVERY_TIMED`).
    pub(crate) timed: bool,
    /// A shadow's copy: what the handler emits is discarded (`TANDEM_DELIVERY_SHADOW`).
    pub(crate) shadow: bool,
    /// Go may cancel the delivery (`TANDEM_DELIVERY_CANCELLABLE`).
    pub(crate) cancellable: bool,
}

impl Delivery {
    /// The facts an envelope carries, for an event that has no request slot.
    pub(crate) fn of_envelope(env: &Envelope<'_>) -> Delivery {
        Delivery {
            attempt: env.attempt,
            deadline: env.deadline,
            waited: false,
            // Nobody reads the handler time of an event with no slot (it completes in Rust).
            timed: false,
            shadow: false,
            cancellable: false,
        }
    }
}

/// The request arena: where Go writes the events it submits, each a `tandem_delivery` header
/// and then the envelope.
pub(crate) struct RequestSlots {
    region: Arc<Region>,
    arena: usize,
    stride: usize,
    size: u32,
    owner: Box<[Owner]>,
    counters: Arc<Counters>,
}

impl RequestSlots {
    pub(crate) fn new(
        region: Arc<Region>,
        layout: &RegionLayout,
        cfg: &Config,
        counters: Arc<Counters>,
    ) -> RequestSlots {
        RequestSlots {
            region,
            arena: layout.req_arena,
            stride: layout.req_stride,
            size: cfg.req_slot_size,
            owner: owners(cfg.req_slots, OWNER_GO),
            counters,
        }
    }

    /// Takes slot `slot` (an envelope of `len` bytes, submitted with `token`) from Go: the
    /// returned guard owns it until its completion is published. Returns None, counting a
    /// violation, if the descriptor names no valid slot: there is then nothing to complete.
    ///
    /// # Safety
    ///
    /// The guard points at these slots without counting a reference (a count both cores
    /// bumped for every event): it must be given back or dropped while they are alive. The
    /// runtime hands it straight to [`dispatch_slot`](crate::dispatch::dispatch_slot), whose
    /// future lives no longer than the runtime that owns the slots.
    pub(crate) unsafe fn take(&self, slot: u32, len: u32, token: u64) -> Option<RequestSlot> {
        if slot as usize >= self.owner.len() || len > self.size {
            self.counters.violations.fetch_add(1, Relaxed);
            return None;
        }
        // SeqCst: `held` reads the flags while shutdown waits (Counters::let_go).
        if self.owner[slot as usize].swap(OWNER_RUST, Ordering::SeqCst) != OWNER_GO {
            self.counters.violations.fetch_add(1, Relaxed);
        }
        Some(RequestSlot {
            slots: NonNull::from(self),
            index: slot,
            len,
            token,
        })
    }

    /// How many slots there are.
    pub(crate) fn count(&self) -> usize {
        self.owner.len()
    }

    /// The events run on their submitter's thread so far (`Stats::runs`).
    pub(crate) fn runs(&self) -> u64 {
        total(&self.owner, |o| &o.runs)
    }

    /// The completions given back so far (`Stats::completed`).
    pub(crate) fn completed(&self) -> u64 {
        total(&self.owner, |o| &o.done)
    }

    /// The slots Rust holds now (`Stats::requests_held`; shutdown waits for 0).
    pub(crate) fn held(&self) -> u64 {
        holding(&self.owner, OWNER_RUST)
    }

    fn slot_ptr(&self, slot: u32) -> *mut u8 {
        assert!((slot as usize) < self.owner.len());
        // SAFETY: slot < req_slots (asserted), so the offset lies inside the region.
        unsafe {
            self.region
                .base()
                .add(self.arena + slot as usize * self.stride)
        }
    }

    /// Plays Go's part (tests, the conformance harness): writes the delivery header, with the
    /// index of the envelope's fields Go's encoder would write, and the envelope `bytes` into
    /// slot `slot`.
    #[cfg(all(not(loom), any(test, feature = "conform")))]
    pub(crate) fn write_as_go(&self, slot: u32, delivery: Delivery, bytes: &[u8]) {
        assert!(bytes.len() <= self.size as usize && (slot as usize) < self.owner.len());
        let header = tandem_delivery {
            deadline_ns: delivery.deadline.map_or(0, |d| d.max(1) as u64),
            attempt: delivery.attempt,
            flags: if delivery.waited {
                TANDEM_DELIVERY_WAITED
            } else {
                0
            } | if delivery.timed {
                TANDEM_DELIVERY_TIMED
            } else {
                0
            } | if delivery.shadow {
                TANDEM_DELIVERY_SHADOW
            } else {
                0
            },
            fields: envelope::index_of(bytes),
        };
        let p = self.slot_ptr(slot);
        let header = tandem_delivery {
            flags: header.flags
                | if delivery.cancellable {
                    TANDEM_DELIVERY_CANCELLABLE
                } else {
                    0
                },
            ..header
        };
        // SAFETY: the test plays Go, which owns the slot until it publishes it; the header and
        // the envelope fit the stride (checked above), and the slot start is aligned.
        unsafe {
            p.cast::<tandem_delivery>().write(header);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(ENVELOPE_AT), bytes.len());
        }
    }
}

/// One request slot Rust owns: from the moment the poller takes it off the submission ring
/// until the completion naming it is published, which consumes the guard
/// ([`RequestSlot::give_back`]). The handler's [`Event`](crate::Event) borrows the envelope
/// from the guard, so the compiler keeps the slot owned while the event is read; a task that
/// needs `'static` moves the guard in and builds the event inside.
///
/// Dropping a guard without giving it back is a bug: the slot would stay Rust's with no
/// completion to tell Go. In debug builds it panics; in release builds it counts a violation
/// and leaves the slot with Rust (it shows in `Stats::requests_held`, and Go settles the event
/// as abandoned at shutdown). The runtime gives every slot back, cancelled or not; only a
/// handler stuck past shutdown keeps its guard, and its task is never dropped early.
pub(crate) struct RequestSlot {
    /// The slots it came from, alive while the guard is ([`RequestSlots::take`]).
    slots: NonNull<RequestSlots>,
    index: u32,
    len: u32,
    token: u64,
}

// SAFETY: the guard reads the slots through a shared reference only, and `RequestSlots` is
// Sync: moving the guard to another thread, or sharing it, is sharing `&RequestSlots`.
unsafe impl Send for RequestSlot {}
// SAFETY: as for Send.
unsafe impl Sync for RequestSlot {}

impl RequestSlot {
    fn slots(&self) -> &RequestSlots {
        // SAFETY: the slots outlive the guard (the contract of `RequestSlots::take`).
        unsafe { self.slots.as_ref() }
    }

    /// The submitter's token, echoed in the completion.
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    /// The envelope, borrowed from the slot for as long as the guard is borrowed.
    pub(crate) fn envelope(&self) -> &[u8] {
        let p = self.slots().slot_ptr(self.index);
        // SAFETY: `take` checked len <= req_slot_size, and the stride holds the header and
        // req_slot_size bytes, so the range lies in the region. Go wrote it before publishing
        // the descriptor (release/acquire on its seq) and does not touch it until the
        // completion hands the slot back, which consumes this guard: the borrow of `self`
        // cannot outlive that.
        unsafe { std::slice::from_raw_parts(p.add(ENVELOPE_AT), self.len as usize) }
    }

    /// The delivery header Go wrote for this delivery.
    pub(crate) fn delivery(&self) -> Delivery {
        let p = self.slots().slot_ptr(self.index);
        // SAFETY: the header is at the slot's start, which is aligned for it (the arena is page
        // aligned, the stride a multiple of 64); Go wrote it before publishing and leaves it
        // alone while the guard lives.
        let h = unsafe { &*p.cast::<tandem_delivery>() };
        Delivery {
            attempt: h.attempt,
            deadline: (h.deadline_ns != 0).then_some(h.deadline_ns.min(i64::MAX as u64) as i64),
            waited: h.flags & TANDEM_DELIVERY_WAITED != 0,
            timed: h.flags & TANDEM_DELIVERY_TIMED != 0,
            shadow: h.flags & TANDEM_DELIVERY_SHADOW != 0,
            cancellable: h.flags & TANDEM_DELIVERY_CANCELLABLE != 0,
        }
    }

    /// The event's envelope, read through the index Go wrote of its fields (`tandem_fields`)
    /// when there is one that holds, else decoded.
    #[inline(always)]
    pub(crate) fn decode(&self) -> Result<Envelope<'_>, DecodeError> {
        let bytes = self.envelope();
        let p = self.slots().slot_ptr(self.index);
        // SAFETY: as for `delivery`: Go wrote the header, its index included, before
        // publishing, and leaves it alone while the guard lives, which the borrow keeps.
        let fields = unsafe { &(*p.cast::<tandem_delivery>()).fields };
        let indexed = envelope::read_indexed(bytes, fields);
        if indexed.is_ok() {
            return indexed;
        }
        envelope::decode(bytes)
    }

    /// Counts a run of the event in this slot (`Stats::runs`).
    pub(crate) fn count_run(&self) {
        bump(&self.slots().owner[self.index as usize].runs);
    }

    /// Hands the slot back to Go and returns its index, for the completion that names it,
    /// which the caller publishes next.
    pub(crate) fn give_back(self) -> u32 {
        let slots = self.slots();
        let owner = &slots.owner[self.index as usize];
        bump(&owner.done); // before the swap: the next holder's bump follows it
        if owner.swap(OWNER_GO, Ordering::SeqCst) != OWNER_RUST {
            slots.counters.violations.fetch_add(1, Relaxed);
        }
        slots.counters.let_go(slots);
        let index = self.index;
        // The guard's work is done; its Drop (the not-completed check) must not run.
        std::mem::forget(self);
        index
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.slots().counters.violations.fetch_add(1, Relaxed);
        if !std::thread::panicking() {
            debug_assert!(
                false,
                "request slot {} dropped without a completion (token {:#x})",
                self.index, self.token
            );
        }
    }
}

/// The reply arena: where Rust writes replies, error envelopes, emitted events and log
/// batches, lending each slot to Go with the completion that names it.
pub(crate) struct ReplySlots {
    region: Arc<Region>,
    arena: usize,
    stride: usize,
    size: usize,
    owner: Box<[Owner]>,
    free: FreeSet,
    /// Writers waiting for a free slot.
    freed: Waiters,
    counters: Arc<Counters>,
}

/// The free reply slots, a bit each, set while the slot is free. Taking a slot clears its bit
/// with one compare-and-swap and freeing it sets the bit with one atomic or: a reply's round
/// trip then costs two atomic operations on the free set, where a locked free list behind a
/// semaphore cost nine (each some 5 ns, on every event with a reply).
struct FreeSet {
    words: Box<[AtomicU64]>,
}

/// Where a thread's next take from a free set looks first: the word its last take found a
/// slot in. One per thread, so that threads taking at once look in different words (each a
/// line of its own work), and a shared hint is not one more line every take writes.
mod hint {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::Relaxed;

    /// Spreads the threads' first words.
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        static HINT: Cell<Option<usize>> = const { Cell::new(None) };
    }

    pub(super) fn get() -> usize {
        HINT.try_with(|h| {
            h.get().unwrap_or_else(|| {
                let first = NEXT.fetch_add(1, Relaxed);
                h.set(Some(first));
                first
            })
        })
        .unwrap_or(0)
    }

    pub(super) fn set(word: usize) {
        let _ = HINT.try_with(|h| h.set(Some(word)));
    }
}

impl FreeSet {
    fn new(n: u32) -> FreeSet {
        let n = n as usize;
        let words = (0..n.div_ceil(64))
            .map(|w| {
                let bits = (n - w * 64).min(64);
                AtomicU64::new(if bits == 64 { !0 } else { (1 << bits) - 1 })
            })
            .collect();
        FreeSet { words }
    }

    /// Takes the lowest free slot of the first word that has one, from this thread's hint on.
    fn take(&self) -> Option<u32> {
        let n = self.words.len();
        let start = hint::get() % n.max(1);
        for k in 0..n {
            let i = (start + k) % n;
            let word = &self.words[i];
            let mut bits = word.load(Relaxed);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                // SeqCst: against a waiting writer's count (ReplySlots::take).
                match word.compare_exchange_weak(bits, bits & !(1 << bit), SeqCst, Relaxed) {
                    Ok(_) => {
                        if i != start {
                            hint::set(i);
                        }
                        return Some((i * 64) as u32 + bit);
                    }
                    Err(now) => bits = now,
                }
            }
        }
        None
    }

    /// Frees `slot`, which the caller holds.
    fn put(&self, slot: u32) {
        let (i, bit) = (slot as usize / 64, slot % 64);
        let was = self.words[i].fetch_or(1 << bit, SeqCst);
        debug_assert!(was & (1 << bit) == 0, "reply slot {slot} freed twice");
    }

    #[cfg(all(test, not(loom)))]
    fn count(&self) -> u32 {
        self.words
            .iter()
            .map(|w| w.load(Relaxed).count_ones())
            .sum()
    }
}

impl ReplySlots {
    pub(crate) fn new(
        region: Arc<Region>,
        layout: &RegionLayout,
        cfg: &Config,
        counters: Arc<Counters>,
    ) -> ReplySlots {
        ReplySlots {
            region,
            arena: layout.rep_arena,
            stride: layout.rep_stride,
            size: cfg.rep_slot_size as usize,
            owner: owners(cfg.rep_slots, OWNER_RUST),
            free: FreeSet::new(cfg.rep_slots),
            freed: Waiters::default(),
            counters,
        }
    }

    /// Usable bytes per slot.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// How many slots there are.
    pub(crate) fn count(&self) -> usize {
        self.owner.len()
    }

    /// The slots lent to Go now (`Stats::replies_lent`).
    pub(crate) fn lent(&self) -> u64 {
        holding(&self.owner, OWNER_GO)
    }

    /// The releases Go has sent so far (`Stats::releases`).
    pub(crate) fn releases(&self) -> u64 {
        total(&self.owner, |o| &o.done)
    }

    /// Takes a free slot to write into, waiting (without blocking a thread) while every slot
    /// is lent to Go: writers are throttled, never refused.
    pub(crate) async fn take(&self) -> ReplyWriter<'_> {
        self.freed.until(|| self.try_take()).await
    }

    /// Takes a free slot if there is one now.
    pub(crate) fn try_take(&self) -> Option<ReplyWriter<'_>> {
        let index = self.free.take()?;
        Some(ReplyWriter { slots: self, index })
    }

    /// Takes slot `slot` back from Go (a release record). A slot Go does not hold, or out of
    /// range, is counted as a violation and ignored.
    pub(crate) fn release(&self, slot: u32) {
        if slot as usize >= self.owner.len()
            || self.owner[slot as usize].swap(OWNER_RUST, Ordering::AcqRel) != OWNER_GO
        {
            self.counters.violations.fetch_add(1, Relaxed);
            return;
        }
        bump(&self.owner[slot as usize].done); // Rust's until the free set has it
        self.put_free(slot);
    }

    /// Takes slot `slot` back from Go holding a call's outcome (`TANDEM_SQE_REPLY`): Rust owns
    /// it again, and the returned guard frees it when dropped. None, counted as a violation,
    /// for a slot Go does not hold or out of range.
    pub(crate) fn take_back(self: &Arc<Self>, slot: u32, len: u32) -> Option<ReturnedReply> {
        if slot as usize >= self.owner.len()
            || self.owner[slot as usize].swap(OWNER_RUST, Ordering::AcqRel) != OWNER_GO
        {
            self.counters.violations.fetch_add(1, Relaxed);
            return None;
        }
        // Rust's again (no longer lent), but not released: a call's reply.
        self.counters.call_replies_held.fetch_add(1, Relaxed);
        Some(ReturnedReply {
            slots: self.clone(),
            index: slot,
            len: len.min(self.size as u32),
        })
    }

    fn put_free(&self, slot: u32) {
        self.free.put(slot);
        self.freed.signal();
    }

    /// Writes `bytes` into a slot lent to Go, as Go writes a call's outcome (tests play Go).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn write_as_go(&self, slot: u32, bytes: &[u8]) {
        assert!(bytes.len() <= self.size && (slot as usize) < self.owner.len());
        let off = self.arena + slot as usize * self.stride;
        // SAFETY: the slot is lent to the test, which plays Go; the range lies in the region.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.region.base().add(off), bytes.len())
        }
    }

    /// The first `len` bytes of a slot lent to Go, read as Go would (tests and the conformance
    /// harness play Go).
    #[cfg(all(not(loom), any(test, feature = "conform")))]
    pub(crate) fn read_as_go(&self, slot: u32, len: u32) -> Vec<u8> {
        assert!(len as usize <= self.size && (slot as usize) < self.owner.len());
        let off = self.arena + slot as usize * self.stride;
        // SAFETY: the slot is lent to the test, which plays Go; the range lies in the region.
        unsafe { std::slice::from_raw_parts(self.region.base().add(off), len as usize).to_vec() }
    }
}

/// One reply slot Rust holds to write into: taken by [`ReplySlots::take`], then lent to Go by
/// [`ReplyWriter::lend`]. Dropped without lending, the slot returns to the free list.
pub(crate) struct ReplyWriter<'a> {
    slots: &'a ReplySlots,
    index: u32,
}

impl ReplyWriter<'_> {
    /// The whole slot, to write into.
    pub(crate) fn buf(&mut self) -> &mut [u8] {
        let s = self.slots;
        let off = s.arena + self.index as usize * s.stride;
        // SAFETY: index < rep_slots, so the range lies in the region; the slot came off the
        // free list, so this writer holds it exclusively until `lend` or drop, and the
        // returned borrow of `self` ends before either.
        unsafe { std::slice::from_raw_parts_mut(s.region.base().add(off), s.size) }
    }

    /// Lends the slot to Go holding its first `len` bytes. The returned value goes into the
    /// completion that names it, which Go reads only after it is published.
    pub(crate) fn lend(self, len: usize) -> LentReply {
        let s = self.slots;
        let slot = self.index;
        std::mem::forget(self);
        s.owner[slot as usize].store(OWNER_GO, Ordering::Release);
        LentReply {
            slot,
            len: len.min(s.size) as u32,
        }
    }
}

impl Drop for ReplyWriter<'_> {
    fn drop(&mut self) {
        self.slots.put_free(self.index);
    }
}

/// A reply slot Go handed back holding a call's outcome (`TANDEM_SQE_REPLY`): Rust's again,
/// read in place, and freed for the next writer when dropped.
pub(crate) struct ReturnedReply {
    slots: Arc<ReplySlots>,
    index: u32,
    len: u32,
}

impl ReturnedReply {
    /// The bytes Go wrote, borrowed from the slot for as long as the guard is borrowed.
    pub(crate) fn bytes(&self) -> &[u8] {
        let s = &self.slots;
        let off = s.arena + self.index as usize * s.stride;
        // SAFETY: index < rep_slots and len <= rep_slot_size (take_back), so the range lies in
        // the region, which the Arc keeps mapped. Go wrote the bytes before publishing the
        // record that handed the slot back (release/acquire on the ring's seq), and the slot
        // is on no free list while this guard lives: nobody writes it meanwhile.
        unsafe { std::slice::from_raw_parts(s.region.base().add(off), self.len as usize) }
    }
}

impl Drop for ReturnedReply {
    fn drop(&mut self) {
        self.slots.counters.call_replies_held.fetch_sub(1, Relaxed);
        self.slots.put_free(self.index);
    }
}

/// A reply slot lent to Go, and the bytes of it in use: what a completion record names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LentReply {
    pub(crate) slot: u32,
    pub(crate) len: u32,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn request_slots() -> (Arc<RequestSlots>, Arc<Counters>) {
        let cfg = Config {
            req_slots: 2,
            req_slot_size: 256,
            ..Config::default()
        };
        let layout = cfg.region_layout();
        let region = Arc::new(Region::map(layout.size).expect("mapping"));
        let counters = Arc::new(Counters::default());
        let slots = RequestSlots::new(region, &layout, &cfg, counters.clone());
        (Arc::new(slots), counters)
    }

    #[test]
    fn a_guard_reads_its_slot_and_gives_it_back_once() {
        let (slots, counters) = request_slots();
        let delivery = Delivery {
            attempt: 3,
            deadline: Some(42),
            waited: false,
            timed: true,
            shadow: false,
            cancellable: false,
        };
        slots.write_as_go(1, delivery, b"envelope");
        // SAFETY (every take in these tests): the test's slots outlive the guards it takes.
        let guard = unsafe { slots.take(1, 8, 7) }.expect("a valid slot");
        assert_eq!(
            (guard.envelope(), guard.delivery(), guard.token()),
            (&b"envelope"[..], delivery, 7)
        );
        assert_eq!((slots.held(), slots.completed()), (1, 0));
        assert_eq!(guard.give_back(), 1);
        let held = slots.held();
        assert_eq!((held, counters.violations.load(Relaxed)), (0, 0));
        // Go takes it and submits it again: a fresh hand-over, no violation.
        assert!(unsafe { slots.take(1, 0, 8) }.expect("again").give_back() == 1);
        assert_eq!(counters.violations.load(Relaxed), 0);
        assert_eq!((slots.held(), slots.completed()), (0, 2));
    }

    /// A slot's event reads through the index Go wrote with it, and decodes the same without
    /// one (an envelope Go copied in as bytes) or with one that does not hold.
    #[test]
    fn a_slot_decodes_with_its_index_or_without() {
        let (slots, _) = request_slots();
        let bytes = envelope::encode_to_vec(&Envelope {
            id: "1",
            source: "/s",
            ty: "demo.echo",
            specversion: "1.0",
            subject: Some("subject"),
            data: b"payload",
            ..Envelope::default()
        });
        let want = envelope::decode(&bytes).expect("valid");
        let fields = |slots: &RequestSlots| {
            // SAFETY: the test plays Go, which owns the slot's header while no guard is out.
            unsafe { &mut (*slots.slot_ptr(0).cast::<tandem_delivery>()).fields }
        };
        let delivery = Delivery {
            attempt: 1,
            deadline: None,
            waited: false,
            timed: false,
            shadow: false,
            cancellable: false,
        };
        for (name, spoil) in [
            ("indexed", None),
            ("no index", Some(0u32)),
            ("a span past the end", Some(1)),
        ] {
            slots.write_as_go(0, delivery, &bytes);
            assert_ne!(
                fields(&slots).present,
                0,
                "write_as_go indexes the envelope as Go does"
            );
            match spoil {
                Some(0) => fields(&slots).present = 0,
                Some(_) => fields(&slots).at[6].len = 1 << 20,
                None => {}
            }
            // SAFETY: the test's slots outlive the guard.
            let guard = unsafe { slots.take(0, bytes.len() as u32, 1) }.expect("a valid slot");
            assert_eq!(guard.decode(), Ok(want), "{name}");
            assert_eq!(guard.give_back(), 0);
        }
        // An index that holds is what the event reads, not parsed again: one whose subject
        // names the payload's bytes gives that subject.
        slots.write_as_go(0, delivery, &bytes);
        fields(&slots).at[6] = fields(&slots).at[18];
        // SAFETY: as above.
        let guard = unsafe { slots.take(0, bytes.len() as u32, 1) }.expect("a valid slot");
        assert_eq!(guard.decode().map(|e| e.subject), Ok(Some("payload")));
        assert_eq!(guard.give_back(), 0);
    }

    fn reply_slots(n: u32) -> Arc<ReplySlots> {
        let cfg = Config {
            rep_slots: n,
            ..Config::default()
        };
        let layout = cfg.region_layout();
        let region = Arc::new(Region::map(layout.size).expect("mapping"));
        Arc::new(ReplySlots::new(
            region,
            &layout,
            &cfg,
            Arc::new(Counters::default()),
        ))
    }

    #[test]
    fn every_reply_slot_is_taken_once_until_freed() {
        for n in [1, 63, 64, 65, 130] {
            let slots = reply_slots(n);
            let mut taken: Vec<u32> = std::iter::from_fn(|| slots.free.take()).collect();
            taken.sort_unstable();
            assert_eq!(taken, (0..n).collect::<Vec<_>>(), "{n} slots: each once");
            slots.free.put(n / 2);
            assert_eq!(slots.free.take(), Some(n / 2), "{n} slots: the freed one");
            assert_eq!(slots.free.take(), None, "{n} slots: none left");
        }
    }

    #[test]
    fn writers_on_many_threads_never_share_a_reply_slot() {
        const N: u32 = 8;
        let slots = reply_slots(N);
        let using: Arc<Vec<std::sync::atomic::AtomicBool>> =
            Arc::new((0..N).map(|_| Default::default()).collect());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (slots, using) = (slots.clone(), using.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let Some(w) = slots.try_take() else { continue };
                        assert!(!using[w.index as usize].swap(true, SeqCst), "slot shared");
                        using[w.index as usize].store(false, SeqCst);
                        drop(w); // back to the free set
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a writer thread");
        }
        assert_eq!(slots.free.count(), N, "every slot free again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_waits_for_a_reply_slot_and_gets_the_freed_one() {
        let slots = reply_slots(1);
        let lent = slots.try_take().expect("the one slot").lend(3);
        assert!(slots.try_take().is_none());
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take().await.index })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no slot free: the writer waits");
        slots.release(lent.slot);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken by the release")
            .expect("the writer task");
        assert_eq!((got, slots.freed.waiting()), (lent.slot, 0));
    }

    #[test]
    fn a_descriptor_naming_no_valid_slot_gives_no_guard() {
        let (slots, counters) = request_slots();
        assert!(
            unsafe { slots.take(2, 0, 1) }.is_none(),
            "slot out of range"
        );
        assert!(
            unsafe { slots.take(0, 257, 1) }.is_none(),
            "longer than a slot"
        );
        assert_eq!(counters.violations.load(Relaxed), 2);
        assert_eq!((slots.held(), slots.completed()), (0, 0));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "dropped without a completion")]
    fn dropping_a_guard_without_its_completion_is_caught_in_debug_builds() {
        let (slots, _) = request_slots();
        drop(unsafe { slots.take(0, 0, 1) });
    }
}
