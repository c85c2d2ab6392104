//! The Rust runtime: the shared region, the submission poller and one tokio task per event.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64 as StdAtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::envelope::{self, ErrorEnvelope};
use crate::handler::{Context, Event, HandlerError, Outcome, Registry, Route};
use crate::layout::*;
use crate::ring::Ring;
use crate::shm::{Region, align_up};
use crate::sync::{AtomicU32, Ordering};
use crate::wake::EventFd;

/// How a runtime is sized. Capacities are powers of two; see [`Config::validate`].
#[derive(Debug, Clone)]
pub struct Config {
    /// tokio worker threads.
    pub workers: usize,
    /// Submission ring cells; at least `req_slots + rep_slots`, so a push never finds it full.
    pub sq_capacity: u32,
    /// Completion ring cells; at least `req_slots`, so a completion never finds it full.
    pub cq_capacity: u32,
    /// Bytes per request slot: the largest envelope Go may submit.
    pub req_slot_size: u32,
    /// Request slots: the most events in flight at once.
    pub req_slots: u32,
    /// Bytes per reply slot: the largest reply or error envelope.
    pub rep_slot_size: u32,
    /// Reply slots.
    pub rep_slots: u32,
    /// How long the poller busy-polls an empty ring before it parks.
    pub spin: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            workers: 2,
            sq_capacity: 4096,
            cq_capacity: 2048,
            req_slot_size: 64 << 10,
            req_slots: 1024,
            rep_slot_size: 64 << 10,
            rep_slots: 1024,
            spin: Duration::from_micros(50),
        }
    }
}

/// Why a runtime could not be created, started or used.
#[derive(Debug)]
pub enum Error {
    /// A configuration value is out of range; the message says which.
    InvalidConfig(String),
    /// The operating system refused a resource (mapping, eventfd, threads).
    Io(io::Error),
    /// A handler's init or warm-up failed.
    Init {
        /// The handler's name.
        handler: String,
        /// Its error.
        error: HandlerError,
    },
    /// The call does not fit the runtime's state (e.g. start twice).
    State(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidConfig(m) => write!(f, "invalid config: {m}"),
            Error::Io(e) => write!(f, "os error: {e}"),
            Error::Init { handler, error } => {
                write!(f, "handler {handler} failed to start: {error}")
            }
            Error::State(m) => write!(f, "wrong state: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl Config {
    /// Checks the sizes and the ring invariants.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.workers == 0 || self.workers > 256 {
            return bad(format!("workers must be 1..=256, got {}", self.workers));
        }
        for (name, v) in [
            ("sq_capacity", self.sq_capacity),
            ("cq_capacity", self.cq_capacity),
        ] {
            if !v.is_power_of_two() || v > 1 << 24 {
                return bad(format!("{name} must be a power of two up to 2^24, got {v}"));
            }
        }
        for (name, v) in [("req_slots", self.req_slots), ("rep_slots", self.rep_slots)] {
            if v == 0 || v > 1 << 20 {
                return bad(format!("{name} must be 1..=2^20, got {v}"));
            }
        }
        for (name, v) in [
            ("req_slot_size", self.req_slot_size),
            ("rep_slot_size", self.rep_slot_size),
        ] {
            if !(256..=64 << 20).contains(&v) {
                return bad(format!("{name} must be 256 B..=64 MiB, got {v}"));
            }
        }
        if u64::from(self.sq_capacity) < u64::from(self.req_slots) + u64::from(self.rep_slots) {
            return bad(format!(
                "sq_capacity ({}) must be at least req_slots + rep_slots ({})",
                self.sq_capacity,
                u64::from(self.req_slots) + u64::from(self.rep_slots)
            ));
        }
        if self.cq_capacity < self.req_slots {
            return bad(format!(
                "cq_capacity ({}) must be at least req_slots ({})",
                self.cq_capacity, self.req_slots
            ));
        }
        let total = self.region_layout().size as u128;
        if total > 1 << 40 {
            return bad(format!("shared region of {total} bytes is too large"));
        }
        Ok(())
    }

    pub(crate) fn region_layout(&self) -> RegionLayout {
        let line = TANDEM_CACHE_LINE;
        let desc = std::mem::size_of::<tandem_desc>();
        let header = std::mem::size_of::<tandem_ring_header>();
        let mut off = 0usize;
        let mut take = |n: usize, align: usize| {
            off = align_up(off, align);
            let at = off;
            off += n;
            at
        };
        let sq_header = take(header, line);
        let sq_cells = take(desc * self.sq_capacity as usize, line);
        let cq_header = take(header, line);
        let cq_cells = take(desc * self.cq_capacity as usize, line);
        let req_slot = align_up(self.req_slot_size as usize, line);
        let rep_slot = align_up(self.rep_slot_size as usize, line);
        let req_arena = take(req_slot * self.req_slots as usize, 4096);
        let rep_arena = take(rep_slot * self.rep_slots as usize, 4096);
        RegionLayout {
            sq_header,
            sq_cells,
            cq_header,
            cq_cells,
            req_arena,
            req_stride: req_slot,
            rep_arena,
            rep_stride: rep_slot,
            size: align_up(off, 4096),
        }
    }
}

/// Byte offsets of the parts of the shared region.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RegionLayout {
    pub(crate) sq_header: usize,
    pub(crate) sq_cells: usize,
    pub(crate) cq_header: usize,
    pub(crate) cq_cells: usize,
    pub(crate) req_arena: usize,
    pub(crate) req_stride: usize,
    pub(crate) rep_arena: usize,
    pub(crate) rep_stride: usize,
    pub(crate) size: usize,
}

/// How long shutdown waits for cancelled handlers to stop before it stops without them.
const ABANDON_AFTER: Duration = Duration::from_secs(5);

/// Who owns a slot right now; checked at every hand-over so a double release is counted.
const OWNER_GO: u32 = 0;
const OWNER_RUST: u32 = 1;

