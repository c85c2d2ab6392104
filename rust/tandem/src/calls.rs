//! The calls Rust handlers are waiting on: one cell per call, found by the call's ID when its
//! outcome comes back from Go (`TANDEM_SQE_REPLY`).
//!
//! The outcome and the caller meet in the cell, under its lock, so exactly one of them ends
//! up owning the outcome's reply slot: the caller, when the outcome arrives first and the
//! caller takes it; else whoever comes second drops it, which frees the slot. A caller that
//! stops waiting (its future dropped) leaves the table first, so an outcome arriving later
//! finds no cell and is dropped at once (loom model `loom_a_reply_and_a_cancelled_caller_free_the_slot_once`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Poll, Waker};

use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// The waiting calls, by ID. Shared by every handler and the submission poller.
pub(crate) struct Calls<T> {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Arc<Cell<T>>>>,
}

struct Cell<T> {
    state: Mutex<State<T>>,
}

enum State<T> {
    /// No outcome yet; the caller's waker, once it has polled.
    Waiting(Option<Waker>),
    /// The outcome, not yet taken by the caller.
    Replied(T),
    /// Taken by the caller, or the caller is gone.
    Done,
}

impl<T> Calls<T> {
    pub(crate) fn new() -> Calls<T> {
        Calls {
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a new call; its outcome is awaited through the returned value. IDs start
    /// at 1 and are never reused in a runtime's life.
    pub(crate) fn register(&self) -> Pending<'_, T> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cell = Arc::new(Cell {
            state: Mutex::new(State::Waiting(None)),
        });
        self.lock().insert(id, cell.clone());
        Pending {
            calls: self,
            id,
            cell,
            left: false,
        }
    }

    /// Hands call `id` its outcome. Err gives the outcome back when nobody waits for it any
    /// more (the caller is gone, or the ID is unknown): the caller of `deliver` drops it.
    pub(crate) fn deliver(&self, id: u64, outcome: T) -> Result<(), T> {
        let Some(cell) = self.lock().remove(&id) else {
            return Err(outcome);
        };
        let mut state = cell.state.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *state, State::Done) {
            State::Waiting(waker) => {
                *state = State::Replied(outcome);
                drop(state);
                if let Some(w) = waker {
                    w.wake();
                }
                Ok(())
            }
            // Unreachable while the table holds a cell only for a waiting caller; kept total.
            other => {
                *state = other;
                Err(outcome)
            }
        }
    }

    /// Calls waiting now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, HashMap<u64, Arc<Cell<T>>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One registered call: a future of its outcome. Dropping it (or [`Pending::leave`]) ends the
/// wait; an outcome that arrived and was not taken is dropped then.
pub(crate) struct Pending<'a, T> {
    calls: &'a Calls<T>,
    id: u64,
    cell: Arc<Cell<T>>,
    left: bool,
}

impl<T> Pending<'_, T> {
    /// The call's ID, which names it on the rings.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Stops waiting. Returns true when no outcome had arrived yet (the callee may still be
    /// running: tell Go), false when one had (it is dropped here unless taken) or when this
    /// call left already.
    pub(crate) fn leave(&mut self) -> bool {
        if std::mem::replace(&mut self.left, true) {
            return false;
        }
        let was_waiting = self.calls.lock().remove(&self.id).is_some();
        let late = {
            let mut state = self.cell.state.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *state, State::Done)
        };
        // Dropped outside the lock: dropping an outcome frees its slot.
        drop(late);
        was_waiting
    }
}

impl<T> Future for Pending<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let mut state = this.cell.state.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *state, State::Done) {
            State::Replied(outcome) => {
                drop(state);
                this.left = true; // the table let go of it in deliver
                Poll::Ready(outcome)
            }
            State::Waiting(_) => {
                *state = State::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            State::Done => panic!("a call's outcome polled after it was taken"),
        }
    }
}

