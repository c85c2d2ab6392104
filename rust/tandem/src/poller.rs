//! The submission poller: drains the submission ring in batches, starts each event, takes
//! back released reply slots, and parks on its eventfd when the ring stays empty.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, TryLockError};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::dispatch::dispatch_slot;
use crate::layout::{TANDEM_SQE_CANCEL, TANDEM_SQE_EVENT, TANDEM_SQE_RELEASE, TANDEM_SQE_REPLY};
use crate::shared::Shared;
use crate::sync::Ordering;

/// The poller: drains the submission ring in batches, busy-polls an empty ring for as long as
/// the arrivals it sees suggest the next one is near (at most `cfg.spin`; [`Spinner`]), then
/// parks on the eventfd until Go wakes it.
pub(crate) async fn poll_submissions(shared: Arc<Shared>, afd: AsyncFd<OwnedFd>) {
    const BATCH: usize = 256;
    let mut idle_since: Option<Instant> = None;
    let epoch = Instant::now();
    let mut spinner = Spinner::new(shared.cfg.spin);
    loop {
        let n = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(drain_submissions(
                &shared,
                BATCH,
                Some((cx, Drainer::Poller)),
                Role::Wait,
            ))
        })
        .await
        .records;
        if n > 0 {
            spinner.arrived(epoch.elapsed());
            idle_since = None;
            // Let the tasks just spawned run on this worker before the next batch.
            tokio::task::yield_now().await;
            continue;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        // On a small machine two busy pollers would take both cores from the handlers and the
        // submitters: this one spins only while Go's is parked.
        let window = if shared.hands_over || shared.completions.go_parked() {
            spinner.window()
        } else {
            Duration::ZERO
        };
        let now = Instant::now();
        if now.duration_since(*idle_since.get_or_insert(now)) < window {
            tokio::task::yield_now().await;
            continue;
        }
        idle_since = None;
        if !shared.sq.prepare_park() {
            continue;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            shared.sq.unpark();
            return;
        }
        shared.counters.parks.fetch_add(1, Relaxed);
        loop {
            match tokio::time::timeout(PARK_CHECK, afd.readable()).await {
                Ok(Ok(mut guard)) => {
                    shared.wake_rust.drain();
                    guard.clear_ready();
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(_) => {
                    // No wake for a while: look anyway, still parked. Release records may wait
                    // here by design (they are lazy); an event here with the parked flag up
                    // was stranded by a lost wake-up, a bug the counter makes visible, and the
                    // look bounds its cost. A flag taken is a duty its taker discharges.
                    // Counted by this drain's own events: runs take events beside it, past
                    // the ring, and would move a count of every event taken.
                    if shared.sq.is_parked() && !shared.sq.is_empty() {
                        let drained = std::future::poll_fn(|cx| {
                            std::task::Poll::Ready(drain_submissions(
                                &shared,
                                BATCH,
                                Some((cx, Drainer::Poller)),
                                Role::Try,
                            ))
                        })
                        .await;
                        if drained.events > 0 {
                            shared.counters.rescues.fetch_add(1, Relaxed);
                        }
                    }
                    if !shared.stopping.load(Ordering::SeqCst) {
                        continue;
                    }
                }
            }
            break;
        }
        shared.sq.unpark();
        spinner.woken();
    }
}

/// How long a parked poller sleeps before it looks at its ring anyway: a bound on what a lost
/// wake-up (a bug: `Stats::rescues` counts them) could cost, at a cost of one wake a second
/// at idle (ten cost 0.3% of a core on a small VM).
const PARK_CHECK: Duration = Duration::from_secs(1);

/// Sizes a poller's spin window from the gaps between the arrivals it sees while awake
/// (Aeron's idle strategies, fitted to the load): it spins twice the longest recent gap, at
/// most `max`. After a stream of close arrivals stops, the poller parks after a short spin
/// rather than a whole window; bursty arrivals (batches, then a pause while Go settles them)
/// keep the whole window, since a pause in the middle of load must not cost a park and a
/// wake. The longest gap decays by an eighth per arrival; each gap counts as at most `max`.
/// Go's completion poller sizes its spin the same way (go/internal/engine/poller.go).
#[derive(Debug)]
pub(crate) struct Spinner {
    max: Duration,
    /// The longest recent gap; zero until two arrivals were seen.
    peak: Duration,
    /// The last arrival, as time since the poller began.
    last: Option<Duration>,
}

impl Spinner {
    pub(crate) fn new(max: Duration) -> Spinner {
        Spinner {
            max,
            peak: Duration::ZERO,
            last: None,
        }
    }

    /// Records an arrival at `now` (time since the poller began).
    pub(crate) fn arrived(&mut self, now: Duration) {
        if let Some(last) = self.last {
            let gap = now.saturating_sub(last).min(self.max);
            self.peak = gap.max(self.peak - self.peak / 8);
        }
        self.last = Some(now);
    }

    /// Forgets what was learnt before a park: the poller is woken because work arrives again
    /// (a handover means arrivals closer than the window), so it starts with the whole window
    /// and learns the new gaps. A park's length is no gap between arrivals.
    pub(crate) fn woken(&mut self) {
        self.peak = Duration::ZERO;
        self.last = None;
    }

