//! The crossing: when the poller sleeps, the submitter runs the submission step on its own
//! thread instead of waking it.
//!
//! A wake of a parked thread costs tens of microseconds on small VMs, the cost of a whole
//! round trip many times over. So a Go submitter that finds the poller parked (it won the
//! ring's wake-up duty) makes one call into the library instead of writing the eventfd:
//! [`kick`] takes the consumer's role, drains the submission ring on the calling thread (an
//! inline handler runs to completion there, or to its first wait and then continues as a
//! task; a task handler is spawned), and re-arms the parked flag on the sleeping poller's
//! behalf, so the next submitter crosses again. This is io_uring's inline submission when no
//! SQPOLL thread is awake. When kicks come closer together than the poller's spin window (a
//! rate at which it would have stayed awake), the kick may wake the poller instead: from then
//! on events go through the ring with no call, until the poller parks again. It does when its
//! events went to tasks (each task spawned from outside tokio wakes a worker; the poller, on a
//! worker, runs them without), or when it drained many others' events beside its own (dozens
//! of concurrent submitters, which the poller batches), and otherwise only on a machine with
//! cores to spare (`Config::handover`): on a small one a spinning poller takes a
//! core from the handlers and the submitters (on 2 cores, a p99 of 0.6-1.5 ms against
//! 24-31 µs at 100k events/s), while a crossing costs a call and no thread. A burst (a kick
//! that drains `MAX_PER_KICK` records) wakes the poller on any machine.
//!
//! Completions published on the kicking thread do not wake Go's poller either: the wake-up
//! duty goes back to the caller ([`Kicked::go_wake_owed`]), which consumes the completion
//! ring itself (io_uring's DEFER_TASKRUN: completions run on the task that waits).
//!
//! A submitter that blocks on its event (a Go `Call`) skips the ring where it would cross:
//! [`run`] runs its event alone, and hands the completion back with the call when the handler
//! finishes there (a direct call's path, the slots' ownership kept).
//!
//! Who may consume the submission ring: whoever holds `Shared::consumer` (the poller, a
//! kicker, or `stats` once stopped). Every holder re-checks the ring after letting go (the
//! poller before it parks, a kicker in its re-arm), and every push after a successful
//! re-check finds the parked flag set and crosses or wakes: no submission is stranded (the
//! loom model `kick_strands_nothing` in ring.rs checks the hand-off).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Waker};

use crate::completion::{DeferGoWake, Record, Run};
use crate::dispatch::dispatch_slot;
use crate::poller::{Drainer, Role, drain_submissions};
use crate::shared::Shared;
use crate::sync::Ordering;

/// What one kick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kicked {
    /// Submission records consumed on the calling thread.
    pub drained: u32,
    /// A completion published on the calling thread found Go's poller parked: the caller now
    /// holds the duty to consume the completion ring (or wake its poller).
    pub go_wake_owed: bool,
}

/// Records one kick must find (its own among them) to take submitters for concurrent enough
/// that the poller, batching them, costs less than their calls: two or three callers at once
/// keep crossing (each call settles its own), dozens hand over.
const CONCURRENT_KICK: u32 = 32;

/// The most submission records one kick consumes: past it the poller is woken to take over,
/// so a burst never holds the caller's thread for long.
const MAX_PER_KICK: usize = 256;

/// Drains the submission ring on the calling thread, which must be inside the runtime's tokio
/// context (to spawn the tasks of handlers that wait), then re-arms the parked flag for the
/// sleeping poller. The caller won the ring's wake-up duty ([`crate::ring::Ring::take_wakeup`]):
/// this discharges it.
///
/// `frequent`: this kick came sooner after the previous one than the poller's spin window
/// (the caller measures it). Arrivals that close would have kept the poller awake: a crossing
/// may then hand the ring back to the poller (one wake) instead of re-arming, and the events
/// that follow go through the ring with no call at all. Sparser arrivals keep crossing: one
/// call each is cheaper than waking a thread for each.
///
/// `batch`: the records are one submitter's batch, which crosses once for all of them; their
/// number says nothing of concurrent submitters.
pub(crate) fn kick(shared: &Arc<Shared>, frequent: bool, batch: bool) -> Kicked {
    let deferred = DeferGoWake::begin();
    let spawned = shared.counters.spawned.load(Relaxed);
    // Nobody needs waking when a handler run here first waits: it moves into a task, whose
    // first poll registers the task's own waker.
    let mut cx = Context::from_waker(Waker::noop());
    let mut drained = 0u32;
    loop {
        // The duty is to see the ring consumed: wait for the consumer's role (held for a pop
        // at a time) rather than leave it to a holder that may not re-check (a helper).
        let left = MAX_PER_KICK.saturating_sub(drained as usize);
        drained += drain_submissions(shared, left, Some((&mut cx, Drainer::Caller)), Role::Wait)
            .records as u32;
        // Tasks spawned from here wake a tokio worker each; the poller, on a worker, runs
        // them without. So frequent kicks that spawn hand over on any machine; frequent
        // kicks whose handlers all completed inline only where a core is to spare.
        // Likewise a kick that found many others' events beside its own: submitters are
        // running concurrently, and the poller batches them for less than a call each. A
        // batch's records are one submitter's, which its one call already batches.
        let spawning = shared.counters.spawned.load(Relaxed) != spawned;
        let concurrent = drained >= CONCURRENT_KICK && !batch;
        let hand_over = frequent && (shared.hands_over || spawning || concurrent);
        if hand_over || drained as usize >= MAX_PER_KICK || shared.stopping.load(Ordering::SeqCst) {
            // Load, a burst, or the runtime stopping: the poller takes over from here.
            shared.counters.handovers.fetch_add(1, Relaxed);
            shared.wake_rust.signal();
            break;
        }
        if shared.sq.prepare_park() {
            break;
        }
    }
    Kicked {
        drained,
        go_wake_owed: deferred.owed(),
    }
}

