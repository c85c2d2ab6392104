//! Handler panics reach Go's logger as log records, not Rust's panic hook on stderr.
//!
//! A panic runs the process's panic hook before it unwinds to the `catch_unwind` that contains
//! it, and Rust's default hook writes the message (and a backtrace, with `RUST_BACKTRACE`) to
//! stderr, beside Go's logs rather than in them. So the first runtime of the process installs
//! a hook of its own ([`install`]) over whichever was there: Rust's default or the embedder's.
//! A panic raised while a handler's future is polled under [`Contained`] is recorded on its
//! thread instead: location, and a backtrace when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE`
//! asks for one. The dispatcher logs it with the message as one error record carrying the
//! handler and the event, which the runtime forwards to Go (crate::logs). The hook before
//! tandem's does not see such a panic: it is contained, counted (`Stats::panics`) and
//! reported to Go as a `panic` error envelope, and Go's logger is where tandem reports.
//! Every other panic (in a task a handler spawned, in an embedder's thread, in tandem itself,
//! in a handler's `init`, `warm_up` or `close`) goes to the hook before tandem's, unchanged.
//!
//! A hook set after the first runtime was created replaces tandem's: handler panics then
//! reach it, and reach Go's logs only if it calls the hook it took (`std::panic::take_hook`),
//! as a hook that chains should. With `panic = "abort"` nothing is contained, so every panic
//! goes to the hook before tandem's.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

/// A contained panic: its message and, when the hook recorded it, where it was raised.
pub(crate) struct Panic {
    /// The payload's text: the message of `panic!`, or a placeholder for other payloads.
    pub(crate) message: String,
    /// `file:line:column` of the panic.
    pub(crate) location: Option<String>,
    /// The backtrace, when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` enables them.
    pub(crate) backtrace: Option<String>,
}

/// What the hook records of a panic raised under [`catch`].
struct Raised {
    message: String,
    location: Option<String>,
    backtrace: Option<String>,
}

thread_local! {
    /// How many [`catch`] scopes the thread is in.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The last panic the hook recorded on this thread, until a catch site takes it.
    static RAISED: Cell<Option<Box<Raised>>> = const { Cell::new(None) };
}

/// Installs tandem's panic hook, once per process, over the hook installed before it.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !record(info) {
                before(info);
            }
        }));
    });
}

/// Records a panic raised under [`catch`] on this thread; false for any other panic.
fn record(info: &PanicHookInfo<'_>) -> bool {
    // try_with: a panic while the thread's locals are being destroyed is nobody's handler's.
    if !cfg!(panic = "unwind") || DEPTH.try_with(Cell::get).unwrap_or(0) == 0 {
        return false;
    }
    let backtrace = Backtrace::capture();
    let raised = Raised {
        message: message(info.payload()),
        location: info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
        backtrace: (backtrace.status() == BacktraceStatus::Captured).then(|| backtrace.to_string()),
    };
    RAISED.try_with(|r| r.set(Some(Box::new(raised)))).is_ok()
}

/// Marks the thread as running contained code until dropped.
struct Scope;