impl<T> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// An outcome that counts its drops: a reply slot freed.
    struct Slot(std::sync::Arc<AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn an_outcome_reaches_its_caller_and_late_ones_are_dropped() {
        let freed = std::sync::Arc::new(AtomicUsize::new(0));
        let calls = Calls::new();
        let mut first = calls.register();
        let id = first.id();
        assert!(calls.deliver(id, Slot(freed.clone())).is_ok());
        let waker = std::task::Waker::noop();
        let got = Pin::new(&mut first).poll(&mut std::task::Context::from_waker(waker));
        assert!(matches!(got, Poll::Ready(_)));
        drop(got);
        assert!(
            !first.leave(),
            "a call that took its outcome owes Go nothing"
        );
        assert_eq!(freed.load(Ordering::Relaxed), 1);
        // The same ID again, and an ID never given: refused, handed back to be dropped.
        assert!(calls.deliver(id, Slot(freed.clone())).is_err());
        assert!(calls.deliver(999, Slot(freed.clone())).is_err());
        assert_eq!(freed.load(Ordering::Relaxed), 3);
        // A caller gone before its outcome: Go is told, the table is empty.
        let mut second = calls.register();
        assert!(second.leave(), "no outcome yet: the callee may still run");
        assert!(calls.deliver(second.id(), Slot(freed.clone())).is_err());
        assert_eq!((calls.len(), freed.load(Ordering::Relaxed)), (0, 4));
        // An outcome that arrived but was never taken is dropped with the caller.
        let third = calls.register();
        assert!(calls.deliver(third.id(), Slot(freed.clone())).is_ok());
        drop(third);
        assert_eq!((calls.len(), freed.load(Ordering::Relaxed)), (0, 5));
    }
}

/// Loom model of the hand-off of a call's reply slot between the poller (the outcome) and a
/// caller that gives up at the same time: the slot is freed exactly once, and the table ends
/// empty, in every interleaving.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize;

    struct Slot(Arc<AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn loom_a_reply_and_a_cancelled_caller_free_the_slot_once() {
        loom::model(|| {
            let freed = Arc::new(AtomicUsize::new(0));
            let calls = Arc::new(Calls::new());
            let mut pending = calls.register();
            let id = pending.id();
            let poller = {
                let (calls, freed) = (calls.clone(), freed.clone());
                loom::thread::spawn(move || {
                    // The poller drops what nobody takes.
                    let _ = calls.deliver(id, Slot(freed));
                })
            };
            let told_go = pending.leave();
            poller.join().unwrap();
            drop(pending);
            assert_eq!(
                freed.load(Ordering::SeqCst),
                1,
                "the slot is freed exactly once"
            );
            assert_eq!(calls.len(), 0);
            let _ = told_go;
        });
    }

    #[test]
    fn loom_a_reply_reaches_a_caller_that_polls_meanwhile() {
        loom::model(|| {
            let freed = Arc::new(AtomicUsize::new(0));
            let calls = Arc::new(Calls::new());
            let mut pending = calls.register();
            let id = pending.id();
            let poller = {
                let (calls, freed) = (calls.clone(), freed.clone());
                loom::thread::spawn(move || {
                    assert!(
                        calls.deliver(id, Slot(freed)).is_ok(),
                        "the caller still waits"
                    );
                })
            };
            let waker = futures_noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            let first = Pin::new(&mut pending).poll(&mut cx);
            poller.join().unwrap();
            let got = match first {
                Poll::Ready(v) => v,
                Poll::Pending => match Pin::new(&mut pending).poll(&mut cx) {
                    Poll::Ready(v) => v,
                    Poll::Pending => panic!("the outcome was delivered but not seen"),
                },
            };
            assert_eq!(freed.load(Ordering::SeqCst), 0, "the caller owns the slot");
            drop(got);
            drop(pending);
            assert_eq!(freed.load(Ordering::SeqCst), 1);
            assert_eq!(calls.len(), 0);
        });
    }

    fn futures_noop_waker() -> Waker {
        Waker::noop().clone()
    }
}
