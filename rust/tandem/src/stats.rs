//! The runtime's counters: relaxed atomics bumped where things happen, and the [`Stats`]
//! snapshot read from them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
}

impl Counters {
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
        }
    }
}
