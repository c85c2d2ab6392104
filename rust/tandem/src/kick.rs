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
//! rate at which it would have stayed awake), the kick wakes the poller instead: from then on
//! events go through the ring with no call, until the poller parks again.
//!
//! Completions published on the kicking thread do not wake Go's poller either: the wake-up
//! duty goes back to the caller ([`Kicked::go_wake_owed`]), which consumes the completion
//! ring itself (io_uring's DEFER_TASKRUN: completions run on the task that waits).
//!
//! Who may consume the submission ring: whoever holds `Shared::consumer` (the poller, a
//! kicker, or `stats` once stopped). Every holder re-checks the ring after letting go (the
//! poller before it parks, a kicker in its re-arm), and every push after a successful
//! re-check finds the parked flag set and crosses or wakes: no submission is stranded (the
//! loom model `kick_strands_nothing` in ring.rs checks the hand-off).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Waker};

use crate::completion::now_ns;
use crate::poller::drain_submissions;
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

thread_local! {
    /// Set while this thread kicks: completions published here defer Go's wake-up to the
    /// caller. 0: not kicking; 1: kicking; 2: kicking, and a wake is owed.
    static KICKING: Cell<u8> = const { Cell::new(0) };
}

/// Called by the completion side when it won the duty to wake Go's poller: true if this
/// thread is kicking, which then takes the duty back to Go instead of writing the eventfd.
pub(crate) fn defer_go_wake() -> bool {
    KICKING.with(|k| {
        if k.get() == 0 {
            return false;
        }
        k.set(2);
        true
    })
}

/// Marks this thread as kicking until dropped.
struct KickScope;

impl KickScope {
    fn enter() -> KickScope {
        KICKING.with(|k| k.set(1));
        KickScope
    }

    fn owed(&self) -> bool {
        KICKING.with(|k| k.get() == 2)
    }
}

impl Drop for KickScope {
    fn drop(&mut self) {
        KICKING.with(|k| k.set(0));
    }
}

/// The most submission records one kick consumes: past it the poller is woken to take over,
/// so a burst never holds the caller's thread for long.
const MAX_PER_KICK: usize = 256;

