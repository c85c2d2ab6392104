//! The runtime's counters: relaxed atomics bumped where things happen, and the [`Stats`]
//! snapshot read from them.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::slots::{ReplySlots, RequestSlots};
use crate::waiters::Waiters;

/// Counters read by `stats`; relaxed, since they are reports, not synchronisation. The
/// slots count their own hand-overs, on the lines the hand-overs write (crate::slots).
#[derive(Default)]
pub(crate) struct Counters {
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
    pub(crate) fn held(&self, requests: &RequestSlots) -> u64 {
        requests.held() + self.local_held.load(SeqCst)
    }

    /// Starts holding one event inside Rust (`local_held`).
    pub(crate) fn hold(&self, which: &AtomicU64) {
        which.fetch_add(1, SeqCst);
    }

    /// Stops holding one event inside Rust (`local_held`), waking [`Counters::until_idle`]
    /// when none is left.
    pub(crate) fn unhold(&self, which: &AtomicU64, requests: &RequestSlots) {
        which.fetch_sub(1, SeqCst);
        self.let_go(requests);
    }

    /// Wakes [`Counters::until_idle`] when no event is held any more: after a request slot
    /// went back to Go (its flag) or an event inside Rust ended.
    pub(crate) fn let_go(&self, requests: &RequestSlots) {
        // SeqCst: of two let go at once, the later reading sees both. The counts are read
        // only while shutdown waits, not on every event.
        self.idle.signal_if(|| self.held(requests) == 0);
    }

    /// Returns once no event is held.
    pub(crate) async fn until_idle(&self, requests: &RequestSlots) {
        self.idle
            .until(|| (self.held(requests) == 0).then_some(()))
            .await
    }

    /// A snapshot; the ring depths come from the caller, who owns the rings, and the slots'
    /// counts from the slots.
    pub(crate) fn snapshot(
        &self,
        sq_depth: u64,
        cq_depth: u64,
        requests: &RequestSlots,
        replies: &ReplySlots,
    ) -> Stats {
        let requests_held = requests.held();
        let completed = requests.completed();
        Stats {
            received: completed + requests_held,
            completed,
            requests_held,
            replies_lent: replies.lent(),
            releases: replies.releases(),
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
            runs: requests.runs(),
        }
    }
}
