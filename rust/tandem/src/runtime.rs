//! The runtime's lifecycle: [`Runtime`] maps the shared region, starts tokio, the poller and
//! the log forwarder, and shuts them down without losing an event.
//!
//! The other modules, bottom up (each imports only those below it): `code`, `outcome`,
//! `config` and `stats` (error codes, a handler's verdict, sizes, counters); `slots` (the two
//! arenas: the request-slot guard, reply writers); `completion` (the one path that publishes
//! completion records); `handler` (what a handler implements and receives); `logs` (each
//! runtime's log records, forwarded to Go); `panics` (handler panics contained and reported
//! through the logs, not on stderr); `shared` (what the runtime's tasks share);
//! `dispatch` (running one handler: deadlines, cancellation, panics, inline or in a task);
//! `local` (emitted events routed inside Rust); `poller` (the submission ring); then this
//! module, and `ffi` (the C exports) above it.

use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use crate::completion::{LocalDispatch, LocalRoutes};
use crate::config::{Config, Error, Phase, RegionInfo};
use crate::handler::Registry;
use crate::kick::{Kicked, Ran};
use crate::logs::LogQueue;
use crate::poller::{Role, drain_submissions, poll_submissions};
use crate::shared::Shared;
use crate::stats::Stats;
use crate::sync::Ordering;

#[cfg(feature = "bench-internals")]
mod bench;

/// How long shutdown waits for cancelled handlers to stop before it stops without them.
const ABANDON_AFTER: Duration = Duration::from_secs(5);

/// A Rust runtime: the shared region and, once started, tokio, the poller and the log
/// forwarder.
///
/// Created and driven by one thread at a time (the C exports serialise calls); the shared
/// region is then used concurrently by Go and by the tokio workers.
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
    tokio: Option<tokio::runtime::Runtime>,
    poller: Option<tokio::task::JoinHandle<()>>,
    logs: Option<tokio::task::JoinHandle<()>>,
    log_stop: CancellationToken,
    /// This runtime's log records, waiting for the forwarder.
    log_queue: Arc<LogQueue>,
    /// Who this runtime is to the threads that stay inside it (crate::entered), from start.
    identity: u64,
    state: State,
}

/// A runtime's lifecycle state: the same states, in the same order, as Go's `tandem.State`
/// (docs/lifecycle.md).
///
/// ```text
/// Registered ─start─► Initialized ─► WarmingUp ─► Running ─shutdown─► Draining ─► Stopped
///      │                  │              │
///      └──────────────────┴──────────────┴── a hook fails ──► Failed ─shutdown─► Stopped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created: the handlers are registered; nothing runs.
    Registered,
    /// Start has begun: the handlers' init hooks run, one by one.
    Initialized,
    /// Every init succeeded: the handlers' warm-up hooks run, one by one.
    WarmingUp,
    /// Taking events.
    Running,
    /// Shutdown is finishing in-flight events and closing the handlers.
    Draining,
    /// Stopped: every handler closed, tokio stopped.
    Stopped,
    /// Start failed: the handlers initialised are closed and tokio is stopped already.
    Failed,
}

impl Runtime {
    /// Maps the shared region and sets up the rings; no thread is started yet.
    pub fn new(cfg: Config, mut registry: Registry) -> Result<Runtime, Error> {
        cfg.validate()?;
        registry.seal();
        let shared = Shared::new(cfg, registry)?;
        crate::logs::install();
        crate::panics::install();
        Ok(Runtime {
            shared: Arc::new(shared),
            tokio: None,
            poller: None,
            logs: None,
            log_stop: CancellationToken::new(),
            log_queue: Arc::default(),
            identity: 0,
            state: State::Registered,
        })
    }

