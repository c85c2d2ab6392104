//! The state a runtime's tasks share: the region, the rings, the registry and the counters.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, RegionLayout};
use crate::handler::Registry;
use crate::ring::Ring;
use crate::shm::Region;
use crate::stats::Counters;
use crate::sync::AtomicU32;
use crate::wake::EventFd;

/// Who owns a slot right now; checked at every hand-over so a double release is counted.
pub(crate) const OWNER_GO: u32 = 0;
pub(crate) const OWNER_RUST: u32 = 1;

/// What the runtime's tasks share: the region, the rings, the registry and the counters.
pub(crate) struct Shared {
    pub(crate) region: Region,
    pub(crate) layout: RegionLayout,
    pub(crate) cfg: Config,
    pub(crate) sq: Ring,
    pub(crate) cq: Ring,
    pub(crate) wake_rust: EventFd,
    pub(crate) wake_go: EventFd,
    pub(crate) req_owner: Box<[AtomicU32]>,
    pub(crate) rep_owner: Box<[AtomicU32]>,
    pub(crate) rep_free: Mutex<Vec<u32>>,
    pub(crate) rep_permits: Semaphore,
    pub(crate) counters: Counters,
    pub(crate) registry: Registry,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) stopping: AtomicBool,
    /// Held by whoever consumes the submission ring: the poller, or `stats` once stopped.
    pub(crate) consumer: Mutex<()>,
    /// Event types whose emitted events stay in Rust (set by Go before start): type -> 1 +
    /// handler index.
    pub(crate) local: std::sync::OnceLock<std::collections::HashMap<String, u32>>,
    /// Stops this runtime's log forwarder.
    pub(crate) log_stop: tokio::sync::Notify,
}

/// Unix time in nanoseconds, the unit of deadlines and of the completion's timestamps.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
