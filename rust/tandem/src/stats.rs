//! The runtime's counters: relaxed atomics bumped where things happen, and the [`Stats`]
//! snapshot read from them.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::waiters::Waiters;

/// Where the count half of a [`Tally`] is folded into its total.
const FOLD_AT: u64 = 1 << 31;

/// A gauge and a count that one atomic add moves together (an atomic read-modify-write costs
/// some 5 ns, and every event made three of them here): the gauge in the low 32 bits of one
/// word, the count in the high 32, folded into a 64-bit total past [`FOLD_AT`]. A fold moves
/// the total under a lock that readers take too, so a reading is exact; adds never take it,
/// and a half past `FOLD_AT` has `FOLD_AT` more adds of room before its fold lands.
#[derive(Default)]
pub(crate) struct Tally {
    word: AtomicU64,
    folded: Mutex<u64>,
}

impl Tally {
    /// Gauge up by one.
    pub(crate) fn hold(&self) {
        self.word.fetch_add(1, SeqCst);
    }

    /// Gauge down by one and count up by one.
    pub(crate) fn finish(&self) {
        let w = self.word.fetch_add((1 << 32) - 1, SeqCst);
        if (w >> 32) + 1 >= FOLD_AT {
            let mut folded = self.folded.lock().unwrap_or_else(|p| p.into_inner());
            if self.word.load(SeqCst) >> 32 >= FOLD_AT {
                self.word.fetch_sub(FOLD_AT << 32, SeqCst);
                *folded += FOLD_AT;
            }
        }
    }

    /// Gauge down by one, not counted.
    pub(crate) fn lower(&self) {
        self.word.fetch_sub(1, SeqCst);
    }

    /// The gauge now.
    pub(crate) fn gauge(&self) -> u64 {
        self.word.load(SeqCst) & 0xffff_ffff
    }

    /// The count so far and the gauge.
    pub(crate) fn read(&self) -> (u64, u64) {
        let folded = self.folded.lock().unwrap_or_else(|p| p.into_inner());
        let w = self.word.load(SeqCst);
        (*folded + (w >> 32), w & 0xffff_ffff)
    }
}

/// Counters read by `stats`; relaxed, since they are reports, not synchronisation.
#[derive(Default)]
pub(crate) struct Counters {
    /// Request slots held (the gauge) and given back (the count): `received` is their sum.
    pub(crate) requests: Tally,
    /// Reply slots lent to Go now (the gauge) and released back (the count).
    pub(crate) replies: Tally,
    pub(crate) violations: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) go_wakeups: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) emitted: AtomicU64,
    pub(crate) local_dispatched: AtomicU64,
    pub(crate) local_acked: AtomicU64,
    pub(crate) local_forwarded: AtomicU64,
    pub(crate) local_held: AtomicU64,
    pub(crate) handovers: AtomicU64,
    /// Events that went to a task of their own (not completed inline), for the kick's choice.
    pub(crate) spawned: AtomicU64,
    pub(crate) task_wakes: AtomicU64,
    pub(crate) rescues: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) calls_pending: AtomicU64,
    pub(crate) call_replies_held: AtomicU64,
    /// Signalled when the last held event (request slot or local event) is let go.
    idle: Waiters,
}

/// A snapshot of a runtime's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events taken from Go: from the submission ring, or by a run
    /// (`tandem_runtime_run`).
    pub received: u64,
    /// Events completed: request slots handed back to Go with their outcome.
    pub completed: u64,
    /// Request slots Rust holds now (taken, not yet released to Go).
    pub requests_held: u64,
    /// Reply slots lent to Go now (published, not yet released back).
    pub replies_lent: u64,
    /// Reply slots Go has released back.
    pub releases: u64,
    /// Ownership protocol violations seen (a slot handed over by a side that did not own it,
    /// a slot index out of range, an unknown descriptor kind). Always 0 in a correct program.
    pub violations: u64,
    /// Times the poller parked on its eventfd.
    pub parks: u64,
    /// Eventfd writes that woke a parked Go poller.
    pub go_wakeups: u64,
    /// Handler panics caught.
    pub panics: u64,
    /// Events Rust handlers emitted to Go.
    pub emitted: u64,
    /// Emitted events routed to a Rust handler inside Rust.
    pub local_dispatched: u64,
    /// Of those, the ones acknowledged in Rust.
    pub local_acked: u64,
    /// Of those, the failures handed to Go for retry or dead-lettering.
    pub local_forwarded: u64,
    /// Descriptors waiting in the submission ring.
    pub sq_depth: u64,
    /// Descriptors waiting in the completion ring.
    pub cq_depth: u64,
    /// Kicks (`tandem_runtime_kick`) that woke the poller to take over the submission ring,
    /// because kicks came faster than its spin window or in a burst.
    pub handovers: u64,
    /// Tasks spawned on a submitter's thread during a crossing (a handler that waited before
    /// finishing): each wakes a tokio worker if none is awake, the crossing's only thread wake.
    pub task_wakes: u64,
    /// Times the parked poller, looking at its ring after a while without a wake, found an
    /// event there: a lost wake-up (or, rarely, a producer caught between its push and its
    /// wake). Stays 0 in a correct program but for those.
    pub rescues: u64,
    /// Calls of Rust handlers ([`Context::call`](crate::Context::call)) that crossed to Go.
    pub calls: u64,
    /// Of those, the ones waiting for their outcome now. 0 once the runtime is stopped.
    pub calls_pending: u64,
    /// Call replies handlers hold now (each a reply slot, freed when its
    /// [`Reply`](crate::Reply) is dropped). 0 once every reply is dropped.
    pub call_replies_held: u64,
    /// Events run on their submitter's thread by `tandem_runtime_run`, past the submission
    /// ring (counted in `received` too).
    pub runs: u64,
}