    /// Where the shared region's parts are, for the C layout.
    #[cfg_attr(not(feature = "exports"), allow(dead_code))]
    pub(crate) fn region_info(&self) -> RegionInfo<'_> {
        let s = &self.shared;
        RegionInfo {
            base: s.region.base(),
            size: s.region.len(),
            layout: s.layout,
            cfg: &s.cfg,
            wake_rust_fd: s.wake_rust.raw(),
            wake_go_fd: s.completions.wake_go().raw(),
        }
    }

    /// Names the event types whose emitted events are routed inside Rust, each to the handler
    /// registered under the same type. As [`Runtime::set_local_routes_to`] with each type its
    /// own handler.
    pub fn set_local_routes<'a>(
        &self,
        types: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Error> {
        self.set_local_routes_to(types.into_iter().map(|t| (t, t)))
    }

    /// Names the event types whose emitted events are routed inside Rust, each with the
    /// registered type of the handler it goes to. Go sets them from its routing table (exact
    /// routes to one Rust handler with no policy of Go's own, no timeout and no shadow) before
    /// start, and again whenever a route's targets change: each call replaces the whole set.
    /// It returns once every emit after it goes by the new set; events already dispatched
    /// by the old one finish where they are. On an error the set in place stays.
    pub fn set_local_routes_to<'a>(
        &self,
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), Error> {
        let index: HashMap<&str, u32> = self
            .shared
            .registry
            .event_types()
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32 + 1))
            .collect();
        let mut local = HashMap::new();
        for (t, handler) in routes {
            let Some(&i) = index.get(handler) else {
                return Err(Error::InvalidConfig(format!(
                    "local route {t:?}: no Rust handler {handler:?}"
                )));
            };
            local.insert(t.to_owned(), i);
        }
        let to: std::sync::Weak<dyn LocalDispatch> = Arc::downgrade(&self.shared) as _;
        self.shared
            .completions
            .set_local(LocalRoutes { by_type: local, to });
        Ok(())
    }

    /// The event types this runtime has handlers for.
    pub fn event_types(&self) -> Vec<&str> {
        self.shared.registry.event_types()
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Starts tokio, runs every handler's init and then every handler's warm-up (each in
    /// event-type order), then starts the poller. If a hook fails, or panics, start undoes
    /// what it did: the handlers whose init succeeded are closed in reverse order, tokio is
    /// stopped, the state is [`State::Failed`], and the error ([`Error::Init`]) names the
    /// handler and the hook.
    pub fn start(&mut self) -> Result<(), Error> {
        if self.state != State::Registered {
            return Err(Error::State("start called twice"));
        }
        // No signal handlers: tokio installs them only for tokio::signal, which tandem never
        // uses, because Go owns the process's signals. Every worker thread works for this
        // runtime, so the records logged on it reach this runtime's log queue.
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(self.shared.cfg.workers)
            .thread_name("tandem-worker")
            .enable_io()
            .enable_time();
        // tokio leaves thread hooks out of its builds for loom's model checking.
        #[cfg(not(loom))]
        {
            let queue = self.log_queue.clone();
            builder
                .on_thread_start(move || crate::logs::work_for(Some(queue.clone())))
                .on_thread_stop(|| crate::logs::work_for(None));
        }
        let rt = match builder.build() {
            Ok(rt) => rt,
            Err(e) => {
                self.state = State::Failed;
                return Err(e.into());
            }
        };
        let _logs = crate::logs::enter(&self.log_queue);
        let mut initialised = 0;
        if let Err(e) = self.start_on(&rt, &mut initialised) {
            close_handlers(&self.shared.registry.in_order()[..initialised]);
            rt.shutdown_timeout(Duration::from_secs(1));
            self.state = State::Failed;
            return Err(e);
        }
        self.tokio = Some(rt);
        self.identity = crate::entered::next_identity();
        self.state = State::Running;
        Ok(())
    }

    /// Start's steps on tokio `rt`, counting in `initialised` the handlers whose init
    /// succeeded, for start to close them if a later step fails.
    fn start_on(
        &mut self,
        rt: &tokio::runtime::Runtime,
        initialised: &mut usize,
    ) -> Result<(), Error> {
        let failed = |route: &crate::handler::Route, phase, error| Error::Init {
            handler: route.name.to_string(),
            phase,
            error,
        };
        self.state = State::Initialized;
        for route in self.shared.registry.in_order() {
            let h = &route.handler;
            std::panic::catch_unwind(AssertUnwindSafe(|| h.init()))
                .unwrap_or_else(|p| Err(panicked(p)))
                .map_err(|e| failed(route, Phase::Init, e))?;
            *initialised += 1;
        }
        self.state = State::WarmingUp;
        let shared = self.shared.clone();
        rt.block_on(async move {
            for route in shared.registry.in_order() {
                AssertUnwindSafe(route.handler.warm_up())
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| Err(panicked(p)))
                    .map_err(|e| failed(route, Phase::WarmUp, e))?;
            }
            Ok::<(), Error>(())
        })?;
        let afd = {
            let _enter = rt.enter();
            let fd = self.shared.wake_rust.try_clone_owned()?;
            // SAFETY: the AsyncFd owns `fd`, a fresh duplicate nobody else closes, for its life.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?
        };
        self.poller = Some(rt.spawn(poll_submissions(self.shared.clone(), afd)));
        self.logs = Some(rt.spawn(crate::logs::forward(
            self.log_queue.clone(),
            self.shared.completions.clone(),
            self.log_stop.clone(),
        )));
        Ok(())
    }

    /// Runs the submission step on the calling thread, for a submitter that found the poller
    /// parked (crate::kick): it drains the submission ring here, inline handlers included,
    /// and re-arms the poller's parked flag. Safe to call from any thread while running.
    /// `frequent` and `batch` are `TANDEM_KICK_FREQUENT` and `TANDEM_KICK_BATCH`.
    pub fn kick(&self, frequent: bool, batch: bool) -> Result<Kicked, Error> {
        self.on_caller(|shared| crate::kick::kick(shared, frequent, batch))
    }

    /// Drains what it can of the submission ring on the calling thread, for a submitter that
    /// published while another crossing was in progress (crate::kick::help): no duty, no
    /// re-arm. Safe to call from any thread while running.
    pub fn help(&self) -> Result<Kicked, Error> {
        self.on_caller(crate::kick::help)
    }

    /// Runs the event in request slot `slot` on the calling thread, past the submission ring
    /// (`tandem_runtime_run`), for a submitter that waits for its outcome: `token` and `route`
    /// are what its descriptor would carry. Safe to call from any thread while running; an
    /// error (not running) takes nothing.
    pub fn run(&self, token: u64, slot: u32, len: u32, route: u32) -> Result<Ran, Error> {
        self.on_caller(|shared| crate::kick::run(shared, token, slot, len, route))
    }

    /// Runs a crossing's step on the calling thread, inside this runtime's tokio context (a
    /// handler that waits becomes a task of it) and log scope, where the thread then stays
    /// (crate::entered); an error when not running.
    fn on_caller<T>(&self, step: impl FnOnce(&Arc<Shared>) -> T) -> Result<T, Error> {
        let Some(rt) = self.tokio.as_ref() else {
            return Err(Error::State("not running"));
        };
        Ok(crate::entered::within(
            self.identity,
            rt.handle(),
            &self.log_queue,
            || step(&self.shared),
        ))
    }

    /// Lets in-flight handlers run for up to `grace`, cancels the rest (each completes as a
    /// retryable "cancelled" error, never lost), waits for every completion to be published,
    /// then stops the poller and tokio. Release records Go sends afterwards stay in the ring
    /// until [`Runtime::stats`] consumes them. Idempotent.
    pub fn shutdown(&mut self, grace: Duration) {
        if self.state != State::Running {
            // Never started (nothing to close), stopped already, or failed to start (start
            // closed what it had initialised).
            if self.state != State::Draining {
                self.state = State::Stopped;
            }
            return;
        }
        let Some(rt) = self.tokio.take() else { return };
        self.state = State::Draining;
        let _logs = crate::logs::enter(&self.log_queue);
        let shared = self.shared.clone();
        let poller = self.poller.take();
        let log_task = self.logs.take();
        let log_stop = self.log_stop.clone();
        rt.block_on(async move {
            // Count events, not tasks: an event is held from the moment the poller takes it
            // until its completion is published, even while it is being handed to a task. The
            // poller keeps running meanwhile, so reply slots Go releases come back and no
            // completion waits for one in vain.
            let (counters, requests) = (&shared.counters, &shared.completions.requests);
            if tokio::time::timeout(grace, counters.until_idle(requests))
                .await
                .is_err()
            {
                // Cancelled handlers stop at their next await. One stuck in synchronous code
                // never does; after a bound the runtime stops without it, and Go settles its
                // event as retryable ("abandoned").
                shared.cancel.cancel();
                let _ = tokio::time::timeout(ABANDON_AFTER, counters.until_idle(requests)).await;
            }
            shared.stopping.store(true, Ordering::SeqCst);
            shared.wake_rust.signal();
            if let Some(p) = poller {
                let _ = p.await;
            }
            // A last batch of log records, then the forwarder stops.
            log_stop.cancel();
            if let Some(l) = log_task {
                let _ = l.await;
            }
            shared.tracker.close();
            shared.tracker.wait().await;
        });
        close_handlers(self.shared.registry.in_order());
        // Threads that ran events stay inside it until they run another runtime's or exit;
        // this one need not.
        crate::entered::leave(self.identity);
        rt.shutdown_timeout(Duration::from_secs(1));
        self.state = State::Stopped;
    }

    /// A snapshot of the counters. Once the runtime is stopped it first consumes the release
    /// records Go left in the submission ring, so outstanding counts are final.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        if self.state == State::Stopped {
            drain_submissions(s, usize::MAX, None, Role::Try);
        }
        let c = &s.completions;
        s.counters
            .snapshot(s.sq.len(), c.depth(), &c.requests, &c.replies)
    }
}

