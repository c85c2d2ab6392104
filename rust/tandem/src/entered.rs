//! The runtime a caller's thread stays inside between its calls.
//!
//! A crossing runs on the caller's thread inside the runtime's tokio context, where a handler
//! finds its timers and spawns its tasks, and inside its log scope. Entering either clones an
//! `Arc` (tokio's handle, the log queue) whose count every core writes: with callers on two
//! cores each running its events (`tandem_runtime_run`), the two counts were written four
//! times per event, and their cache lines, which hold what every core reads of the runtime,
//! moved between the cores each time: a fifth of a saturated runtime's cycles. So a thread
//! enters a runtime once and stays inside it after the call, until it runs another runtime's
//! events (it leaves the first, then enters), the runtime shuts down on it, or it exits.
//!
//! What that keeps: a thread that ran a runtime's events holds a clone of that runtime's tokio
//! handle and log queue until one of those three. After the runtime stops, a clone held by a
//! thread that never calls into tandem again keeps tokio's driver (its epoll and event
//! descriptors, its timer wheel) and the queue allocated: at most one stopped runtime per
//! such thread, whatever the number of runtimes made and stopped, and none of it runs.
//!
//! Runtimes are told apart by an identity taken at start, never by address: a runtime freed
//! and another made at its address are two.

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::runtime::{EnterGuard, Handle};

use crate::logs::LogQueue;

/// The identity of a started runtime, for [`within`]: unique in the process.
pub(crate) fn next_identity() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// A thread's stay inside one runtime.
struct Stay {
    identity: u64,
    /// Borrows `_handle`, which is boxed, so it does not move, and is declared after it, so
    /// dropped after it. Dropped by `leave` only: when the thread exits, tokio's context may be
    /// gone already and the guard's drop would panic in a destructor, so it is left undropped,
    /// and the clone it entered goes with tokio's context, whichever goes first.
    guard: ManuallyDrop<EnterGuard<'static>>,
    _handle: Box<Handle>,
    /// The thread's log scope before it entered, put back when it leaves.
    logs_before: Option<Arc<LogQueue>>,
}

impl Stay {
    /// Leaves the runtime: its context and log scope, in the reverse order of entering.
    fn leave(mut self) {
        crate::logs::work_for(self.logs_before.take());
        // SAFETY: dropped once, here; the handle it borrows drops with `self`, after it.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
    }
}

thread_local! {
    static STAY: RefCell<Option<Stay>> = const { RefCell::new(None) };
    /// The runtime whose step runs on this thread now (`within`), 0 for none.
    static RUNNING: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` inside the runtime `identity` names (tokio `handle`, log queue `logs`), entering
/// it unless this thread stays inside it already, and staying inside after. A thread inside
/// another runtime leaves that one first, unless a step of that one runs on it now (a call
/// within a call): then this one is entered for `f` only.
pub(crate) fn within<T>(
    identity: u64,
    handle: &Handle,
    logs: &Arc<LogQueue>,
    f: impl FnOnce() -> T,
) -> T {
    let running = RUNNING.get();
    if running != 0 && running != identity {
        let _enter = handle.enter();
        let _logs = crate::logs::enter(logs);
        return f();
    }
    STAY.with(|stay| {
        let mut stay = stay.borrow_mut();
        if stay.as_ref().is_some_and(|s| s.identity == identity) {
            return;
        }
        if let Some(other) = stay.take() {
            other.leave();
        }
        let handle = Box::new(handle.clone());
        // SAFETY: the guard borrows the boxed handle, which stays at its address and outlives
        // the guard: `leave` drops the guard first, and a thread's exit never drops it.
        let guard =
            unsafe { std::mem::transmute::<EnterGuard<'_>, EnterGuard<'static>>(handle.enter()) };
        let logs_before = crate::logs::swap(Some(logs.clone()));
        *stay = Some(Stay {
            identity,
            guard: ManuallyDrop::new(guard),
            _handle: handle,
            logs_before,
        });
    });
    /// Puts back what RUNNING held, however `f` ends.
    struct Running(u64);
    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.set(self.0);
        }
    }
    let _running = Running(running);
    RUNNING.set(identity);
    f()
}

/// Leaves the runtime `identity` names if this thread stays inside it: for the thread that
/// shuts the runtime down.
pub(crate) fn leave(identity: u64) {
    let stay = STAY.with(|stay| {
        let mut stay = stay.borrow_mut();
        if stay.as_ref().is_some_and(|s| s.identity == identity) {
            stay.take()
        } else {
            None
        }
    });
    if let Some(s) = stay {
        s.leave();
    }
}

/// Whether this thread stays inside the runtime `identity` names.
#[cfg(all(test, not(loom)))]
pub(crate) fn inside(identity: u64) -> bool {
    STAY.with(|stay| {
        stay.borrow()
            .as_ref()
            .is_some_and(|s| s.identity == identity)
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use tokio::runtime::{Builder, RuntimeFlavor};

    fn flavor() -> Option<RuntimeFlavor> {
        Handle::try_current().ok().map(|h| h.runtime_flavor())
    }

    /// A step that runs inside another runtime's step (a call within a call) enters its own
    /// runtime for that step only: the outer runtime's step goes on inside the outer runtime,
    /// where the thread stays.
    #[test]
    fn a_step_within_another_runtimes_step_leaves_the_thread_where_it_was() {
        let outer = Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("tokio");
        let inner = Builder::new_current_thread().build().expect("tokio");
        let (outer_id, inner_id) = (next_identity(), next_identity());
        let logs = Arc::new(LogQueue::default());
        within(outer_id, outer.handle(), &logs, || {
            assert_eq!(flavor(), Some(RuntimeFlavor::MultiThread));
            within(inner_id, inner.handle(), &logs, || {
                assert_eq!(flavor(), Some(RuntimeFlavor::CurrentThread));
            });
            assert_eq!(
                flavor(),
                Some(RuntimeFlavor::MultiThread),
                "the outer step lost its runtime"
            );
            assert!(inside(outer_id) && !inside(inner_id));
        });
        assert!(inside(outer_id), "the thread left the outer runtime");
        assert_eq!(flavor(), Some(RuntimeFlavor::MultiThread));
        // The inner runtime's next step, on its own, moves the thread.
        within(inner_id, inner.handle(), &logs, || {});
        assert!(inside(inner_id) && !inside(outer_id));
        assert_eq!(flavor(), Some(RuntimeFlavor::CurrentThread));
        leave(inner_id);
        assert_eq!(flavor(), None);
        leave(outer_id); // not inside it: nothing to do
    }
}