/// Drains the submission ring on the calling thread, which must be inside the runtime's tokio
/// context (to spawn the tasks of handlers that wait), then re-arms the parked flag for the
/// sleeping poller. The caller won the ring's wake-up duty ([`crate::ring::Ring::take_wakeup`]):
/// this discharges it.
pub(crate) fn kick(shared: &Arc<Shared>) -> Kicked {
    let scope = KickScope::enter();
    // Arrivals closer together than the poller's spin window would have kept it awake: a
    // crossing then hands the ring back to the poller (one wake) instead of re-arming, and
    // the events that follow go through the ring with no call at all. Sparser arrivals keep
    // crossing: one call each is cheaper than waking a thread for each.
    let now = now_ns();
    let gap = now.saturating_sub(shared.last_kick_ns.swap(now, Ordering::Relaxed));
    let frequent = u128::from(gap) < shared.cfg.spin.as_nanos();
    // Nobody needs waking when a handler run here first waits: it moves into a task, whose
    // first poll registers the task's own waker.
    let mut cx = Context::from_waker(Waker::noop());
    let mut drained = 0u32;
    loop {
        let Ok(consumer) = shared.consumer.try_lock() else {
            // The holder (the poller, or another kicker) re-checks the ring after it lets go.
            break;
        };
        let left = MAX_PER_KICK.saturating_sub(drained as usize);
        drained += drain_submissions(shared, left, Some(&mut cx)) as u32;
        drop(consumer);
        if frequent || drained as usize >= MAX_PER_KICK || shared.stopping.load(Ordering::SeqCst) {
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
        go_wake_owed: scope.owed(),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::{Duration, Instant};

    use crate::config::Config;
    use crate::handler::Registry;
    use crate::layout::{TANDEM_OUTCOME_ACK, TANDEM_SQE_EVENT};
    use crate::runtime::Runtime;
    use crate::sync::Ordering;
    use crate::testing::*;

    /// Publishes like Go: the header, the envelope, the descriptor; true if this publisher
    /// won the wake-up duty (the poller is parked).
    fn publish(rt: &Runtime, slot: u32, bytes: &[u8]) -> bool {
        let s = &rt.shared;
        s.completions
            .requests
            .write_as_go(slot, first_delivery(), bytes);
        assert!(s.sq.push(|d| {
            d.kind.store(TANDEM_SQE_EVENT, Ordering::Relaxed);
            d.slot.store(slot, Ordering::Relaxed);
            d.len.store(bytes.len() as u32, Ordering::Relaxed);
            d.token.store(u64::from(slot) | 7 << 32, Ordering::Relaxed);
        }));
        s.sq.take_wakeup()
    }

    fn wait_parked(rt: &Runtime) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rt.shared.sq.is_parked() {
            assert!(Instant::now() < deadline, "the poller never parked");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Kicks far apart: the next one is not taken for load.
        std::thread::sleep(Duration::from_millis(2));
    }

    #[test]
    fn an_inline_handler_completes_on_the_kicking_thread_and_the_go_wake_comes_back() {
        let mut rt = runtime();
        for round in 0..3u32 {
            wait_parked(&rt);
            let parks = rt.stats().parks;
            assert!(publish(&rt, round % 4, &envelope("echo.inline", b"kicked")));
            let k = rt.kick().expect("kick");
            assert_eq!(k.drained, 1);
            assert!(
                rt.shared.sq.is_parked(),
                "the kick must leave the sleeping poller re-armed"
            );
            assert_eq!(rt.stats().parks, parks, "the poller was woken");
            let done = next_completion(&rt);
            assert_eq!(
                (done.kind, done.reply.as_slice()),
                (TANDEM_OUTCOME_ACK, &b"kicked"[..])
            );
            // The test's release wakes the poller the old way; the next round waits for it
            // to park again.
            release(&rt, done.reply_slot);
        }
        assert_whole(&mut rt);
    }

    #[test]
    fn completions_published_while_kicking_defer_the_go_wake() {
        let mut rt = runtime();
        wait_parked(&rt);
        // Go's poller parked: its flag is up.
        assert!(rt.shared.completions.ring().prepare_park());
        let go_wakeups = rt.stats().go_wakeups;
        assert!(publish(&rt, 0, &envelope("echo.inline", b"x")));
        let k = rt.kick().expect("kick");
        assert!(
            k.go_wake_owed,
            "the completion found Go parked: the duty is the caller's"
        );
        assert_eq!(
            rt.stats().go_wakeups,
            go_wakeups,
            "Go's eventfd was written"
        );
        let done = next_completion(&rt);
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn kicks_closer_than_the_spin_window_hand_the_ring_to_the_poller() {
        // A spin window far longer than the test's steps take, even in a debug build.
        let mut reg = Registry::new();
        reg.register_inline("echo.inline", "echo-inline", Echo);
        let cfg = Config {
            spin: Duration::from_millis(50),
            ..small()
        };
        let mut rt = Runtime::new(cfg, reg).expect("runtime");
        rt.start().expect("start");
        wait_parked(&rt);
        assert!(publish(&rt, 0, &envelope("echo.inline", b"a")));
        rt.kick().expect("first kick");
        assert_eq!(
            rt.stats().handovers,
            0,
            "a first kick after a quiet spell re-arms"
        );
        let first = next_completion(&rt);
        // At once again (the reply is kept, so no release wakes the poller in between): the
        // arrival gap is inside the spin window.
        assert!(publish(&rt, 1, &envelope("echo.inline", b"b")));
        rt.kick().expect("second kick");
        assert_eq!(
            rt.stats().handovers,
            1,
            "the second kick must wake the poller"
        );
        let second = next_completion(&rt);
        release(&rt, first.reply_slot);
        release(&rt, second.reply_slot);
        assert_whole(&mut rt);
    }
}