/// Closes `routes`' handlers in reverse order, each once, containing panics.
fn close_handlers(routes: &[crate::handler::Route]) {
    for route in routes.iter().rev() {
        let h = &route.handler;
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| h.close()));
    }
}

/// A hook's panic as its error.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> crate::outcome::HandlerError {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    crate::outcome::HandlerError::with_code(crate::code::PANIC, msg)
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::*;
    use crate::testing::*;

    #[test]
    fn echo_round_trip_releases_both_slots() {
        let mut rt = runtime();
        for round in 0..20u32 {
            let slot = round % 4;
            submit(&rt, slot, &envelope("echo", b"hello"));
            let done = next_completion(&rt);
            assert_eq!(
                (done.kind, done.slot, done.token),
                (TANDEM_OUTCOME_ACK, slot, u64::from(slot) | 7 << 32)
            );
            assert_eq!(done.reply, b"hello");
            release(&rt, done.reply_slot);
        }
        let st = assert_whole(&mut rt);
        assert_eq!((st.received, st.completed, st.releases), (20, 20, 20));
    }

    #[test]
    fn shutdown_returns_when_the_last_event_completes_not_at_the_grace() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("nap.inline", b"slow"));
        wait_until("the poller to take the event", || rt.stats().received >= 1);
        let began = Instant::now();
        rt.shutdown(Duration::from_secs(60));
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "shutdown waited out its grace"
        );
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"slow"[..])
        );
        release(&rt, done.reply_slot);
        assert_no_buffer_held(&rt);
    }

    #[test]
    fn shutdown_cancels_running_handlers_as_retryable() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("forever", b""));
        submit(&rt, 1, &envelope("forever", b""));
        wait_until("the poller to take both events", || {
            rt.stats().received >= 2
        });
        rt.shutdown(Duration::from_millis(20));
        for _ in 0..2 {
            expect_cancelled(&rt);
        }
        assert_no_buffer_held(&rt);
    }

    #[test]
    fn failed_warm_up_names_the_handler() {
        let mut reg = Registry::new();
        reg.register("cold", "cold-start", ColdStart);
        let mut rt = Runtime::new(Config::default(), reg).expect("runtime");
        match rt.start() {
            Err(e @ Error::Init { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "warm-up of Rust handler \"cold-start\" failed: unavailable: cache unreachable"
                );
                let Error::Init {
                    handler,
                    phase,
                    error,
                } = e
                else {
                    unreachable!()
                };
                assert_eq!((handler.as_str(), phase), ("cold-start", Phase::WarmUp));
                assert_eq!(error.code, "unavailable");
            }
            other => panic!("start = {other:?}"),
        }
        assert_eq!(rt.state(), State::Failed);
    }

    /// Records its hooks' calls in a shared log, and fails (or panics in) the one it is
    /// told to.
    struct Hooks {
        name: &'static str,
        log: Arc<std::sync::Mutex<Vec<String>>>,
        fail: Option<(&'static str, bool)>, // the hook, and whether it panics
    }
    impl Hooks {
        fn note(&self, hook: &str) -> Result<(), HandlerError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{hook} {}", self.name));
            match self.fail {
                Some((h, true)) if h == hook => panic!("{hook} panicked"),
                Some((h, false)) if h == hook => Err(HandlerError::with_code("unavailable", hook)),
                _ => Ok(()),
            }
        }
    }
    impl Handler for Hooks {
        async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
            Outcome::Ack
        }
        fn init(&self) -> Result<(), HandlerError> {
            self.note("init")
        }
        async fn warm_up(&self) -> Result<(), HandlerError> {
            self.note("warm")
        }
        fn close(&self) {
            let _ = self.note("close");
        }
    }

    /// Three handlers, a to c in event-type order, `failing` the hook of the one named.
    fn hooked(
        failing: Option<(&'static str, &'static str, bool)>,
    ) -> (Runtime, Arc<std::sync::Mutex<Vec<String>>>) {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reg = Registry::new();
        for name in ["c", "a", "b"] {
            let fail = failing.filter(|f| f.0 == name).map(|f| (f.1, f.2));
            reg.register(
                name,
                name,
                Hooks {
                    name,
                    log: log.clone(),
                    fail,
                },
            );
        }
        (Runtime::new(small(), reg).expect("runtime"), log)
    }

    fn taken(log: &std::sync::Mutex<Vec<String>>) -> Vec<String> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    #[test]
    fn hooks_run_in_order_and_close_in_reverse_once() {
        let (mut rt, log) = hooked(None);
        assert_eq!(rt.state(), State::Registered);
        rt.start().expect("start");
        assert_eq!(rt.state(), State::Running);
        assert_eq!(
            taken(&log),
            ["init a", "init b", "init c", "warm a", "warm b", "warm c"]
        );
        assert!(matches!(rt.start(), Err(Error::State(_))));
        rt.shutdown(Duration::from_secs(1));
        assert_eq!(rt.state(), State::Stopped);
        assert_eq!(taken(&log), ["close c", "close b", "close a"]);
        rt.shutdown(Duration::from_secs(1));
        drop(rt);
        assert!(taken(&log).is_empty(), "a handler closed twice");
    }

    #[test]
    fn a_failed_warm_up_closes_every_initialised_handler_in_reverse() {
        for panics in [false, true] {
            let (mut rt, log) = hooked(Some(("b", "warm", panics)));
            match rt.start() {
                Err(Error::Init {
                    handler,
                    phase,
                    error,
                }) => {
                    assert_eq!((handler.as_str(), phase), ("b", Phase::WarmUp));
                    assert_eq!(error.code, if panics { "panic" } else { "unavailable" });
                }
                other => panic!("start = {other:?}"),
            }
            assert_eq!(rt.state(), State::Failed);
            assert_eq!(
                taken(&log),
                [
                    "init a", "init b", "init c", "warm a", "warm b", "close c", "close b",
                    "close a"
                ]
            );
            rt.shutdown(Duration::from_secs(1));
            drop(rt);
            assert!(taken(&log).is_empty(), "a handler closed twice");
        }
    }

    #[test]
    fn a_failed_init_closes_only_the_handlers_initialised_before_it() {
        for panics in [false, true] {
            let (mut rt, log) = hooked(Some(("b", "init", panics)));
            match rt.start() {
                Err(Error::Init { handler, phase, .. }) => {
                    assert_eq!((handler.as_str(), phase), ("b", Phase::Init))
                }
                other => panic!("start = {other:?}"),
            }
            assert_eq!(rt.state(), State::Failed);
            assert_eq!(taken(&log), ["init a", "init b", "close a"]);
            drop(rt);
            assert!(taken(&log).is_empty());
        }
    }

    #[test]
    fn a_runtime_never_started_closes_nothing() {
        let (mut rt, log) = hooked(None);
        rt.shutdown(Duration::ZERO);
        assert_eq!(rt.state(), State::Stopped);
        assert!(matches!(rt.start(), Err(Error::State(_))));
        assert!(taken(&log).is_empty());
    }
}