impl Counters {
    /// Events held now: request slots Rust owns and events running inside Rust.
    pub(crate) fn held(&self) -> u64 {
        self.requests.gauge() + self.local_held.load(SeqCst)
    }

    /// Starts holding one event inside Rust (`local_held`).
    pub(crate) fn hold(&self, which: &AtomicU64) {
        which.fetch_add(1, SeqCst);
    }

    /// Stops holding one event inside Rust (`local_held`), waking [`Counters::until_idle`]
    /// when none is left.
    pub(crate) fn unhold(&self, which: &AtomicU64) {
        which.fetch_sub(1, SeqCst);
        self.let_go();
    }

    /// Takes a request slot from Go: held until [`Counters::give_back`].
    pub(crate) fn take_request(&self) {
        self.requests.hold();
    }

    /// Gives a request slot back to Go, completed, waking [`Counters::until_idle`] when no
    /// event is held any more.
    pub(crate) fn give_back(&self) {
        self.requests.finish();
        self.let_go();
    }

    fn let_go(&self) {
        // SeqCst: of two counts let go at once, the later decrement sees both at zero. The
        // counts are read only while shutdown waits, not on every event.
        self.idle.signal_if(|| self.held() == 0);
    }

    /// Returns once no event is held.
    pub(crate) async fn until_idle(&self) {
        self.idle.until(|| (self.held() == 0).then_some(())).await
    }

    /// A snapshot; the ring depths come from the caller, who owns the rings.
    pub(crate) fn snapshot(&self, sq_depth: u64, cq_depth: u64) -> Stats {
        let (completed, requests_held) = self.requests.read();
        let (releases, replies_lent) = self.replies.read();
        Stats {
            received: completed + requests_held,
            completed,
            requests_held,
            replies_lent,
            releases,
            violations: self.violations.load(Relaxed),
            parks: self.parks.load(Relaxed),
            go_wakeups: self.go_wakeups.load(Relaxed),
            panics: self.panics.load(Relaxed),
            emitted: self.emitted.load(Relaxed),
            local_dispatched: self.local_dispatched.load(Relaxed),
            local_acked: self.local_acked.load(Relaxed),
            local_forwarded: self.local_forwarded.load(Relaxed),
            sq_depth,
            cq_depth,
            handovers: self.handovers.load(Relaxed),
            task_wakes: self.task_wakes.load(Relaxed),
            rescues: self.rescues.load(Relaxed),
            calls: self.calls.load(Relaxed),
            calls_pending: self.calls_pending.load(Relaxed),
            call_replies_held: self.call_replies_held.load(Relaxed),
            runs: 0, // counted by the request slots (RequestSlots::runs)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tally_tests {
    use super::*;

    #[test]
    fn a_tally_counts_through_its_fold_exactly() {
        let t = Tally::default();
        t.word.store((FOLD_AT - 50) << 32, SeqCst);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = &t;
                move || {
                    for _ in 0..1000 {
                        t.hold();
                        t.finish();
                    }
                }
            })
            .collect();
        std::thread::scope(|s| {
            for f in threads {
                s.spawn(f);
            }
        });
        assert_eq!(t.read(), (FOLD_AT - 50 + 4000, 0));
        assert_eq!(*t.folded.lock().unwrap(), FOLD_AT, "one fold");
        t.hold();
        assert_eq!((t.gauge(), t.read().1), (1, 1));
    }
}