/// Counters read by `stats`; relaxed, since they are reports, not synchronisation.
#[derive(Default)]
struct Counters {
    received: StdAtomicU64,
    completed: StdAtomicU64,
    requests_held: StdAtomicU64,
    replies_lent: StdAtomicU64,
    releases: StdAtomicU64,
    violations: StdAtomicU64,
    parks: StdAtomicU64,
    go_wakeups: StdAtomicU64,
    panics: StdAtomicU64,
    emitted: StdAtomicU64,
    local_dispatched: StdAtomicU64,
    local_acked: StdAtomicU64,
    local_forwarded: StdAtomicU64,
    local_held: StdAtomicU64,
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

/// What the runtime's tasks share: the region, the rings, the registry and the counters.
pub(crate) struct Shared {
    region: Region,
    layout: RegionLayout,
    cfg: Config,
    sq: Ring,
    cq: Ring,
    wake_rust: EventFd,
    wake_go: EventFd,
    req_owner: Box<[AtomicU32]>,
    rep_owner: Box<[AtomicU32]>,
    rep_free: Mutex<Vec<u32>>,
    rep_permits: Semaphore,
    counters: Counters,
    registry: Registry,
    cancel: CancellationToken,
    tracker: TaskTracker,
    stopping: AtomicBool,
    /// Held by whoever consumes the submission ring: the poller, or `stats` once stopped.
    consumer: Mutex<()>,
    /// Event types whose emitted events stay in Rust (set by Go before start): type -> 1 +
    /// handler index.
    local: std::sync::OnceLock<std::collections::HashMap<String, u32>>,
    /// Stops this runtime's log forwarder.
    log_stop: tokio::sync::Notify,
}

/// A Rust runtime: the shared region and, once started, tokio and the poller.
///
/// Created and driven by one thread at a time (the C exports serialise calls); the shared
/// region is then used concurrently by Go and by the tokio workers.
pub struct Runtime {
    shared: Arc<Shared>,
    tokio: Option<tokio::runtime::Runtime>,
    poller: Option<tokio::task::JoinHandle<()>>,
    logs: Option<tokio::task::JoinHandle<()>>,
    state: RunState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Created,
    Running,
    Stopped,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Runtime {
    /// Maps the shared region and sets up the rings; no thread is started yet.
    pub fn new(cfg: Config, mut registry: Registry) -> Result<Runtime, Error> {
        cfg.validate()?;
        registry.seal();
        let layout = cfg.region_layout();
        let region = Region::map(layout.size)?;
        let base = region.base();
        // SAFETY: the offsets come from `region_layout`, lie inside the fresh zeroed mapping and
        // are cache-line aligned; the rings live in the same `Shared` as the region, and nothing
        // uses them after it is dropped (the rings have no drop glue).
        let (sq, cq) = unsafe {
            (
                Ring::init(
                    base.add(layout.sq_header).cast(),
                    base.add(layout.sq_cells).cast(),
                    cfg.sq_capacity,
                ),
                Ring::init(
                    base.add(layout.cq_header).cast(),
                    base.add(layout.cq_cells).cast(),
                    cfg.cq_capacity,
                ),
            )
        };
        let owners = |n: u32, who: u32| (0..n).map(|_| AtomicU32::new(who)).collect::<Vec<_>>();
        let shared = Shared {
            layout,
            sq,
            cq,
            wake_rust: EventFd::new()?,
            wake_go: EventFd::new()?,
            req_owner: owners(cfg.req_slots, OWNER_GO).into_boxed_slice(),
            rep_owner: owners(cfg.rep_slots, OWNER_RUST).into_boxed_slice(),
            rep_free: Mutex::new((0..cfg.rep_slots).rev().collect()),
            rep_permits: Semaphore::new(cfg.rep_slots as usize),
            counters: Counters::default(),
            registry,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            stopping: AtomicBool::new(false),
            consumer: Mutex::new(()),
            local: std::sync::OnceLock::new(),
            log_stop: tokio::sync::Notify::new(),
            cfg,
            region,
        };
        crate::logs::install();
        Ok(Runtime {
            shared: Arc::new(shared),
            tokio: None,
            poller: None,
            logs: None,
            state: RunState::Created,
        })
    }

    /// The region's layout as the C ABI describes it.
    #[cfg(feature = "exports")]
    pub(crate) fn c_layout(&self) -> crate::ffi::tandem_layout {
        let s = &self.shared;
        let l = s.layout;
        crate::ffi::tandem_layout {
            base: s.region.base(),
            size: s.region.len() as u64,
            sq_header: l.sq_header as u64,
            sq_cells: l.sq_cells as u64,
            cq_header: l.cq_header as u64,
            cq_cells: l.cq_cells as u64,
            req_arena: l.req_arena as u64,
            rep_arena: l.rep_arena as u64,
            req_stride: l.req_stride as u64,
            rep_stride: l.rep_stride as u64,
            sq_capacity: s.cfg.sq_capacity,
            cq_capacity: s.cfg.cq_capacity,
            req_slot_size: s.cfg.req_slot_size,
            req_slots: s.cfg.req_slots,
            rep_slot_size: s.cfg.rep_slot_size,
            rep_slots: s.cfg.rep_slots,
            wake_rust_fd: s.wake_rust.raw(),
            wake_go_fd: s.wake_go.raw(),
        }
    }

    /// Names the event types whose emitted events are routed inside Rust, to the handler
    /// registered under the same type. Go sets it once, before start, from its routing table:
    /// exact routes to Rust handlers with no policy of Go's own.
    pub fn set_local_routes<'a>(
        &self,
        types: impl IntoIterator<Item = &'a str>,
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
        for t in types {
            let Some(&i) = index.get(t) else {
                return Err(Error::InvalidConfig(format!(
                    "local route {t:?}: no Rust handler"
                )));
            };
            local.insert(t.to_owned(), i);
        }
        self.shared
            .local
            .set(local)
            .map_err(|_| Error::State("local routes are set once"))
    }

    /// The event types this runtime has handlers for.
    pub fn event_types(&self) -> Vec<&str> {
        self.shared.registry.event_types()
    }