#[cfg(all(test, not(loom)))]
mod kick_tests {
    use std::time::{Duration, Instant};

    use super::Runtime;
    use crate::config::Config;
    use crate::handler::Registry;
    use crate::layout::TANDEM_OUTCOME_ACK;
    use crate::slots::Delivery;
    use crate::sync::Ordering;
    use crate::testing::*;

    /// Publishes like Go: the header, the envelope, the descriptor; true if this publisher
    /// won the wake-up duty (the poller is parked).
    fn publish(rt: &Runtime, slot: u32, bytes: &[u8]) -> bool {
        publish_delivery(rt, slot, bytes, first_delivery())
    }

    /// As `publish`, with the delivery header given.
    fn publish_delivery(rt: &Runtime, slot: u32, bytes: &[u8], delivery: Delivery) -> bool {
        push_event(rt, slot, bytes, 0, delivery);
        rt.shared.sq.take_wakeup()
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
            let k = rt.kick(false, false).expect("kick");
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
    fn a_blocked_callers_task_handler_runs_on_its_thread_until_it_waits() {
        let mut rt = runtime();
        let waited = Delivery {
            waited: true,
            ..first_delivery()
        };
        let wakes = |rt: &Runtime| {
            let c = &rt.shared.counters;
            (
                c.spawned.load(Ordering::Relaxed),
                c.task_wakes.load(Ordering::Relaxed),
            )
        };
        // "echo" is a task handler. Its submitter blocks on the outcome: the kick runs it to
        // completion on the calling thread, with no task and no worker woken.
        wait_parked(&rt);
        assert!(publish_delivery(&rt, 0, &envelope("echo", b"w"), waited));
        rt.kick(false, false).expect("kick");
        assert_eq!(
            wakes(&rt),
            (0, 0),
            "a handler that never waited took a task"
        );
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"w"[..])
        );
        release(&rt, done.reply_slot);
        // A submitter that does not block (Submit): the handler goes to a task, as on the
        // poller, and the worker's wake is counted.
        wait_parked(&rt);
        assert!(publish(&rt, 1, &envelope("echo", b"s")));
        rt.kick(false, false).expect("kick");
        assert_eq!(wakes(&rt), (1, 1));
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"s");
        release(&rt, done.reply_slot);
        // Blocked, but the handler waits (a timer): it runs here to its first wait, then
        // moves into a task, which finishes it.
        wait_parked(&rt);
        assert!(publish_delivery(&rt, 2, &envelope("nap", b"n"), waited));
        rt.kick(false, false).expect("kick");
        assert_eq!(wakes(&rt), (2, 2));
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"n");
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn releases_wait_in_the_ring_until_a_writer_needs_a_reply_slot() {
        let mut rt = runtime(); // 4 reply slots
        let mut held: Vec<u32> = (0..4)
            .map(|slot| {
                submit(&rt, slot, &envelope("echo", b"h"));
                next_completion(&rt).reply_slot
            })
            .collect();
        // Every reply slot is Go's. A fifth reply's writer waits, and says so.
        submit(&rt, 0, &envelope("echo", b"fifth"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rt.shared.sq.is_hungry() {
            assert!(
                Instant::now() < deadline,
                "the waiting writer never said so"
            );
            std::thread::yield_now();
        }
        // Go's next release then reaches Rust at once (woken, or taken by a consumer awake).
        release_lazily(&rt, held.pop().unwrap());
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"fifth");
        assert!(!rt.shared.sq.is_hungry(), "the writer is fed");
        held.push(done.reply_slot);
        // Nobody waits: a release at idle wakes nobody and waits in the ring...
        wait_parked(&rt);
        let parks = rt.stats().parks;
        assert!(!release_lazily(&rt, held.pop().unwrap()));
        assert_eq!(rt.stats().sq_depth, 1, "the release waits in the ring");
        assert!(rt.shared.sq.is_parked(), "the consumer sleeps on");
        // ... until the next event's crossing takes it with the event.
        let releases = rt.stats().releases;
        assert!(publish(&rt, 1, &envelope("echo.inline", b"next")));
        assert_eq!(rt.kick(false, false).expect("kick").drained, 2);
        assert_eq!(rt.stats().releases, releases + 1);
        assert_eq!(rt.stats().parks, parks);
        held.push(next_completion(&rt).reply_slot);
        for slot in held {
            release(&rt, slot);
        }
        assert_whole(&mut rt);
    }

    #[test]
    fn on_a_small_machine_the_poller_spins_only_while_gos_is_parked() {
        let mut reg = Registry::new();
        reg.register_inline("echo.inline", "echo-inline", Echo);
        // A spin window of a minute: a poller that spins is still awake long after the test.
        let cfg = Config {
            spin: Duration::from_secs(60),
            handover: Some(false),
            ..small()
        };
        let mut rt = Runtime::new(cfg, reg).expect("runtime");
        rt.start().expect("start");
        // Go's poller (played by the test) is awake: the Rust poller parks at once, after
        // start and after each event, however long its spin window. (How long it spins
        // while Go's is parked is the spinner's, tested in poller.rs.)
        wait_parked(&rt);
        let parks = rt.stats().parks;
        submit(&rt, 0, &envelope("echo.inline", b"a"));
        let done = next_completion(&rt);
        let deadline = Instant::now() + Duration::from_secs(10);
        while rt.stats().parks == parks {
            assert!(
                Instant::now() < deadline,
                "the poller spun beside an awake Go poller"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn a_helper_runs_events_beside_a_stalled_crossing_and_leaves_the_duty_to_it() {
        let mut rt = runtime();
        wait_parked(&rt);
        // A publisher wins the duty, then stalls (its thread descheduled) before it kicks.
        assert!(publish(&rt, 0, &envelope("echo.inline", b"first")));
        // The next wins none; it helps, and both events run on its thread.
        assert!(!publish(&rt, 1, &envelope("echo.inline", b"second")));
        let k = rt.help().expect("help");
        assert_eq!(k.drained, 2);
        let (a, b) = (next_completion(&rt), next_completion(&rt));
        assert_eq!(
            (a.reply.as_slice(), b.reply.as_slice()),
            (&b"first"[..], &b"second"[..])
        );
        assert!(
            !rt.shared.sq.is_parked(),
            "a helper re-armed the flag: that is the duty holder's"
        );
        // The stalled crossing resumes: nothing left, and it re-arms for the sleeping poller.
        assert_eq!(rt.kick(false, false).expect("kick").drained, 0);
        assert!(rt.shared.sq.is_parked());
        release(&rt, a.reply_slot);
        release(&rt, b.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn a_lost_wake_up_costs_a_second_and_is_counted() {
        let mut rt = runtime();
        wait_parked(&rt);
        // A producer that pushes and, against the protocol, neither wakes nor crosses.
        push_event(
            &rt,
            0,
            &envelope("echo.inline", b"stranded"),
            0,
            first_delivery(),
        );
        // The parked poller looks at its ring anyway, now and then: the event runs.
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"stranded");
        // The rescue is counted once the drain that ran the event returns: after its
        // completion, which this thread may read first.
        wait_until("the rescue to be counted", || rt.stats().rescues >= 1);
        assert_eq!(rt.stats().rescues, 1);
        release(&rt, done.reply_slot);
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
        let k = rt.kick(false, false).expect("kick");
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
    fn a_batch_kick_hands_nothing_over_for_its_number_alone() {
        // A 2-core machine's rule (no handover for inline events), and a spin window far
        // longer than the test's steps.
        let mut reg = Registry::new();
        reg.register_inline("echo.inline", "echo-inline", Echo);
        let cfg = Config {
            spin: Duration::from_millis(50),
            handover: Some(false),
            sq_capacity: 128,
            cq_capacity: 128,
            req_slots: 64,
            ..small()
        };
        let mut rt = Runtime::new(cfg, reg).expect("runtime");
        rt.start().expect("start");
        // 40 records at one kick: from concurrent submitters, the poller takes over; as one
        // submitter's batch, the kick re-arms and the poller sleeps on.
        for (batch, want) in [(false, 1), (true, 1)] {
            wait_parked(&rt);
            for slot in 0..40 {
                publish(&rt, slot, &envelope("echo.inline", b""));
            }
            let k = rt.kick(true, batch).expect("kick");
            assert_eq!(k.drained, 40);
            assert_eq!(
                rt.stats().handovers,
                want,
                "a frequent kick of 40 records, batch {batch}"
            );
            for _ in 0..40 {
                let done = next_completion(&rt);
                assert_eq!(done.kind, TANDEM_OUTCOME_ACK);
            }
        }
        assert_whole(&mut rt);
    }

    #[test]
    fn kicks_closer_than_the_spin_window_hand_the_ring_to_the_poller() {
        // A spin window far longer than the test's steps take, even in a debug build.
        let mut reg = Registry::new();
        reg.register_inline("echo.inline", "echo-inline", Echo);
        let cfg = Config {
            spin: Duration::from_millis(50),
            handover: Some(true),
            ..small()
        };
        let mut rt = Runtime::new(cfg, reg).expect("runtime");
        rt.start().expect("start");
        wait_parked(&rt);
        assert!(publish(&rt, 0, &envelope("echo.inline", b"a")));
        rt.kick(false, false).expect("first kick");
        assert_eq!(
            rt.stats().handovers,
            0,
            "a first kick after a quiet spell re-arms"
        );
        let first = next_completion(&rt);
        // At once again (the reply is kept, so no release wakes the poller in between): the
        // arrival gap is inside the spin window.
        assert!(publish(&rt, 1, &envelope("echo.inline", b"b")));
        rt.kick(true, false).expect("second kick");
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

#[cfg(all(test, not(loom)))]
mod run_tests {
    use super::Runtime;
    use crate::completion::Record;
    use crate::slots::Delivery;
    use crate::testing::*;

    /// What Go writes before a run: the header (a Call's: waited) and the envelope, in slot
    /// `slot`; the descriptor's token.
    fn write(rt: &Runtime, slot: u32, bytes: &[u8]) -> u64 {
        let waited = Delivery {
            waited: true,
            ..first_delivery()
        };
        rt.shared
            .completions
            .requests
            .write_as_go(slot, waited, bytes);
        u64::from(slot) | 9 << 32
    }

    fn run(rt: &Runtime, slot: u32, bytes: &[u8]) -> crate::kick::Ran {
        let token = write(rt, slot, bytes);
        rt.run(token, slot, bytes.len() as u32, 0).expect("run")
    }

    /// A record taken from a run, read as Go reads a ring record.
    fn reply_of(rt: &Runtime, r: &Record) -> Vec<u8> {
        rt.shared
            .completions
            .replies
            .read_as_go(r.reply_slot, r.reply_len)
    }

    #[test]
    fn a_run_hands_its_events_completion_back_with_the_call_not_through_the_ring() {
        let mut rt = runtime();
        for round in 0..3u32 {
            // "echo" is a task handler: a waited event runs on the calling thread anyway.
            for ty in ["echo.inline", "echo"] {
                let ran = run(&rt, round % 4, &envelope(ty, b"ran"));
                let done = ran.done.unwrap_or_else(|| {
                    panic!(
                        "{ty} in round {round} did not finish at once: {:?}",
                        try_completion(&rt).map(|d| d.kind)
                    )
                });
                assert_eq!(
                    (done.kind, done.slot, done.token),
                    (
                        TANDEM_OUTCOME_ACK,
                        round % 4,
                        u64::from(round % 4) | 9 << 32
                    )
                );
                assert_eq!(reply_of(&rt, &done), b"ran");
                assert!(
                    try_completion(&rt).is_none(),
                    "the record went into the ring too"
                );
                assert!(!ran.go_wake_owed, "nothing was published: nothing is owed");
                release(&rt, done.reply_slot);
                // A run that finds every reply slot lent waits for one, as a task, and its
                // record then comes through the ring: let the poller take the release.
                wait_until("the release", || rt.stats().replies_lent == 0);
            }
        }
        let c = &rt.shared.counters;
        assert_eq!(
            (c.spawned.load(Relaxed), c.task_wakes.load(Relaxed)),
            (0, 0),
            "a run took a task"
        );
        let st = assert_whole(&mut rt);
        assert_eq!((st.runs, st.received, st.completed), (6, 6, 6));
    }

    #[test]
    fn runs_take_the_releases_waiting_in_the_ring_before_reply_slots_run_out() {
        let mut rt = runtime();
        wait_until("the poller to park", || rt.shared.sq.is_parked());
        let parks = rt.stats().parks;
        // Three times as many runs as reply slots, each reply released as Go does it: lazily,
        // into the ring, waking nobody. No run may find every slot lent.
        for i in 0..12u32 {
            let done = run(&rt, i % 4, &envelope("echo.inline", b"r"))
                .done
                .unwrap_or_else(|| panic!("run {i} waited for a reply slot"));
            assert!(
                !release_lazily(&rt, done.reply_slot),
                "run {i}: a release woke the poller"
            );
        }
        assert_eq!(rt.stats().parks, parks, "the poller was woken");
        let st = assert_whole(&mut rt);
        assert_eq!((st.runs, st.releases), (12, 12));
    }

    #[test]
    fn a_panicking_handler_comes_back_as_a_term_with_its_error_envelope() {
        let mut rt = runtime();
        let done = run(&rt, 0, &envelope("boom.inline", b""))
            .done
            .expect("done");
        assert_eq!(done.kind, TANDEM_OUTCOME_TERM);
        let bytes = reply_of(&rt, &done);
        let err = envelope::decode_error(&bytes).expect("an error envelope");
        assert_eq!(err.code, crate::code::PANIC);
        release(&rt, done.reply_slot);
        assert_eq!(assert_whole(&mut rt).panics, 1);
    }

    #[test]
    fn what_a_handler_emits_first_keeps_its_order_through_the_ring() {
        let mut rt = runtime();
        // Fork emits three events, then acks: its outcome must not overtake them.
        let ran = run(&rt, 1, &envelope("fork", b"f"));
        assert_eq!(ran.done, None, "the outcome overtook the emitted events");
        let kinds: Vec<_> = (0..4)
            .map(|_| {
                let d = next_completion(&rt);
                if d.reply_slot != TANDEM_NO_SLOT {
                    release(&rt, d.reply_slot);
                }
                d.kind
            })
            .collect();
        assert_eq!(
            kinds,
            [
                TANDEM_CQE_EMIT,
                TANDEM_CQE_EMIT,
                TANDEM_CQE_EMIT,
                TANDEM_OUTCOME_ACK
            ]
        );
        assert_eq!(assert_whole(&mut rt).runs, 1);
    }

    #[test]
    fn a_handler_that_waits_completes_through_the_ring() {
        let mut rt = runtime();
        let ran = run(&rt, 2, &envelope("nap.inline", b"later"));
        assert_eq!(ran.done, None);
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.slot, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, 2, &b"later"[..])
        );
        release(&rt, done.reply_slot);
        // A run that follows on the same thread keeps its own record: the first run's
        // record, published by its task, spoiled nothing here.
        let again = run(&rt, 2, &envelope("echo.inline", b"now"));
        let done = again.done.expect("done");
        release(&rt, done.reply_slot);
        assert_eq!(assert_whole(&mut rt).runs, 2);
    }

    /// A thread that ran a runtime's event stays inside it after the run, its tokio context
    /// and its log scope (`crate::entered`), so the next run enters nothing; it moves to
    /// another runtime when it runs that one's event, and lets go of the runtime when the
    /// runtime shuts down on it or when it exits. What it holds shows in the count of the
    /// runtime's log queue.
    #[test]
    fn a_callers_thread_stays_inside_the_runtime_it_ran_until_it_runs_another() {
        use crate::entered::inside;
        use std::sync::Arc;
        let ran = |rt: &Runtime, slot: u32, ty: &str| {
            let done = run(rt, slot, &envelope(ty, b"x")).done.expect("done");
            release(rt, done.reply_slot);
        };
        let mut a = runtime();
        let mut b = runtime();
        // The count of the runtime's log queue once its threads have started (each holds
        // one from its start hook, in its own time).
        let settled = |rt: &Runtime| {
            let count = || Arc::strong_count(&rt.log_queue);
            let mut last = count();
            loop {
                std::thread::sleep(std::time::Duration::from_millis(20));
                if count() == last {
                    return last;
                }
                last = count();
            }
        };
        let (logs_a, logs_b) = (settled(&a), settled(&b));
        ran(&a, 0, "echo.inline");
        assert!(inside(a.identity), "the thread left a after its run");
        assert!(tokio::runtime::Handle::try_current().is_ok());
        assert_eq!(Arc::strong_count(&a.log_queue), logs_a + 1);
        ran(&a, 1, "echo.inline");
        assert_eq!(
            Arc::strong_count(&a.log_queue),
            logs_a + 1,
            "entered a twice"
        );
        ran(&b, 0, "echo.inline");
        assert!(
            inside(b.identity) && !inside(a.identity),
            "b's run left the thread in a"
        );
        assert_eq!(Arc::strong_count(&a.log_queue), logs_a, "a still held");
        ran(&a, 2, "echo.inline");
        assert_eq!(Arc::strong_count(&b.log_queue), logs_b, "b still held");
        assert_whole(&mut a);
        assert!(
            !inside(a.identity),
            "a's shutdown on this thread left it inside a"
        );
        assert!(tokio::runtime::Handle::try_current().is_err());
        // Another thread runs b's event and exits inside b: its exit lets go of b.
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                ran(&b, 1, "echo.inline");
                inside(b.identity)
            });
            assert!(
                t.join().expect("the thread"),
                "the thread left b after its run"
            );
        });
        assert_eq!(
            Arc::strong_count(&b.log_queue),
            logs_b,
            "an exited thread holds b"
        );
        assert_whole(&mut b);
    }

    #[test]
    fn a_run_of_a_bad_slot_is_a_violation_and_a_stopped_runtime_takes_nothing() {
        let mut rt = runtime();
        let ran = rt.run(1, 999, 4, 0).expect("run");
        assert_eq!(ran.done, None);
        let token = write(&rt, 3, &envelope("echo.inline", b"x"));
        let too_long = rt.run(token, 3, u32::MAX, 0).expect("run");
        assert_eq!(too_long.done, None);
        assert_eq!(rt.stats().violations, 2);
        rt.shutdown(std::time::Duration::from_secs(1));
        assert!(matches!(
            rt.run(token, 3, 8, 0),
            Err(crate::config::Error::State(_))
        ));
        let st = rt.stats();
        assert_eq!(
            (st.received, st.runs, st.requests_held),
            (0, 0, 0),
            "a refused run took a slot"
        );
    }
}
