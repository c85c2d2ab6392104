//! The state a runtime's tasks share: the submission side, the completion side, the handlers,
//! the counters and the signals of shutdown.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::completion::Completions;
use crate::config::{Config, Error, RegionLayout};
use crate::handler::Registry;
use crate::ring::Ring;
use crate::shm::Region;
use crate::slots::{ReplySlots, RequestSlots};
use crate::stats::Counters;
use crate::wake::EventFd;

/// What the runtime's tasks share. One per runtime, behind an `Arc`; every field is safe to
/// use from any thread.
pub(crate) struct Shared {
    pub(crate) region: Arc<Region>,
    pub(crate) layout: RegionLayout,
    pub(crate) cfg: Config,
    pub(crate) sq: Ring,
    pub(crate) wake_rust: Arc<EventFd>,
    pub(crate) completions: Arc<Completions>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) registry: Registry,
    /// Fired when shutdown gives up on the handlers still running.
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) stopping: AtomicBool,
    /// Held by whoever consumes the submission ring: the poller, a kicker (crate::kick), or
    /// `stats` once stopped.
    pub(crate) consumer: Mutex<()>,
    /// `cfg.hands_over()`, decided once.
    pub(crate) hands_over: bool,
    /// The cancellation tokens of the running deliveries Go may cancel
    /// (`TANDEM_DELIVERY_CANCELLABLE`), by their ring token.
    pub(crate) cancellable: Mutex<HashMap<u64, CancellationToken>>,
}

impl Shared {
    /// Maps the shared region and lays out the rings and arenas in it.
    pub(crate) fn new(cfg: Config, registry: Registry) -> Result<Shared, Error> {
        let layout = cfg.region_layout();
        let region = Arc::new(Region::map(layout.size)?);
        let base = region.base();
        // SAFETY: the offsets come from `region_layout`, lie inside the fresh zeroed mapping and
        // are cache-line aligned; the rings are kept beside an `Arc` of the region (in `Shared`
        // and in `Completions`), so the mapping outlives them (the rings have no drop glue).
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
        let counters = Arc::new(Counters::default());
        let wake_rust = Arc::new(EventFd::new()?);
        // SAFETY: the completions keep an `Arc` of the region too (through their slots).
        let sq_view = unsafe { sq.alias() };
        let cancel = CancellationToken::new();
        let completions = Completions::new(
            cq,
            EventFd::new()?,
            (sq_view, wake_rust.clone()),
            cancel.clone(),
            RequestSlots::new(region.clone(), &layout, &cfg, counters.clone()),
            ReplySlots::new(region.clone(), &layout, &cfg, counters.clone()),
            counters.clone(),
        );
        Ok(Shared {
            region,
            layout,
            sq,
            wake_rust,
            completions: Arc::new(completions),
            counters,
            registry,
            cancel,
            tracker: TaskTracker::new(),
            stopping: AtomicBool::new(false),
            consumer: Mutex::new(()),
            hands_over: cfg.hands_over(),
            cancellable: Mutex::new(HashMap::new()),
            cfg,
        })
    }

    /// Registers a delivery Go may cancel, before it runs (a `TANDEM_SQE_CANCEL` that follows
    /// its event in the ring then always finds it), and returns its cancellation token, a
    /// child of the runtime's. [`Shared::forget_cancellable`] takes it off once it has run.
    pub(crate) fn cancellable(&self, token: u64) -> CancellationToken {
        let cancel = self.cancel.child_token();
        self.lock_cancellable().insert(token, cancel.clone());
        cancel
    }

    /// Takes a delivery that has run off the cancellable ones.
    pub(crate) fn forget_cancellable(&self, token: u64) {
        self.lock_cancellable().remove(&token);
    }

    /// Cancels the running delivery of `token` (a `TANDEM_SQE_CANCEL`); one not running any
    /// more is ignored.
    pub(crate) fn cancel_delivery(&self, token: u64) {
        if let Some(cancel) = self.lock_cancellable().get(&token) {
            cancel.cancel();
        }
    }

    fn lock_cancellable(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.cancellable.lock().unwrap_or_else(|p| p.into_inner())
    }
}
