//! Waiting for a condition that nearly every change leaves unchanged, at no cost to the
//! change while nobody waits.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;

use tokio::sync::Notify;

/// Tasks that wait until a look of theirs succeeds (a reply slot free, no event held). A
/// change that may make a look succeed calls [`Waiters::signal`] after it, which wakes them
/// only when one waits: `notify_waiters` takes a lock, and most changes (one per event) have
/// nobody to wake.
#[derive(Default)]
pub(crate) struct Waiters {
    notify: Notify,
    count: AtomicUsize,
}

impl Waiters {
    /// Returns what `look` finds, waiting (without blocking a thread) while it finds nothing.
    pub(crate) async fn until<T>(&self, mut look: impl FnMut() -> Option<T>) -> T {
        if let Some(found) = look() {
            return found;
        }
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        self.count.fetch_add(1, SeqCst);
        let _counted = Counted(&self.count); // counted out however this future ends
        loop {
            let signalled = self.notify.notified();
            tokio::pin!(signalled);
            // Registered before the look, and counted before both (SeqCst, as the change and
            // `signal`'s read of the count): either the look sees the change, or the signal
            // after it sees this waiter and wakes it.
            signalled.as_mut().enable();
            if let Some(found) = look() {
                return found;
            }
            signalled.await;
        }
    }

    /// Wakes every waiter, if any, to look again; call it after the change, itself
    /// sequentially consistent.
    pub(crate) fn signal(&self) {
        self.signal_if(|| true)
    }

    /// As [`Waiters::signal`], when `ready` holds: asked only when someone waits, so a change
    /// with nobody waiting reads nothing more than the count.
    pub(crate) fn signal_if(&self, ready: impl FnOnce() -> bool) {
        if self.count.load(SeqCst) > 0 && ready() {
            self.notify.notify_waiters();
        }
    }

    /// How many tasks wait now.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn waiting(&self) -> usize {
        self.count.load(SeqCst)
    }
}