/// A helping crossing: a submitter that published while another crossing was in progress (so
/// it won no wake-up duty) drains what it can on its own thread: its event, and any other,
/// runs here rather than wait for the crossing in progress, whose thread may be descheduled
/// for a whole time slice (milliseconds) on a busy machine. It takes the consumer's role
/// only when free, pop by pop, and neither re-arms nor hands over: that stays the duty
/// holder's. Completions it publishes may hand it Go's wake-up duty, like any crossing's.
pub(crate) fn help(shared: &Arc<Shared>) -> Kicked {
    let deferred = DeferGoWake::begin();
    let mut cx = Context::from_waker(Waker::noop());
    let drained = drain_submissions(
        shared,
        MAX_PER_KICK,
        Some((&mut cx, Drainer::Caller)),
        Role::Try,
    )
    .records as u32;
    Kicked {
        drained,
        go_wake_owed: deferred.owed(),
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    /// The event's final record, when its handler finished on the calling thread and nothing
    /// else went into the completion ring first: the caller settles the event from it.
    pub done: Option<Record>,
    /// As [`Kicked::go_wake_owed`]: a record published during the run found Go's poller
    /// parked, and the caller now holds the duty to consume the completion ring.
    pub go_wake_owed: bool,
}

/// Runs the event Go wrote into request slot `slot` on the calling thread, which must be
/// inside the runtime's tokio context, without the submission ring: for a submitter that
/// blocks on the event's outcome anyway and would otherwise push it and cross (its consumer
/// parked) or help another crossing. Its handler runs as a kick's would (to completion, or
/// to its first wait and then as a task), and when it finishes here its final record comes
/// back with the call instead of through the completion ring: no ring cell, no consumer's
/// role on either side, no record of another submitter's to settle. That is a direct call's
/// path, with the rings' ownership kept: the slot is Rust's from here until that record.
///
/// The record goes through the ring as ever when the handler waits (its task publishes it
/// later), and when another record was published on this thread first (an emitted event, a
/// log batch, a call to Go): Go then reads them in the order they were made. Events others
/// pushed meanwhile stay in the ring for the crossing or the poller that holds it.
pub(crate) fn run(shared: &Arc<Shared>, token: u64, slot: u32, len: u32, route: u32) -> Ran {
    let deferred = DeferGoWake::begin();
    let mut cx = Context::from_waker(Waker::noop());
    // Go's releases of reply slots wait in the submission ring for its next drain, which
    // runs never make. Take them here once enough are waiting, before every slot is lent and
    // a writer must wake the poller for them (whatever else is there runs too).
    if shared.sq.len() >= (shared.completions.replies.count() as u64 / 8).max(1) {
        drain_submissions(
            shared,
            MAX_PER_KICK,
            Some((&mut cx, Drainer::Caller)),
            Role::Try,
        );
    }
    let caught = Run::begin(token);
    // A descriptor naming no valid slot is counted and dropped, as from the ring.
    // SAFETY: the guard goes straight to dispatch_slot (RequestSlots::take).
    if let Some(slot) = unsafe { shared.completions.requests.take(slot, len, token) } {
        slot.count_run();
        dispatch_slot(shared, slot, route, &mut cx, Drainer::Caller);
    }
    Ran {
        done: caught.finish(),
        go_wake_owed: deferred.owed(),
    }
}
