//! How a runtime is sized ([`Config`]), why it fails ([`Error`]), and where the parts of the
//! shared region lie.

use std::io;
use std::time::Duration;

use crate::layout::{TANDEM_CACHE_LINE, tandem_delivery, tandem_desc, tandem_ring_header};
use crate::outcome::HandlerError;
use crate::shm::align_up;

/// How a runtime is sized. Capacities are powers of two; see [`Config::validate`].
#[derive(Debug, Clone)]
pub struct Config {
    /// tokio worker threads.
    pub workers: usize,
    /// Submission ring cells; at least `req_slots + rep_slots`, so a push never finds it full.
    pub sq_capacity: u32,
    /// Completion ring cells; at least `req_slots`, so a completion never finds it full.
    pub cq_capacity: u32,
    /// The largest envelope Go may submit, in bytes: 256 B..=64 MiB (default 64 KiB; Go's
    /// `Config.MaxEventSize`). Each request slot holds a `tandem_delivery` header and then up
    /// to this many bytes.
    pub req_slot_size: u32,
    /// Request slots: the most events in flight at once.
    pub req_slots: u32,
    /// Bytes per reply slot, the largest reply or error envelope: 256 B..=64 MiB (default
    /// 64 KiB; Go's `Config.MaxReplySize`).
    pub rep_slot_size: u32,
    /// Reply slots.
    pub rep_slots: u32,
    /// The longest the poller busy-polls an empty ring before it parks: it spins twice the
    /// gap it sees between arrivals, not at all when they are sparser than this, and, on a
    /// machine without cores to spare (`handover`), only while Go's completion poller is
    /// parked.
    pub spin: Duration,
    /// Whether submitters that cross (crate::kick) hand the ring back to the poller when
    /// they come closer together than `spin`, so that under load the poller spins and events
    /// go through the ring with no call. `None` decides by the machine: only with at least
    /// 4 cores, since on fewer a spinning poller takes a core from
    /// the handlers and the submitters, and crossing (one call per event, no thread) costs
    /// less.
    pub handover: Option<bool>,
}

/// The cores a machine needs before a poller may spin under load (see `Config::handover`):
/// one for the poller, the rest for Go and the handlers.
pub(crate) const SPARE_CORES_FOR_A_POLLER: usize = 4;

impl Config {
    /// Whether kicks hand the ring back to the poller under load (`handover`, or the
    /// machine's core count).
    pub(crate) fn hands_over(&self) -> bool {
        self.handover.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get()) >= SPARE_CORES_FOR_A_POLLER
        })
    }
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
            handover: None,
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
    /// A handler's init or warm-up failed (or panicked: code "panic"). The runtime is
    /// [`State::Failed`](crate::State::Failed): the handlers whose init had succeeded were
    /// closed, in reverse order, and tokio was stopped.
    Init {
        /// The handler's name.
        handler: String,
        /// Which hook failed.
        phase: Phase,
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
            // Go reads the handler and the phase back from this text (tandem_runtime_start).
            Error::Init {
                handler,
                phase,
                error,
            } => write!(f, "{phase} of Rust handler {handler:?} failed: {error}"),
            Error::State(m) => write!(f, "wrong state: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// The lifecycle hook of a handler that failed to start: [`Handler::init`] or
/// [`Handler::warm_up`](crate::Handler::warm_up).
///
/// [`Handler::init`]: crate::Handler::init
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `init`: wiring dependencies.
    Init,
    /// `warm_up`: priming caches and connections.
    WarmUp,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Init => "init",
            Phase::WarmUp => "warm-up",
        })
    }
}

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
        // A request slot is its delivery header, then an envelope of up to req_slot_size.
        let req_slot = align_up(
            std::mem::size_of::<tandem_delivery>() + self.req_slot_size as usize,
            line,
        );
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

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

/// Where the parts of a runtime's shared region are: what the C layout reports.
#[cfg_attr(not(feature = "exports"), allow(dead_code))]
pub(crate) struct RegionInfo<'a> {
    pub(crate) base: *mut u8,
    pub(crate) size: usize,
    pub(crate) layout: RegionLayout,
    pub(crate) cfg: &'a Config,
    pub(crate) wake_rust_fd: i32,
    pub(crate) wake_go_fd: i32,
}
