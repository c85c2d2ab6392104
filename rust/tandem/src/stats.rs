//! The runtime's counters: relaxed atomics bumped where things happen, and the [`Stats`]
//! snapshot read from them.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use tokio::sync::Notify;

/// Counters read by `stats`; relaxed, since they are reports, not synchronisation.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) requests_held: AtomicU64,
    pub(crate) replies_lent: AtomicU64,
    pub(crate) releases: AtomicU64,
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
    /// Woken when the last held event (request slot or local event) is let go.
    idle: Notify,
    /// Tasks in [`Counters::until_idle`]: a let-go notifies only when one waits, as
    /// `notify_waiters` takes a lock and most let-gos (one per event) have nobody to wake.
    idle_waiters: AtomicU64,
}

/// A snapshot of a runtime's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events taken from the submission ring.
    pub received: u64,
    /// Completion records published (one per event, plus progress records).
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
}

impl Counters {
    /// Events held now: request slots Rust owns and events running inside Rust.
    pub(crate) fn held(&self) -> u64 {
        self.requests_held.load(SeqCst) + self.local_held.load(SeqCst)
    }

    /// Starts holding one event in `which` (`requests_held` or `local_held`).
    pub(crate) fn hold(&self, which: &AtomicU64) {
        which.fetch_add(1, SeqCst);
    }

    /// Stops holding one event in `which`, waking [`Counters::until_idle`] when none is left.
    pub(crate) fn unhold(&self, which: &AtomicU64) {
        // SeqCst: of two counters let go at once, the later decrement sees both at zero.
        // And SeqCst against `until_idle`: either its check of `held` sees this decrement, or
        // this load sees it waiting, and it was registered (`enable`) before it checked.
        which.fetch_sub(1, SeqCst);
        if self.held() == 0 && self.idle_waiters.load(SeqCst) > 0 {
            self.idle.notify_waiters();
        }
    }

    /// Returns once no event is held.
    pub(crate) async fn until_idle(&self) {
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        self.idle_waiters.fetch_add(1, SeqCst);
        let _waiting = Waiting(&self.idle_waiters); // counted out however this future ends
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so a let-go between the two is not missed.
            idle.as_mut().enable();
            if self.held() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// A snapshot; the ring depths come from the caller, who owns the rings.
    pub(crate) fn snapshot(&self, sq_depth: u64, cq_depth: u64) -> Stats {
        Stats {
            received: self.received.load(Relaxed),
            completed: self.completed.load(Relaxed),
            requests_held: self.requests_held.load(Relaxed),
            replies_lent: self.replies_lent.load(Relaxed),
            releases: self.releases.load(Relaxed),
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
        }
    }
}