    /// Starts tokio, runs every handler's init and warm-up, then starts the poller.
    pub fn start(&mut self) -> Result<(), Error> {
        if self.state != RunState::Created {
            return Err(Error::State("start called twice"));
        }
        // No signal handlers: tokio installs them only for tokio::signal, which tandem never
        // uses, because Go owns the process's signals.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.shared.cfg.workers)
            .thread_name("tandem-worker")
            .enable_io()
            .enable_time()
            .build()?;
        for (_, route) in self.shared.registry.routes() {
            route.handler.init().map_err(|error| Error::Init {
                handler: route.name.to_string(),
                error,
            })?;
        }
        let shared = self.shared.clone();
        rt.block_on(async move {
            for (_, route) in shared.registry.routes() {
                route.handler.warm_up().await.map_err(|error| Error::Init {
                    handler: route.name.to_string(),
                    error,
                })?;
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
        self.logs = Some(rt.spawn(forward_logs(self.shared.clone())));
        self.tokio = Some(rt);
        self.state = RunState::Running;
        Ok(())
    }

    /// Lets in-flight handlers run for up to `grace`, cancels the rest (each completes as a
    /// retryable "cancelled" error, never lost), waits for every completion to be published,
    /// then stops the poller and tokio. Release records Go sends afterwards stay in the ring
    /// until [`Runtime::stats`] consumes them. Idempotent.
    pub fn shutdown(&mut self, grace: Duration) {
        if self.state != RunState::Running {
            self.state = RunState::Stopped;
            return;
        }
        let Some(rt) = self.tokio.take() else { return };
        let shared = self.shared.clone();
        let poller = self.poller.take();
        let log_task = self.logs.take();
        rt.block_on(async move {
            // Count events, not tasks: an event is held from the moment the poller takes it
            // until its completion is published, even while it is being handed to a task. The
            // poller keeps running meanwhile, so reply slots Go releases come back and no
            // completion waits for one in vain.
            let held = || {
                shared.counters.requests_held.load(Relaxed)
                    + shared.counters.local_held.load(Relaxed)
            };
            let deadline = Instant::now() + grace;
            while held() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            if held() > 0 {
                // Cancelled handlers stop at their next await. One stuck in synchronous code
                // never does; after a bound the runtime stops without it, and Go settles its
                // event as retryable ("abandoned").
                shared.cancel.cancel();
                let bound = Instant::now() + ABANDON_AFTER;
                while held() > 0 && Instant::now() < bound {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            shared.stopping.store(true, Ordering::SeqCst);
            shared.wake_rust.signal();
            if let Some(p) = poller {
                let _ = p.await;
            }
            // A last batch of log records, then the forwarder stops.
            shared.log_stop.notify_one();
            if let Some(l) = log_task {
                let _ = l.await;
            }
            shared.tracker.close();
            shared.tracker.wait().await;
        });
        for (_, route) in self.shared.registry.routes() {
            let h = route.handler.clone();
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| h.close()));
        }
        rt.shutdown_timeout(Duration::from_secs(1));
        self.state = RunState::Stopped;
    }

    /// A snapshot of the counters. Once the runtime is stopped it first consumes the release
    /// records Go left in the submission ring, so outstanding counts are final.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        if self.state == RunState::Stopped {
            if let Ok(_g) = s.consumer.try_lock() {
                drain_submissions(s, usize::MAX, None);
            }
        }
        let c = &s.counters;
        Stats {
            received: c.received.load(Relaxed),
            completed: c.completed.load(Relaxed),
            requests_held: c.requests_held.load(Relaxed),
            replies_lent: c.replies_lent.load(Relaxed),
            releases: c.releases.load(Relaxed),
            violations: c.violations.load(Relaxed),
            parks: c.parks.load(Relaxed),
            go_wakeups: c.go_wakeups.load(Relaxed),
            panics: c.panics.load(Relaxed),
            emitted: c.emitted.load(Relaxed),
            local_dispatched: c.local_dispatched.load(Relaxed),
            local_acked: c.local_acked.load(Relaxed),
            local_forwarded: c.local_forwarded.load(Relaxed),
            sq_depth: s.sq.len(),
            cq_depth: s.cq.len(),
        }
    }

    /// Runs the handler for one encoded envelope on this thread, blocking until it finishes:
    /// the direct-call path (one FFI call per event), kept for comparison and for tiny
    /// synchronous handlers. Returns the outcome code, and the reply or error envelope bytes.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    pub fn invoke(&self, envelope_bytes: &[u8]) -> Result<(u32, Vec<u8>), Error> {
        let Some(rt) = self.tokio.as_ref() else {
            return Err(Error::State("not running"));
        };
        let shared = self.shared.clone();
        // SAFETY: `envelope_bytes` outlives the job, which is consumed inside block_on.
        let bytes: &'static [u8] =
            unsafe { std::mem::transmute::<&[u8], &'static [u8]>(envelope_bytes) };
        let outcome = rt.block_on(async {
            let (outcome, handler, _, _) = run(&shared, prepare(&shared, bytes, 0), 0).await;
            (outcome, handler)
        });
        let (outcome, handler) = outcome;
        Ok(match outcome {
            Outcome::Ack => (TANDEM_OUTCOME_ACK, Vec::new()),
            Outcome::Reply(v) => (TANDEM_OUTCOME_ACK, v),
            Outcome::Retry { error, .. } => (TANDEM_OUTCOME_RETRY, error_bytes(&error, &handler)),
            Outcome::Term(error) => (TANDEM_OUTCOME_TERM, error_bytes(&error, &handler)),
        })
    }
}

impl Runtime {
    /// Starts the wake probe: a task that waits on eventfd `ping` through tokio's reactor and
    /// answers each wake by writing 1 to eventfd `pong`, until a value of at least
    /// `TANDEM_PROBE_STOP` arrives. It measures the bare cost of waking this runtime and being woken
    /// back, the floor under an idle round trip over the rings. The task owns both fds.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    pub fn start_wake_probe(&self, ping: OwnedFd, pong: OwnedFd) -> Result<(), Error> {
        let Some(rt) = self.tokio.as_ref() else {
            return Err(Error::State("not running"));
        };
        let _enter = rt.enter();
        // SAFETY: the AsyncFd owns `ping` for its whole life.
        let afd = unsafe { AsyncFd::register_with_interest(ping, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        rt.spawn(async move {
            use std::os::fd::AsRawFd;
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                let mut value: u64 = 0;
                // SAFETY: reads 8 bytes into a live local from the fd the AsyncFd owns.
                let n =
                    unsafe { libc::read(afd.get_ref().as_raw_fd(), (&raw mut value).cast(), 8) };
                if n != 8 {
                    guard.clear_ready();
                    continue;
                }
                if value >= TANDEM_PROBE_STOP {
                    return;
                }
                let one: u64 = 1;
                // SAFETY: writes 8 bytes from a live local to the fd this task owns.
                unsafe { libc::write(pong.as_raw_fd(), (&raw const one).cast(), 8) };
            }
        });
        Ok(())
    }
}

impl Runtime {
    /// Runs the handler for one encoded envelope as a tokio task and calls `done` with the
    /// outcome code and the reply or error envelope bytes, from a tokio worker: the
    /// spawn-and-callback way of calling async Rust, kept for comparison (bench/) and for
    /// embedders with their own transport (the sidecar). The rings do not use it.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    pub fn spawn_call(
        &self,
        envelope_bytes: Vec<u8>,
        done: impl FnOnce(u32, Vec<u8>) + Send + 'static,
    ) -> Result<(), Error> {
        let Some(rt) = self.tokio.as_ref() else {
            return Err(Error::State("not running"));
        };
        let shared = self.shared.clone();
        rt.spawn(async move {
            let bytes = envelope_bytes.into_boxed_slice();
            // SAFETY: the boxed bytes outlive the job, which `run` consumes before they drop.
            let view: &'static [u8] =
                unsafe { std::mem::transmute::<&[u8], &'static [u8]>(&bytes) };
            let (outcome, handler, _, _) = run(&shared, prepare(&shared, view, 0), 0).await;
            let (code, out) = match outcome {
                Outcome::Ack => (TANDEM_OUTCOME_ACK, Vec::new()),
                Outcome::Reply(v) => (TANDEM_OUTCOME_ACK, v),
                Outcome::Retry { error, .. } => {
                    (TANDEM_OUTCOME_RETRY, error_bytes(&error, &handler))
                }
                Outcome::Term(error) => (TANDEM_OUTCOME_TERM, error_bytes(&error, &handler)),
            };
            done(code, out);
        });
        Ok(())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

#[cfg(feature = "bench-internals")]
fn error_bytes(error: &HandlerError, handler: &str) -> Vec<u8> {
    let env = error_envelope(error, handler);
    let mut out = vec![0u8; envelope::error_encoded_len(&env)];
    let n = envelope::encode_error_into(&env, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

fn error_envelope<'a>(error: &'a HandlerError, handler: &'a str) -> ErrorEnvelope<'a> {
    ErrorEnvelope {
        code: &error.code,
        message: &error.message,
        retry: error.retry,
        runtime: "rust",
        handler,
    }
}

/// Wakes the log forwarder when records wait (set by the logging layer's first record after
/// a drain, and at shutdown).
pub(crate) static LOGS_WAITING: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Forwards Rust's log records to Go in batches, each in a reply slot on the completion ring.
/// It sleeps until records wait, then gathers for a millisecond so a burst travels together.
async fn forward_logs(shared: Arc<Shared>) {
    loop {
        let stopping = shared.stopping.load(Ordering::SeqCst);
        if !crate::logs::pending() {
            if stopping {
                return;
            }
            // Records of every runtime in the process share one queue and one signal; the stop
            // signal is this runtime's own.
            tokio::select! {
                _ = LOGS_WAITING.notified() => {}
                _ = shared.log_stop.notified() => {}
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (batch, dropped) = crate::logs::take(1024);
        if batch.is_empty() && dropped == 0 {
            continue;
        }
        let rs = shared.take_reply_slot().await;
        // SAFETY: `rs` came off the free list, so Rust owns it until published below.
        let buf = unsafe { shared.reply_buf(rs) };
        let (used, rest) = crate::logs::encode(batch, dropped, buf);
        crate::logs::put_back(rest);
        shared.rep_owner[rs as usize].store(OWNER_GO, Ordering::Release);
        shared.counters.replies_lent.fetch_add(1, Relaxed);
        shared
            .publish_completion(
                0,
                TANDEM_CQE_LOG,
                TANDEM_NO_SLOT,
                (rs, used as u32),
                0,
                0,
                0,
                (0, 0),
            )
            .await;
    }
}

/// The poller: drains the submission ring in batches, busy-polls an empty ring for
/// `cfg.spin`, then parks on the eventfd until Go wakes it.
async fn poll_submissions(shared: Arc<Shared>, afd: AsyncFd<OwnedFd>) {
    const BATCH: usize = 256;
    let mut idle_since: Option<Instant> = None;
    loop {
        let n = std::future::poll_fn(|cx| {
            let _g = shared.consumer.lock().unwrap_or_else(|p| p.into_inner());
            std::task::Poll::Ready(drain_submissions(&shared, BATCH, Some(cx)))
        })
        .await;
        if n > 0 {
            idle_since = None;
            // Let the tasks just spawned run on this worker before the next batch.
            tokio::task::yield_now().await;
            continue;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(*idle_since.get_or_insert(now)) < shared.cfg.spin {
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
        match afd.readable().await {
            Ok(mut guard) => {
                shared.wake_rust.drain();
                guard.clear_ready();
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
        shared.sq.unpark();
    }
}

/// Consumes up to `max` submissions. The poller passes its task context and events start;
/// without one (a stopped runtime) only release records are expected and processed.
fn drain_submissions(
    shared: &Arc<Shared>,
    max: usize,
    cx: Option<&mut std::task::Context<'_>>,
) -> usize {
    let mut cx = cx;
    let mut n = 0;
    while n < max {
        let Some((kind, token, slot, len, route)) = shared.sq.pop(|d| {
            (
                d.kind.load(Ordering::Relaxed),
                d.token.load(Ordering::Relaxed),
                d.slot.load(Ordering::Relaxed),
                d.len.load(Ordering::Relaxed),
                d.flags.load(Ordering::Relaxed),
            )
        }) else {
            break;
        };
        n += 1;
        match kind {
            TANDEM_SQE_EVENT if cx.is_some() => {
                if let Some(cx) = cx.as_deref_mut() {
                    start_event(shared, token, slot, len, route, cx)
                }
            }
            TANDEM_SQE_RELEASE => shared.release_reply(slot),
            _ => {
                shared.counters.violations.fetch_add(1, Relaxed);
            }
        }
    }
    n
}

fn start_event(
    shared: &Arc<Shared>,
    token: u64,
    slot: u32,
    len: u32,
    route: u32,
    cx: &mut std::task::Context<'_>,
) {
    if slot >= shared.cfg.req_slots || len > shared.cfg.req_slot_size {
        // Nothing valid to release; Go never sends this, so count it and drop the record.
        shared.counters.violations.fetch_add(1, Relaxed);
        return;
    }
    if shared.req_owner[slot as usize].swap(OWNER_RUST, Ordering::AcqRel) != OWNER_GO {
        shared.counters.violations.fetch_add(1, Relaxed);
    }
    shared.counters.received.fetch_add(1, Relaxed);
    shared.counters.requests_held.fetch_add(1, Relaxed);
    // SAFETY: Rust owns request slot `slot` from the swap above until `complete` hands it
    // back, after the job (and every borrow of these bytes) has finished.
    let bytes: &'static [u8] = unsafe { shared.request_bytes(slot, len) };
    let job = prepare(shared, bytes, route);
    let inline = job.inline();
    let sh = shared.clone();
    let task = async move {
        let (outcome, handler, started, finished) = run(&sh, job, token).await;
        sh.complete(token, slot, outcome, &handler, started, finished)
            .await;
    };
    if inline {
        // Run the handler on the poller until it first waits: a handler that finishes without
        // waiting costs no task. One that waits moves, boxed, into a task of its own, whose
        // first poll registers its own waker (the poller's may be woken once, spuriously).
        let mut task = Box::pin(task);
        if task.as_mut().poll(cx).is_pending() {
            shared.tracker.spawn(task);
        }
    } else {
        shared.tracker.spawn(task);
    }
}

/// One event, decoded and routed, or the reason it cannot run.
enum Job {
    Run(Route, Event),
    Refuse(HandlerError),
}

impl Job {
    /// Refusals complete at once; handlers registered inline run on the poller first.
    fn inline(&self) -> bool {
        match self {
            Job::Run(route, _) => route.inline,
            Job::Refuse(_) => true,
        }
    }
}

/// Decodes and routes one envelope: to handler `route - 1` (in event-type order) when Go
/// chose one, else by the envelope's type.
fn prepare(shared: &Shared, bytes: &'static [u8], route: u32) -> Job {
    let env = match envelope::decode(bytes) {
        Ok(env) => env,
        Err(e) => {
            return Job::Refuse(HandlerError::with_code(
                "decode",
                format!("malformed envelope: {e}"),
            ));
        }
    };
    let found = match route {
        0 => shared.registry.route(env.ty),
        n => shared.registry.route_at(n as usize - 1),
    };
    let Some(route) = found else {
        return Job::Refuse(HandlerError::with_code(
            "no_route",
            format!(
                "no Rust handler for event type {:?} (route {route})",
                env.ty
            ),
        ));
    };
    // SAFETY: the caller keeps `bytes` valid until the job is dropped; Event's accessors
    // borrow from &self, so the 'static never escapes.
    Job::Run(route.clone(), unsafe { Event::from_envelope(env) })
}

/// Runs a job's handler, containing panics and honouring cancellation.
async fn run(shared: &Arc<Shared>, job: Job, token: u64) -> (Outcome, Arc<str>, u64, u64) {
    let (route, ev) = match job {
        Job::Run(route, ev) => (route, ev),
        Job::Refuse(err) => return (Outcome::Term(err), Arc::from(""), 0, 0),
    };
    // The envelope's deadline (set by Go from the route's timeout or by the submitter) bounds
    // the whole delivery, waiting for a concurrency permit included.
    let timeout = || Outcome::Retry {
        after: Duration::ZERO,
        error: HandlerError::with_code("timeout", "the event's deadline passed"),
    };
    let deadline = ev.envelope().deadline;
    if deadline.is_some_and(|d| d <= now_ns() as i64) {
        return (timeout(), route.name, 0, 0);
    }
    // With a deadline the event gets a token of its own, fired at the deadline, and a deadline
    // the handler may push back (Context::in_progress).
    let deadline = deadline.map(|d| Arc::new(std::sync::atomic::AtomicI64::new(d)));
    let cancel = match deadline {
        Some(_) => shared.cancel.child_token(),
        None => shared.cancel.clone(),
    };
    let expired = async {
        let Some(deadline) = &deadline else {
            return std::future::pending().await;
        };
        loop {
            let left = deadline.load(Relaxed).saturating_sub(now_ns() as i64);
            if left <= 0 {
                return;
            }
            tokio::time::sleep(Duration::from_nanos(left as u64)).await;
        }
    };
    let cx = Context {
        handler: route.name.clone(),
        cancel: cancel.clone(),
        shared: shared.clone(),
        token,
        deadline: deadline.clone(),
    };
    let mut started = 0;
    let handler = async {
        let _permit = match &route.limit {
            Some(limit) => limit.acquire().await.ok(),
            None => None,
        };
        started = now_ns();
        let env = ev.envelope();
        let trace_id = env
            .traceparent
            .and_then(|tp| tp.get(3..35))
            .unwrap_or_default();
        let span = tracing::info_span!(
            "event",
            runtime = "rust",
            handler = &*route.name,
            event_id = env.id,
            event_type = env.ty,
            correlation_id = env.correlationid.unwrap_or(env.id),
            trace_id,
            attempt = env.attempt,
        );
        tracing::Instrument::instrument(
            AssertUnwindSafe(route.handler.call(&ev, &cx)).catch_unwind(),
            span,
        )
        .await
    };
    let outcome = tokio::select! {
        biased;
        r = handler => match r {
            Ok(o) => o,
            Err(panic) => {
                shared.counters.panics.fetch_add(1, Relaxed);
                let message = panic_message(&*panic);
                tracing::error!(handler = &*route.name, event_id = ev.id(), "{message}");
                Outcome::Term(HandlerError::with_code("panic", message))
            }
        },
        _ = shared.cancel.cancelled() => Outcome::Retry {
            after: Duration::ZERO,
            error: HandlerError::with_code("cancelled", "the runtime shut down before the handler finished"),
        },
        _ = expired => {
            cancel.cancel();
            timeout()
        }
    };
    drop(ev);
    (outcome, route.name, started, now_ns())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}

impl Shared {
    /// # Safety
    /// Rust must own request slot `slot` for as long as the returned slice is used.
    unsafe fn request_bytes<'a>(&self, slot: u32, len: u32) -> &'a [u8] {
        let off = self.layout.req_arena + slot as usize * self.layout.req_stride;
        // SAFETY: slot < req_slots and len <= req_slot_size were checked, so the range lies in
        // the region; Go wrote it before publishing the descriptor (release/acquire on seq) and
        // does not touch it until the completion hands it back.
        unsafe { std::slice::from_raw_parts(self.region.base().add(off), len as usize) }
    }

    /// # Safety
    /// Rust must own reply slot `slot` (taken from the free list, not yet published).
    #[allow(clippy::mut_from_ref)]
    unsafe fn reply_buf<'a>(&self, slot: u32) -> &'a mut [u8] {
        let off = self.layout.rep_arena + slot as usize * self.layout.rep_stride;
        // SAFETY: slot < rep_slots; the slot is exclusively ours until published.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.region.base().add(off),
                self.cfg.rep_slot_size as usize,
            )
        }
    }

    fn release_reply(&self, slot: u32) {
        if slot >= self.cfg.rep_slots
            || self.rep_owner[slot as usize].swap(OWNER_RUST, Ordering::AcqRel) != OWNER_GO
        {
            self.counters.violations.fetch_add(1, Relaxed);
            return;
        }
        self.rep_free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
        self.counters.replies_lent.fetch_sub(1, Relaxed);
        self.counters.releases.fetch_add(1, Relaxed);
        self.rep_permits.add_permits(1);
    }

    /// Takes a reply slot, waiting (without blocking a thread) while all are lent to Go.
    async fn take_reply_slot(&self) -> u32 {
        match self.rep_permits.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => unreachable!("the reply semaphore is never closed"),
        }
        self.rep_free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .expect("a permit guarantees a free reply slot")
    }

    /// Writes the outcome's reply or error envelope into a reply slot, hands the request slot
    /// back to Go and publishes the completion, waking Go if it is parked.
    async fn complete(
        &self,
        token: u64,
        slot: u32,
        outcome: Outcome,
        handler: &str,
        started: u64,
        finished: u64,
    ) {
        let (mut kind, aux) = match &outcome {
            Outcome::Ack | Outcome::Reply(_) => (TANDEM_OUTCOME_ACK, 0),
            Outcome::Retry { after, .. } => (
                TANDEM_OUTCOME_RETRY,
                after.as_nanos().min(u64::MAX as u128) as u64,
            ),
            Outcome::Term(_) => (TANDEM_OUTCOME_TERM, 0),
        };
        let mut reply = (TANDEM_NO_SLOT, 0u32);
        let payload_len = match &outcome {
            Outcome::Reply(v) if !v.is_empty() => Some(v.len()),
            Outcome::Retry { .. } | Outcome::Term(_) => Some(0),
            _ => None,
        };
        if payload_len.is_some() {
            let rs = self.take_reply_slot().await;
            // SAFETY: `rs` came off the free list, so Rust owns it until published below.
            let buf = unsafe { self.reply_buf(rs) };
            let written = match &outcome {
                Outcome::Reply(v) if v.len() <= buf.len() => {
                    buf[..v.len()].copy_from_slice(v);
                    v.len()
                }
                Outcome::Reply(v) => {
                    kind = TANDEM_OUTCOME_TERM;
                    let e = HandlerError::with_code(
                        "reply_too_large",
                        format!(
                            "reply of {} bytes exceeds the {}-byte reply slot",
                            v.len(),
                            buf.len()
                        ),
                    );
                    write_error(buf, &e, handler)
                }
                Outcome::Retry { error, .. } | Outcome::Term(error) => {
                    write_error(buf, error, handler)
                }
                Outcome::Ack => 0,
            };
            self.rep_owner[rs as usize].store(OWNER_GO, Ordering::Release);
            self.counters.replies_lent.fetch_add(1, Relaxed);
            reply = (rs, written as u32);
        }
        if self.req_owner[slot as usize].swap(OWNER_GO, Ordering::AcqRel) != OWNER_RUST {
            self.counters.violations.fetch_add(1, Relaxed);
        }
        self.counters.requests_held.fetch_sub(1, Relaxed);
        self.publish_completion(token, kind, slot, reply, started, finished, aux, (0, 0))
            .await;
        self.counters.completed.fetch_add(1, Relaxed);
    }

    /// Publishes one completion record and wakes Go if its poller is parked.
    #[allow(clippy::too_many_arguments)]
    async fn publish_completion(
        &self,
        token: u64,
        kind: u32,
        slot: u32,
        reply: (u32, u32),
        started: u64,
        finished: u64,
        aux: u64,
        len_flags: (u32, u32),
    ) {
        loop {
            let pushed = self.cq.push(|d| {
                d.token.store(token, Ordering::Relaxed);
                d.kind.store(kind, Ordering::Relaxed);
                d.slot.store(slot, Ordering::Relaxed);
                d.len.store(len_flags.0, Ordering::Relaxed);
                d.flags.store(len_flags.1, Ordering::Relaxed);
                d.reply_slot.store(reply.0, Ordering::Relaxed);
                d.reply_len.store(reply.1, Ordering::Relaxed);
                d.started_ns.store(started, Ordering::Relaxed);
                d.finished_ns.store(finished, Ordering::Relaxed);
                d.aux.store(aux, Ordering::Relaxed);
            });
            if pushed {
                break;
            }
            // Completions alone never fill the ring (cq_capacity >= req_slots); emitted events
            // can, and then wait here for Go's poller, which never waits on Rust.
            tokio::task::yield_now().await;
        }
        if self.cq.take_wakeup() {
            self.counters.go_wakeups.fetch_add(1, Relaxed);
            self.wake_go.signal();
        }
    }
}

impl Context {
    /// Tells the runtime the handler is still working: pushes the event's deadline back to
    /// `extend` from now (never earlier than it was), and tells Go with a progress record.
    /// Without a deadline (no route timeout, none from the submitter) there is nothing to
    /// extend and only the record is sent.
    pub async fn in_progress(&self, extend: Duration) {
        if let Some(deadline) = &self.deadline {
            let until =
                (now_ns() as i64).saturating_add(extend.as_nanos().min(i64::MAX as u128) as i64);
            deadline.fetch_max(until, Relaxed);
        }
        if self.token != 0 {
            let aux = extend.as_nanos().min(u64::MAX as u128) as u64;
            self.shared
                .publish_completion(
                    self.token,
                    TANDEM_OUTCOME_IN_PROGRESS,
                    TANDEM_NO_SLOT,
                    (TANDEM_NO_SLOT, 0),
                    0,
                    0,
                    aux,
                    (0, 0),
                )
                .await;
        }
    }

    /// Emits a follow-up event (see [`Event::follow_up`]): it goes to Go in a reply slot on
    /// the completion ring, and Go routes it like a submitted one, to a handler in either
    /// runtime, with retries and dead letters. Waits (without blocking a thread) while every
    /// reply slot is lent to Go: emitters are throttled, never dropped. Returns once the event
    /// is published.
    pub async fn emit(&self, ev: &envelope::Envelope<'_>) -> Result<(), crate::handler::EmitError> {
        use crate::handler::EmitError;
        for (what, v) in [("an id", ev.id), ("a source", ev.source), ("a type", ev.ty)] {
            if v.is_empty() {
                return Err(EmitError::Invalid(what));
            }
        }
        let sh = &self.shared;
        let needed = envelope::encoded_len(ev);
        if needed > sh.cfg.rep_slot_size as usize {
            return Err(EmitError::TooLarge { needed });
        }
        if let Some(&index) = sh.local.get().and_then(|m| m.get(ev.ty)) {
            sh.dispatch_local(ev, index);
            return Ok(());
        }
        let rs = sh.take_reply_slot().await;
        // SAFETY: `rs` came off the free list, so Rust owns it until published below.
        let buf = unsafe { sh.reply_buf(rs) };
        let n = envelope::encode_into(ev, buf).unwrap_or(0);
        sh.rep_owner[rs as usize].store(OWNER_GO, Ordering::Release);
        sh.counters.replies_lent.fetch_add(1, Relaxed);
        sh.counters.emitted.fetch_add(1, Relaxed);
        sh.publish_completion(
            0,
            TANDEM_CQE_EMIT,
            TANDEM_NO_SLOT,
            (rs, n as u32),
            0,
            0,
            0,
            (0, 0),
        )
        .await;
        Ok(())
    }
}

impl Shared {
    /// Routes an emitted event to a Rust handler inside Rust: no trip through Go. It runs as a
    /// task of its own from an owned copy of its envelope. An ack ends it here; a failure goes
    /// to Go (a `TANDEM_CQE_EMIT` with the outcome in `flags`), where retries and dead letters
    /// live, so both runtimes recover the same way.
    fn dispatch_local(self: &Arc<Self>, ev: &envelope::Envelope<'_>, index: u32) {
        let mut first = *ev;
        first.attempt = first.attempt.max(1); // attempt counts deliveries, from 1
        let bytes: Box<[u8]> = envelope::encode_to_vec(&first).into_boxed_slice();
        self.counters.local_dispatched.fetch_add(1, Relaxed);
        self.counters.local_held.fetch_add(1, Relaxed);
        let sh = self.clone();
        self.tracker.spawn(async move {
            // SAFETY: the boxed bytes live in this task until after the job that borrows them
            // has finished (the job is consumed by `run` below); a Box's contents never move.
            let view: &'static [u8] =
                unsafe { std::mem::transmute::<&[u8], &'static [u8]>(&bytes) };
            let (outcome, handler, started, finished) =
                run(&sh, prepare(&sh, view, index), 0).await;
            match outcome {
                Outcome::Ack | Outcome::Reply(_) => {
                    sh.counters.local_acked.fetch_add(1, Relaxed);
                }
                Outcome::Retry { after, error } => {
                    let aux = after.as_nanos().min(u64::MAX as u128) as u64;
                    sh.forward_failure(
                        &bytes,
                        TANDEM_OUTCOME_RETRY,
                        &error,
                        &handler,
                        started,
                        finished,
                        aux,
                    )
                    .await;
                }
                Outcome::Term(error) => {
                    sh.forward_failure(
                        &bytes,
                        TANDEM_OUTCOME_TERM,
                        &error,
                        &handler,
                        started,
                        finished,
                        0,
                    )
                    .await;
                }
            }
            sh.counters.local_held.fetch_sub(1, Relaxed);
        });
    }

    /// Hands a failed local event to Go: the event envelope (`len` bytes) followed by its
    /// error envelope, in one reply slot; `flags` holds the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn forward_failure(
        &self,
        event: &[u8],
        outcome: u32,
        error: &HandlerError,
        handler: &str,
        started: u64,
        finished: u64,
        aux: u64,
    ) {
        let rs = self.take_reply_slot().await;
        // SAFETY: `rs` came off the free list, so Rust owns it until published below.
        let buf = unsafe { self.reply_buf(rs) };
        let n = event.len().min(buf.len());
        buf[..n].copy_from_slice(&event[..n]);
        let m = write_error(&mut buf[n..], error, handler);
        self.rep_owner[rs as usize].store(OWNER_GO, Ordering::Release);
        self.counters.replies_lent.fetch_add(1, Relaxed);
        self.counters.local_forwarded.fetch_add(1, Relaxed);
        self.publish_completion(
            0,
            TANDEM_CQE_EMIT,
            TANDEM_NO_SLOT,
            (rs, (n + m) as u32),
            started,
            finished,
            aux,
            (n as u32, outcome),
        )
        .await;
    }
}

/// Encodes an error envelope into a reply slot, shortening the message if it does not fit.
fn write_error(buf: &mut [u8], error: &HandlerError, handler: &str) -> usize {
    let mut env = error_envelope(error, handler);
    loop {
        if let Ok(n) = envelope::encode_error_into(&env, buf) {
            return n;
        }
        if env.message.is_empty() {
            env.handler = "";
            return envelope::encode_error_into(&env, buf).unwrap_or(0);
        }
        let mut cut = env.message.len() / 2;
        while !env.message.is_char_boundary(cut) {
            cut -= 1;
        }
        env.message = &env.message[..cut];
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! The runtime driven from Rust the way Go drives it: envelopes written into request
    //! slots, descriptors pushed on the submission ring, completions popped from the other.

    use super::*;
    use crate::envelope::Envelope;
    use crate::handler::Handler;

    struct Echo;
    impl Handler for Echo {
        async fn handle(&self, ev: &Event, _cx: &Context) -> Outcome {
            Outcome::Reply(ev.data().to_vec())
        }
    }
    struct Boom;
    impl Handler for Boom {
        async fn handle(&self, _ev: &Event, _cx: &Context) -> Outcome {
            panic!("boom")
        }
    }
    struct Forever;
    impl Handler for Forever {
        async fn handle(&self, _ev: &Event, _cx: &Context) -> Outcome {
            std::future::pending::<()>().await;
            Outcome::Ack
        }
    }
    struct ColdStart;
    impl Handler for ColdStart {
        async fn handle(&self, _ev: &Event, _cx: &Context) -> Outcome {
            Outcome::Ack
        }
        async fn warm_up(&self) -> Result<(), HandlerError> {
            Err(HandlerError::with_code("unavailable", "cache unreachable"))
        }
    }

    struct Nap;
    impl Handler for Nap {
        async fn handle(&self, ev: &Event, _cx: &Context) -> Outcome {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Outcome::Reply(ev.data().to_vec())
        }
    }

    struct Fork;
    impl Handler for Fork {
        async fn handle(&self, ev: &Event, cx: &Context) -> Outcome {
            for i in 0..3 {
                let id = format!("{}/{i}", ev.id());
                if let Err(e) = cx.emit(&ev.follow_up("child", &id, ev.data())).await {
                    return Outcome::Term(HandlerError::new(e.to_string()));
                }
            }
            Outcome::Ack
        }
    }

    struct Patient;
    impl Handler for Patient {
        async fn handle(&self, _ev: &Event, cx: &Context) -> Outcome {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                cx.in_progress(Duration::from_millis(60)).await;
            }
            Outcome::Ack
        }
    }
    struct Watcher(Arc<std::sync::atomic::AtomicBool>);
    impl Handler for Watcher {
        async fn handle(&self, _ev: &Event, cx: &Context) -> Outcome {
            let (token, fired) = (cx.cancellation().clone(), self.0.clone());
            tokio::spawn(async move {
                token.cancelled().await;
                fired.store(true, Relaxed);
            });
            std::future::pending::<()>().await;
            Outcome::Ack
        }
    }

    struct Spray;
    impl Handler for Spray {
        async fn handle(&self, ev: &Event, cx: &Context) -> Outcome {
            for ty in ["echo", "boom"] {
                let id = format!("{}/{ty}", ev.id());
                if let Err(e) = cx.emit(&ev.follow_up(ty, &id, b"local")).await {
                    return Outcome::Term(HandlerError::new(e.to_string()));
                }
            }
            Outcome::Ack
        }
    }

    /// A runtime sized for tests: 4 slots each way, 1 KiB each.
    fn small() -> Config {
        Config {
            workers: 2,
            sq_capacity: 16,
            cq_capacity: 8,
            req_slots: 4,
            rep_slots: 4,
            req_slot_size: 1024,
            rep_slot_size: 1024,
            ..Config::default()
        }
    }

    fn runtime() -> Runtime {
        let mut reg = Registry::new();
        reg.register("fork", "fork", Fork)
            .register("patient", "patient", Patient)
            .register("spray", "spray", Spray);
        reg.register("echo", "echo", Echo)
            .register("boom", "boom", Boom)
            .register("forever", "forever", Forever)
            .register_inline("echo.inline", "echo-inline", Echo)
            .register_inline("boom.inline", "boom-inline", Boom)
            .register_inline("nap.inline", "nap-inline", Nap)
            .register_inline("forever.inline", "forever-inline", Forever);
        let cfg = Config {
            spin: Duration::from_micros(20),
            ..small()
        };
        let mut rt = Runtime::new(cfg, reg).expect("runtime");
        rt.start().expect("start");
        rt
    }

    fn envelope(ty: &str, data: &[u8]) -> Vec<u8> {
        envelope::encode_to_vec(&Envelope {
            id: "1",
            source: "/test",
            ty,
            specversion: "1.0",
            data,
            ..Envelope::default()
        })
    }

    /// Plays Go's part: writes `bytes` into request slot `slot` and publishes it.
    fn submit(rt: &Runtime, slot: u32, bytes: &[u8]) {
        submit_to(rt, slot, bytes, 0)
    }

    /// As `submit`, naming the handler (1 + its index in event-type order; 0: by type).
    fn submit_to(rt: &Runtime, slot: u32, bytes: &[u8], route: u32) {
        let s = &rt.shared;
        let off = s.layout.req_arena + slot as usize * s.layout.req_stride;
        // SAFETY: Go (this test) owns the slot until it publishes it below.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), s.region.base().add(off), bytes.len())
        };
        assert!(s.sq.push(|d| {
            d.kind.store(TANDEM_SQE_EVENT, Ordering::Relaxed);
            d.slot.store(slot, Ordering::Relaxed);
            d.len.store(bytes.len() as u32, Ordering::Relaxed);
            d.token.store(u64::from(slot) | 7 << 32, Ordering::Relaxed);
            d.flags.store(route, Ordering::Relaxed);
        }));
        if s.sq.take_wakeup() {
            s.wake_rust.signal();
        }
    }

    fn release(rt: &Runtime, reply_slot: u32) {
        let s = &rt.shared;
        assert!(s.sq.push(|d| {
            d.kind.store(TANDEM_SQE_RELEASE, Ordering::Relaxed);
            d.slot.store(reply_slot, Ordering::Relaxed);
        }));
        if s.sq.take_wakeup() {
            s.wake_rust.signal();
        }
    }

    struct Done {
        kind: u32,
        slot: u32,
        token: u64,
        reply_slot: u32,
        reply: Vec<u8>,
        len: u32,
        flags: u32,
    }

    fn next_completion(rt: &Runtime) -> Done {
        let s = &rt.shared;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = s.cq.pop(|d| {
                (
                    d.kind.load(Ordering::Relaxed),
                    d.slot.load(Ordering::Relaxed),
                    d.token.load(Ordering::Relaxed),
                    d.reply_slot.load(Ordering::Relaxed),
                    d.reply_len.load(Ordering::Relaxed),
                    d.len.load(Ordering::Relaxed),
                    d.flags.load(Ordering::Relaxed),
                )
            });
            if let Some((kind, slot, token, reply_slot, len, elen, flags)) = got {
                let reply = if reply_slot == TANDEM_NO_SLOT {
                    Vec::new()
                } else {
                    // SAFETY: the completion lent this reply slot to us (Go's role).
                    unsafe { s.reply_buf(reply_slot)[..len as usize].to_vec() }
                };
                return Done {
                    kind,
                    slot,
                    token,
                    reply_slot,
                    reply,
                    len: elen,
                    flags,
                };
            }
            assert!(Instant::now() < deadline, "no completion within 10 s");
            std::thread::yield_now();
        }
    }

    /// Asserts every slot came back to its owner, with no protocol violation.
    fn assert_no_buffer_held(rt: &Runtime) -> Stats {
        let st = rt.stats();
        assert_eq!(
            (st.requests_held, st.replies_lent, st.violations),
            (0, 0, 0),
            "{st:?}"
        );
        st
    }

    fn assert_whole(rt: &mut Runtime) -> Stats {
        rt.shutdown(Duration::from_secs(1));
        assert_no_buffer_held(rt)
    }

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
    fn inline_handlers_complete_on_the_poller_or_move_to_a_task() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("echo.inline", b"quick"));
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"quick"[..])
        );
        release(&rt, done.reply_slot);
        // Waits on a timer: moves into a task at its first await and still completes.
        submit(&rt, 1, &envelope("nap.inline", b"slow"));
        submit(&rt, 2, &envelope("echo.inline", b"fast"));
        let first = next_completion(&rt);
        let second = next_completion(&rt);
        assert_eq!(
            first.reply, b"fast",
            "a waiting inline handler must not hold up the next"
        );
        assert_eq!(second.reply, b"slow");
        release(&rt, first.reply_slot);
        release(&rt, second.reply_slot);
        // A panic inline is contained like one in a task.
        submit(&rt, 3, &envelope("boom.inline", b""));
        let done = next_completion(&rt);
        assert_eq!(envelope::decode_error(&done.reply).unwrap().code, "panic");
        release(&rt, done.reply_slot);
        // An inline handler that never finishes is cancelled at shutdown, never lost.
        submit(&rt, 0, &envelope("forever.inline", b""));
        while rt.stats().received < 5 {
            std::thread::yield_now();
        }
        rt.shutdown(Duration::from_millis(20));
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_RETRY);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            "cancelled"
        );
        release(&rt, done.reply_slot);
        assert_no_buffer_held(&rt);
    }