impl Scope {
    fn enter() -> Scope {
        DEPTH.with(|d| d.set(d.get() + 1));
        Scope
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Runs `f`, containing a panic: the hook records it rather than print it, and it comes back
/// as a [`Panic`] for the caller to log. A panic `f` raised and caught itself is logged here,
/// as a warning, for nobody else will.
fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panic> {
    let result = {
        let _scope = Scope::enter();
        std::panic::catch_unwind(AssertUnwindSafe(f))
    };
    let raised = RAISED.with(Cell::take);
    match result {
        Ok(r) => {
            if let Some(raised) = raised {
                tracing::warn!(
                    location = raised.location.as_deref(),
                    backtrace = raised.backtrace.as_deref(),
                    "handler caught a panic of its own: {}",
                    raised.message
                );
            }
            Ok(r)
        }
        Err(payload) => {
            let (location, backtrace) = match raised {
                Some(r) => (r.location, r.backtrace),
                None => (None, None),
            };
            Err(Panic {
                message: message(&*payload),
                location,
                backtrace,
            })
        }
    }
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

pin_project_lite::pin_project! {
    /// A handler's future whose every poll runs under [`catch`]: it completes with the
    /// handler's output, or with the [`Panic`] that ended it. Polled by one task at a time,
    /// like any future.
    pub(crate) struct Contained<F> {
        #[pin]
        inner: F,
    }
}

/// Contains the panics of `inner`'s polls (see [`Contained`]).
pub(crate) fn contain<F: Future>(inner: F) -> Contained<F> {
    Contained { inner }
}

impl<F: Future> Future for Contained<F> {
    type Output = Result<F::Output, Panic>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch(|| inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::process::Command;
    use std::sync::atomic::AtomicUsize;

    use crate::testing::*;

    /// A handler that catches a panic of its own and carries on.
    struct Shrug;
    impl Handler for Shrug {
        async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
            let _ = std::panic::catch_unwind(|| panic!("shrugged off"));
            Outcome::Ack
        }
    }

    /// Runs `handler_panic_in_a_process_of_its_own` in a process of its own, whose stderr
    /// is what the default hook would have written to.
    #[test]
    fn handler_panics_write_nothing_to_stderr() {
        let test = "panics::tests::handler_panic_in_a_process_of_its_own";
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run the test binary");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} failed:\n{stdout}\n{stderr}"
        );
        assert!(
            !stderr.contains("boom") && !stderr.contains("shrugged off"),
            "a handler's panic was written to stderr:\n{stderr}"
        );
        // The check above can fail: a panic outside a handler is written there.
        assert!(
            stderr.contains("outside tandem"),
            "a panic outside tandem's handlers did not reach Rust's default hook:\n{stderr}"
        );
    }

    #[test]
    #[ignore = "run in a process of its own by handler_panics_write_nothing_to_stderr"]
    fn handler_panic_in_a_process_of_its_own() {
        static EMBEDDER_HOOK_RAN: AtomicUsize = AtomicUsize::new(0);
        // The embedder's hook, set before any runtime, chaining to Rust's default one.
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            EMBEDDER_HOOK_RAN.fetch_add(1, Relaxed);
            before(info)
        }));
        crate::logs::set_level(2); // info
        let mut reg = Registry::new();
        reg.register("boom", "boom", Boom)
            .register("shrug", "shrug", Shrug);
        // Reply slots big enough for a log batch carrying a whole backtrace.
        let cfg = Config {
            rep_slot_size: 64 << 10,
            ..small()
        };
        let mut rt = Runtime::new(cfg, reg).expect("runtime");
        rt.start().expect("start");
        submit(&rt, 0, &envelope("boom", b""));
        submit(&rt, 1, &envelope("shrug", b""));
        let (mut outcomes, mut lines) = (Vec::new(), Vec::new());
        while outcomes.len() < 2 || lines.len() < 2 {
            let done = next_any(&rt);
            match done.kind {
                TANDEM_CQE_LOG => lines.extend(log_records(&done.reply)),
                kind => outcomes.push(kind),
            }
            if done.reply_slot != TANDEM_NO_SLOT {
                release(&rt, done.reply_slot);
            }
        }
        outcomes.sort();
        assert_eq!(outcomes, [TANDEM_OUTCOME_ACK, TANDEM_OUTCOME_TERM]);

        let boom = lines
            .iter()
            .find(|l| l.field("handler") == Some("boom"))
            .expect("a record of the panic");
        assert_eq!(boom.level, 4, "error");
        assert_eq!(boom.message, "handler panicked: boom");
        assert_eq!(boom.field("event_id"), Some("1"));
        let at = boom.field("location").unwrap_or_default();
        assert!(at.contains("testing.rs:"), "location {at:?}");
        // RUST_BACKTRACE=1 asks for a backtrace; it travels in the record too.
        assert!(boom.field("backtrace").is_some_and(|b| !b.is_empty()));

        let shrug = lines
            .iter()
            .find(|l| l.field("handler") == Some("shrug"))
            .expect("a record of the panic the handler caught");
        assert_eq!(shrug.level, 3, "warn");
        assert_eq!(
            shrug.message,
            "handler caught a panic of its own: shrugged off"
        );
        let at = shrug.field("location").unwrap_or_default();
        assert!(at.contains("panics.rs:"), "location {at:?}");

        assert_eq!(
            EMBEDDER_HOOK_RAN.load(Relaxed),
            0,
            "a handler's panic reached the hook before tandem's"
        );
        let _ = std::thread::spawn(|| panic!("outside tandem")).join();
        assert_eq!(
            EMBEDDER_HOOK_RAN.load(Relaxed),
            1,
            "a panic outside any handler must reach the hook before tandem's"
        );
        assert_whole(&mut rt);
    }
}