    /// How long to spin on an empty ring before parking.
    pub(crate) fn window(&self) -> Duration {
        if self.peak.is_zero() {
            self.max
        } else {
            (2 * self.peak).min(self.max)
        }
    }
}

/// Who drains the submission ring, which decides where a task handler starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drainer {
    /// The poller, on a tokio worker: it must move on to the next event, so only handlers
    /// registered inline run on it (until their first wait).
    Poller,
    /// A submitter's thread, in a crossing: an event whose submitter blocks on its outcome
    /// (`TANDEM_DELIVERY_WAITED`) runs here until its first wait whatever its handler, since
    /// the thread waits anyway and a task would cost a worker's wake.
    Caller,
}

/// How a drainer takes the submission ring's consumer role (`Shared::consumer`), which it holds
/// for each pop alone: the events it pops run after it lets go, so a drainer whose thread is
/// descheduled in the middle of a handler holds up nobody else's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Wait for the role: the poller, and a crossing that holds the ring's wake-up duty
    /// (which must see the ring consumed, then re-arm it).
    Wait,
    /// Take it only if free, else stop: a helping crossing (no duty), and `stats` once stopped.
    Try,
}

/// What one drain consumed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Drained {
    /// Submission records of every kind.
    pub(crate) records: usize,
    /// Of those, events this drain took and started.
    pub(crate) events: usize,
}

/// Consumes up to `max` submissions. The drainer passes its task context and events start;
/// without one (a stopped runtime) only release records are expected and processed.
pub(crate) fn drain_submissions(
    shared: &Arc<Shared>,
    max: usize,
    cx: Option<(&mut std::task::Context<'_>, Drainer)>,
    role: Role,
) -> Drained {
    let mut cx = cx;
    let mut n = 0;
    let mut events = 0;
    while n < max {
        // A look without the lock first: the empty pop that ends every drain would take and
        // release it, two atomic operations per kick for nothing. A record that lands after
        // the look is the parking handshake's to find (prepare_park re-checks the ring).
        if shared.sq.is_empty() {
            break;
        }
        let popped = {
            let _role = match role {
                Role::Wait => shared.consumer.lock().unwrap_or_else(|p| p.into_inner()),
                Role::Try => match shared.consumer.try_lock() {
                    Ok(g) => g,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => break,
                },
            };
            shared.sq.pop(|d| {
                (
                    d.kind.load(Ordering::Relaxed),
                    d.token.load(Ordering::Relaxed),
                    d.slot.load(Ordering::Relaxed),
                    d.len.load(Ordering::Relaxed),
                    d.flags.load(Ordering::Relaxed),
                )
            })
        };
        let Some((kind, token, slot, len, route)) = popped else {
            break;
        };
        n += 1;
        match kind {
            TANDEM_SQE_EVENT if cx.is_some() => {
                // A descriptor naming no valid slot is counted and dropped: there is nothing
                // to complete.
                // SAFETY: the guard goes straight to dispatch_slot (RequestSlots::take).
                let taken = unsafe { shared.completions.requests.take(slot, len, token) };
                if let (Some((cx, by)), Some(slot)) = (cx.as_mut(), taken) {
                    events += 1;
                    dispatch_slot(shared, slot, route, cx, *by)
                }
            }
            TANDEM_SQE_RELEASE => shared.completions.replies.release(slot),
            // Also once stopped: a reply nobody waits for any more frees its slot.
            TANDEM_SQE_CANCEL => shared.cancel_delivery(token),
            TANDEM_SQE_REPLY => shared.completions.call_replied(token, slot, len, route),
            _ => {
                shared.counters.violations.fetch_add(1, Relaxed);
            }
        }
    }
    Drained { records: n, events }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn the_spin_window_fits_the_arrivals() {
        let us = Duration::from_micros;
        let mut s = Spinner::new(us(50));
        assert_eq!(
            s.window(),
            us(50),
            "before any arrival: the configured window"
        );
        let mut now = us(1);
        for _ in 0..50 {
            now += us(5);
            s.arrived(now);
        }
        assert_eq!(s.window(), us(10), "arrivals every 5 µs: spin twice that");
        for _ in 0..10 {
            for _ in 0..8 {
                now += us(2);
                s.arrived(now);
            }
            now += us(30);
            s.arrived(now);
        }
        assert_eq!(
            s.window(),
            us(50),
            "bursts with 30 µs pauses: the whole window"
        );
        s.woken();
        assert_eq!(s.window(), us(50), "woken: the whole window again");
        assert_eq!(Spinner::new(Duration::ZERO).window(), Duration::ZERO);
    }

    #[test]
    fn double_release_and_bad_slots_are_counted_not_acted_on() {
        let mut rt = runtime();
        submit(&rt, 2, &envelope("echo", b"x"));
        let done = next_completion(&rt);
        release(&rt, done.reply_slot);
        release(&rt, done.reply_slot);
        release(&rt, 999);
        rt.shutdown(Duration::from_secs(1));
        let st = rt.stats();
        assert_eq!(
            (st.releases, st.violations, st.replies_lent),
            (1, 2, 0),
            "{st:?}"
        );
    }
}