    #[test]
    fn go_may_name_the_handler_whatever_the_event_type() {
        let mut rt = runtime();
        let types = rt
            .event_types()
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>();
        let echo = types.iter().position(|t| t == "echo").unwrap() as u32 + 1;
        // A wildcard route in Go ("order.*" -> echo) sends types Rust has no handler for.
        submit_to(&rt, 0, &envelope("order.created", b"routed"), echo);
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"routed"[..])
        );
        release(&rt, done.reply_slot);
        // An index past the handlers is refused, not guessed.
        submit_to(&rt, 1, &envelope("echo", b"x"), 999);
        let done = next_completion(&rt);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            "no_route"
        );
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn the_envelope_deadline_cancels_the_handler_as_a_timeout() {
        let mut rt = runtime();
        let deadline = now_ns() as i64 + 20_000_000;
        let bytes = envelope::encode_to_vec(&Envelope {
            id: "1",
            source: "/test",
            ty: "forever",
            specversion: "1.0",
            deadline: Some(deadline),
            ..Envelope::default()
        });
        submit(&rt, 0, &bytes);
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_RETRY);
        assert_eq!(envelope::decode_error(&done.reply).unwrap().code, "timeout");
        release(&rt, done.reply_slot);
        // A deadline already past: refused at once, the handler never runs.
        let bytes = envelope::encode_to_vec(&Envelope {
            id: "2",
            source: "/test",
            ty: "echo",
            specversion: "1.0",
            deadline: Some(1),
            ..Envelope::default()
        });
        submit(&rt, 1, &bytes);
        let done = next_completion(&rt);
        assert_eq!(envelope::decode_error(&done.reply).unwrap().code, "timeout");
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    struct Gauge {
        active: Arc<std::sync::atomic::AtomicUsize>,
        peak: Arc<std::sync::atomic::AtomicUsize>,
    }
    impl Handler for Gauge {
        async fn handle(&self, _ev: &Event, _cx: &Context) -> Outcome {
            let now = self.active.fetch_add(1, Relaxed) + 1;
            self.peak.fetch_max(now, Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.active.fetch_sub(1, Relaxed);
            Outcome::Ack
        }
    }

    #[test]
    fn a_route_limit_bounds_its_concurrent_events() {
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut reg = Registry::new();
        reg.register(
            "gauge",
            "gauge",
            Gauge {
                active: Arc::default(),
                peak: peak.clone(),
            },
        )
        .limit("gauge", 1);
        let mut rt = Runtime::new(small(), reg).unwrap();
        rt.start().unwrap();
        for slot in 0..4 {
            submit(&rt, slot, &envelope("gauge", b""));
        }
        for _ in 0..4 {
            assert_eq!(next_completion(&rt).kind, TANDEM_OUTCOME_ACK);
        }
        assert_eq!(peak.load(Relaxed), 1, "the limit of 1 was exceeded");
        assert_whole(&mut rt);
    }

    #[test]
    fn emitted_events_reach_go_before_their_parents_completion() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("fork", b"payload"));
        let mut ids = Vec::new();
        for _ in 0..3 {
            let done = next_completion(&rt);
            assert_eq!(done.kind, TANDEM_CQE_EMIT);
            assert_eq!(
                done.slot, TANDEM_NO_SLOT,
                "an emit record releases no request slot"
            );
            let child = envelope::decode(&done.reply).expect("emitted envelope");
            assert_eq!((child.ty, child.data), ("child", &b"payload"[..]));
            assert_eq!(
                (child.causationid, child.correlationid),
                (Some("1"), Some("1"))
            );
            ids.push(child.id.to_owned());
            release(&rt, done.reply_slot);
        }
        assert_eq!(ids, ["1/0", "1/1", "1/2"]);
        let done = next_completion(&rt);
        assert_eq!((done.kind, done.slot), (TANDEM_OUTCOME_ACK, 0));
        let st = assert_whole(&mut rt);
        assert_eq!((st.emitted, st.releases), (3, 3));
    }

    fn with_deadline(ty: &str, in_ms: i64) -> Vec<u8> {
        envelope::encode_to_vec(&Envelope {
            id: "1",
            source: "/test",
            ty,
            specversion: "1.0",
            deadline: Some(now_ns() as i64 + in_ms * 1_000_000),
            ..Envelope::default()
        })
    }

    #[test]
    fn in_progress_pushes_the_deadline_back_and_tells_go() {
        let mut rt = runtime();
        // 3 × 20 ms of work against a 30 ms deadline, extended by 60 ms after each step.
        submit(&rt, 0, &with_deadline("patient", 30));
        for _ in 0..3 {
            let done = next_completion(&rt);
            assert_eq!(done.kind, TANDEM_OUTCOME_IN_PROGRESS);
            assert_eq!(done.token, 7 << 32, "the progress record names the event");
        }
        assert_eq!(next_completion(&rt).kind, TANDEM_OUTCOME_ACK);
        assert_whole(&mut rt);
    }

    #[test]
    fn the_deadline_fires_the_events_cancellation_token() {
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut reg = Registry::new();
        reg.register("watch", "watch", Watcher(fired.clone()));
        let mut rt = Runtime::new(small(), reg).unwrap();
        rt.start().unwrap();
        submit(&rt, 0, &with_deadline("watch", 20));
        let done = next_completion(&rt);
        assert_eq!(envelope::decode_error(&done.reply).unwrap().code, "timeout");
        release(&rt, done.reply_slot);
        let until = Instant::now() + Duration::from_secs(10);
        while !fired.load(Relaxed) {
            assert!(Instant::now() < until, "the token never fired");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_whole(&mut rt);
    }

    #[test]
    fn local_routes_keep_emitted_events_in_rust_and_hand_failures_to_go() {
        let mut rt = runtime();
        rt.set_local_routes(["echo", "boom"]).unwrap();
        assert!(matches!(
            rt.set_local_routes(["echo"]),
            Err(Error::State(_))
        ));
        submit(&rt, 0, &envelope("spray", b""));
        let mut kinds = Vec::new();
        let mut forwarded = None;
        for _ in 0..2 {
            let done = next_completion(&rt);
            kinds.push(done.kind);
            if done.kind == TANDEM_CQE_EMIT {
                forwarded = Some(done);
            }
        }
        // The echo stayed in Rust (acked there); only the parent's ack and the failed boom
        // (a panic, terminal) reached Go.
        kinds.sort_unstable();
        assert_eq!(kinds, [TANDEM_OUTCOME_ACK, TANDEM_CQE_EMIT]);
        let done = forwarded.unwrap();
        let (event, error) = done.reply.split_at(done.len as usize);
        let ev = envelope::decode(event).expect("forwarded event");
        assert_eq!(
            (ev.ty, ev.id, ev.attempt, ev.causationid),
            ("boom", "1/boom", 1, Some("1"))
        );
        let err = envelope::decode_error(error).expect("forwarded error");
        assert_eq!((err.code, done.flags), ("panic", TANDEM_OUTCOME_TERM));
        release(&rt, done.reply_slot);
        let st = assert_whole(&mut rt);
        assert_eq!(
            (
                st.local_dispatched,
                st.local_acked,
                st.local_forwarded,
                st.emitted
            ),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn local_routes_name_registered_handlers() {
        let rt = runtime();
        assert!(matches!(
            rt.set_local_routes(["nope"]),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn panic_becomes_terminal_error_envelope() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("boom", b""));
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_TERM);
        let err = envelope::decode_error(&done.reply).expect("error envelope");
        assert_eq!(
            (err.code, err.runtime, err.handler),
            ("panic", "rust", "boom")
        );
        assert!(err.message.contains("boom"), "{}", err.message);
        release(&rt, done.reply_slot);
        // Still serving after the panic.
        submit(&rt, 1, &envelope("echo", b"alive"));
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"alive");
        release(&rt, done.reply_slot);
        assert_eq!(assert_whole(&mut rt).panics, 1);
    }

    #[test]
    fn malformed_and_unrouted_events_are_terminal() {
        let mut rt = runtime();
        submit(&rt, 0, &[0xa1, 0x00]);
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_TERM);
        assert_eq!(envelope::decode_error(&done.reply).unwrap().code, "decode");
        release(&rt, done.reply_slot);

        submit(&rt, 1, &envelope("nobody.home", b""));
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_TERM);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            "no_route"
        );
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn shutdown_cancels_running_handlers_as_retryable() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("forever", b""));
        submit(&rt, 1, &envelope("forever", b""));
        while rt.stats().received < 2 {
            std::thread::yield_now();
        }
        rt.shutdown(Duration::from_millis(20));
        for _ in 0..2 {
            let done = next_completion(&rt);
            assert_eq!(done.kind, TANDEM_OUTCOME_RETRY);
            assert_eq!(
                envelope::decode_error(&done.reply).unwrap().code,
                "cancelled"
            );
            release(&rt, done.reply_slot);
        }
        assert_no_buffer_held(&rt);
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

    #[test]
    fn failed_warm_up_names_the_handler() {
        let mut reg = Registry::new();
        reg.register("cold", "cold-start", ColdStart);
        let mut rt = Runtime::new(Config::default(), reg).expect("runtime");
        match rt.start() {
            Err(Error::Init { handler, error }) => {
                assert_eq!(handler, "cold-start");
                assert_eq!(error.code, "unavailable");
            }
            other => panic!("start = {other:?}"),
        }
    }

    #[test]
    fn config_rejects_rings_that_could_fill() {
        let cfg = Config {
            sq_capacity: 1024,
            req_slots: 1024,
            rep_slots: 1024,
            ..Config::default()
        };
        assert!(
            matches!(cfg.validate(), Err(Error::InvalidConfig(m)) if m.contains("sq_capacity"))
        );
        let cfg = Config {
            cq_capacity: 3,
            ..Config::default()
        };
        assert!(matches!(cfg.validate(), Err(Error::InvalidConfig(_))));
    }
}
