//! The C exports: the only way Go (or any C caller) drives a runtime. `ffi/tandem.h` is
//! generated from this file and `layout.rs` by cbindgen; `tests/header.rs` fails when they
//! disagree.
//!
//! Every export catches panics (a Rust panic never unwinds into Go) and returns a status code;
//! results travel through out-parameters. Calls on one runtime must not overlap, except
//! `tandem_runtime_stats`, `tandem_runtime_kick` and `tandem_runtime_run`, which may run
//! from any thread while it runs.

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::config::{Config, Error};
use crate::handler::Registry;
use crate::layout::{
    TANDEM_ABI_VERSION, TANDEM_KICK_BATCH, TANDEM_KICK_FREQUENT, TANDEM_KICK_GO_WAKE_OWED,
    TANDEM_KICK_HELP, TANDEM_RUN_DONE, tandem_desc,
};
use crate::runtime::Runtime;

/// Status code returned by every fallible export.
pub type tandem_status = i32;

/// Success.
pub const TANDEM_OK: tandem_status = 0;
/// A pointer argument was null or a value out of range; `tandem_last_error` says which.
pub const TANDEM_ERR_INVALID_ARG: tandem_status = 1;
/// The caller was built against another ABI version: rebuild both sides together.
pub const TANDEM_ERR_ABI_MISMATCH: tandem_status = 2;
/// The call does not fit the runtime's state (start twice, not running).
pub const TANDEM_ERR_STATE: tandem_status = 3;
/// A Rust panic was caught at the boundary.
pub const TANDEM_ERR_PANIC: tandem_status = 4;
/// The operating system refused a resource (memory, eventfd, threads).
pub const TANDEM_ERR_IO: tandem_status = 5;
/// A handler's init or warm-up failed; `tandem_last_error` names it.
pub const TANDEM_ERR_INIT: tandem_status = 6;
/// An output buffer was too small; the needed size was written to the size out-parameter.
pub const TANDEM_ERR_TOO_SMALL: tandem_status = 7;

/// Sizes of a runtime, passed to `tandem_runtime_create`. Read during the call only; the
/// caller keeps ownership.
#[repr(C)]
pub struct tandem_config {
    /// Must equal `TANDEM_ABI_VERSION` of the library: the caller's build.
    pub abi_version: u32,
    /// tokio worker threads.
    pub workers: u32,
    /// Submission ring cells (power of two, >= req_slots + rep_slots).
    pub sq_capacity: u32,
    /// Completion ring cells (power of two, >= req_slots).
    pub cq_capacity: u32,
    /// Bytes of the largest envelope a request slot holds (its `tandem_delivery` header not
    /// counted).
    pub req_slot_size: u32,
    /// Request slots.
    pub req_slots: u32,
    /// Bytes per reply slot.
    pub rep_slot_size: u32,
    /// Reply slots.
    pub rep_slots: u32,
    /// Busy-poll window of the Rust poller before it parks, in nanoseconds.
    pub spin_ns: u64,
}

/// Where the shared region's parts are, filled by `tandem_runtime_create`.
///
/// `base` points into memory owned by the runtime: valid until `tandem_runtime_free`, never
/// freed by the caller. The offsets are from `base`. The eventfds are owned by the runtime too:
/// a caller that wants to keep one (e.g. for its own poller) must dup it.
#[repr(C)]
pub struct tandem_layout {
    /// Start of the shared region (owned by the runtime).
    pub base: *mut u8,
    /// Size of the region in bytes.
    pub size: u64,
    /// Offset of the submission ring's `tandem_ring_header`.
    pub sq_header: u64,
    /// Offset of the submission ring's first `tandem_desc`.
    pub sq_cells: u64,
    /// Offset of the completion ring's `tandem_ring_header`.
    pub cq_header: u64,
    /// Offset of the completion ring's first `tandem_desc`.
    pub cq_cells: u64,
    /// Offset of request slot 0; slot i is at `req_arena + i * req_stride`: its
    /// `tandem_delivery` header, then the envelope at `sizeof(tandem_delivery)`.
    pub req_arena: u64,
    /// Offset of reply slot 0; slot i is at `rep_arena + i * rep_stride`.
    pub rep_arena: u64,
    /// Distance between request slots (>= sizeof(tandem_delivery) + req_slot_size).
    pub req_stride: u64,
    /// Distance between reply slots (>= rep_slot_size).
    pub rep_stride: u64,
    /// Submission ring cells.
    pub sq_capacity: u32,
    /// Completion ring cells.
    pub cq_capacity: u32,
    /// Bytes of the largest envelope a request slot holds, after its header.
    pub req_slot_size: u32,
    /// Request slots.
    pub req_slots: u32,
    /// Usable bytes per reply slot.
    pub rep_slot_size: u32,
    /// Reply slots.
    pub rep_slots: u32,
    /// Eventfd the Rust poller parks on; Go writes 8 bytes (value 1) to wake it.
    pub wake_rust_fd: i32,
    /// Eventfd Go's completion poller parks on; Rust writes to it to wake Go.
    pub wake_go_fd: i32,
}

/// Counters of a runtime, filled by `tandem_runtime_stats`.
#[repr(C)]
pub struct tandem_stats {
    /// Events taken from the submission ring.
    pub received: u64,
    /// Events completed: request slots handed back to Go with their outcome.
    pub completed: u64,
    /// Request slots Rust holds now.
    pub requests_held: u64,
    /// Reply slots lent to Go now.
    pub replies_lent: u64,
    /// Reply slots Go has released back.
    pub releases: u64,
    /// Ownership protocol violations seen; 0 in a correct program.
    pub violations: u64,
    /// Times the Rust poller parked.
    pub parks: u64,
    /// Times Rust woke a parked Go poller.
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
    /// Kicks (`tandem_runtime_kick`) that woke the poller to take over the submission ring,
    /// because kicks came faster than its spin window or in a burst.
    pub handovers: u64,
    /// Tasks spawned on a submitter's thread during a kick: each wakes a tokio worker if
    /// none is awake.
    pub task_wakes: u64,
    /// Times the parked poller found an event after a while without a wake: a lost wake-up,
    /// or rarely a producer caught between its push and its wake.
    pub rescues: u64,
    /// Calls of Rust handlers (`Context::call`) that crossed to Go.
    pub calls: u64,
    /// Of those, the ones waiting for their outcome now.
    pub calls_pending: u64,
    /// Call replies Rust handlers hold now (reply slots back from Go, not yet freed).
    pub call_replies_held: u64,
    /// Events run on their submitter's thread by `tandem_runtime_run`, past the submission
    /// ring (counted in `received` too).
    pub runs: u64,
}

/// A runtime; opaque to C. Created by `tandem_runtime_create`, freed by `tandem_runtime_free`.
pub struct tandem_runtime {
    inner: Runtime,
}

impl tandem_runtime {
    /// The Rust runtime behind the handle, for Rust code linked into the same library (bench
    /// contenders, embedders' own exports).
    pub fn runtime(&self) -> &Runtime {
        &self.inner
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(msg: impl Into<String>) {
    let msg = msg.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
}

fn status_of(e: &Error) -> tandem_status {
    set_last_error(e.to_string());
    match e {
        Error::InvalidConfig(_) => TANDEM_ERR_INVALID_ARG,
        Error::Io(_) => TANDEM_ERR_IO,
        Error::Init { .. } => TANDEM_ERR_INIT,
        Error::State(_) => TANDEM_ERR_STATE,
    }
}

/// The runtime's shared region as the C ABI describes it.
fn c_layout(rt: &Runtime) -> tandem_layout {
    let r = rt.region_info();
    let l = r.layout;
    tandem_layout {
        base: r.base,
        size: r.size as u64,
        sq_header: l.sq_header as u64,
        sq_cells: l.sq_cells as u64,
        cq_header: l.cq_header as u64,
        cq_cells: l.cq_cells as u64,
        req_arena: l.req_arena as u64,
        rep_arena: l.rep_arena as u64,
        req_stride: l.req_stride as u64,
        rep_stride: l.rep_stride as u64,
        sq_capacity: r.cfg.sq_capacity,
        cq_capacity: r.cfg.cq_capacity,
        req_slot_size: r.cfg.req_slot_size,
        req_slots: r.cfg.req_slots,
        rep_slot_size: r.cfg.rep_slot_size,
        rep_slots: r.cfg.rep_slots,
        wake_rust_fd: r.wake_rust_fd,
        wake_go_fd: r.wake_go_fd,
    }
}

/// Runs `f`, turning a panic into `TANDEM_ERR_PANIC` with its message as the last error.
fn guard(f: impl FnOnce() -> tandem_status) -> tandem_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(s) => s,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            set_last_error(format!("panic in tandem: {msg}"));
            TANDEM_ERR_PANIC
        }
    }
}

/// [`guard`] for an export whose result is a non-negative value or, on failure, minus a
/// `TANDEM_ERR_*` status (the crossings: `tandem_runtime_kick`, `tandem_runtime_run`).
fn guard_value(f: impl FnOnce() -> Result<i64, tandem_status>) -> i64 {
    let value = std::cell::Cell::new(0i64);
    let st = guard(|| match f() {
        Ok(v) => {
            value.set(v);
            TANDEM_OK
        }
        Err(st) => st,
    });
    if st == TANDEM_OK {
        value.get()
    } else {
        -i64::from(st)
    }
}

/// `TANDEM_KICK_GO_WAKE_OWED` when `owed`, else 0.
fn owed_bit(owed: bool) -> i64 {
    if owed { TANDEM_KICK_GO_WAKE_OWED } else { 0 }
}

unsafe extern "Rust" {
    /// Supplied by the crate that builds the staticlib/cdylib, through
    /// `tandem::register_handlers!`.
    safe fn tandem_register_handlers(registry: &mut Registry);
}

/// The ABI version this library implements. Callers compare it with the version they were
/// built against before any other call.
#[unsafe(no_mangle)]
pub extern "C" fn tandem_abi_version() -> u32 {
    TANDEM_ABI_VERSION
}

/// Copies the calling thread's last error message (UTF-8, not NUL-terminated) into `buf`, up
/// to `cap` bytes, and returns its full length. `buf` stays owned by the caller.
///
/// # Safety
/// `buf` must be valid for `cap` bytes of writes, or null with `cap` 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_last_error(buf: *mut c_char, cap: usize) -> usize {
    LAST_ERROR.with(|e| {
        let e = e.borrow();
        let n = e.len().min(cap);
        if n > 0 && !buf.is_null() {
            // SAFETY: the caller guarantees `buf` holds `cap` >= n bytes.
            unsafe { std::ptr::copy_nonoverlapping(e.as_ptr(), buf.cast(), n) };
        }
        e.len()
    })
}

/// Creates a runtime: maps the shared region, registers the handlers, fills `*layout_out`.
/// Starts no thread. On success `*out` owns the runtime until `tandem_runtime_free`.
///
/// # Safety
/// `cfg` must point to a readable `tandem_config`; `out` and `layout_out` to writable memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_runtime_create(
    cfg: *const tandem_config,
    out: *mut *mut tandem_runtime,
    layout_out: *mut tandem_layout,
) -> tandem_status {
    guard(|| {
        if cfg.is_null() || out.is_null() || layout_out.is_null() {
            set_last_error("tandem_runtime_create: null argument");
            return TANDEM_ERR_INVALID_ARG;
        }
        // SAFETY: non-null and readable per the contract.
        let c = unsafe { &*cfg };
        if c.abi_version != TANDEM_ABI_VERSION {
            set_last_error(format!(
                "ABI mismatch: caller built for version {}, library is version {}; rebuild both from one tandem version (tandem build; ./build.sh in a tandem clone)",
                c.abi_version, TANDEM_ABI_VERSION
            ));
            return TANDEM_ERR_ABI_MISMATCH;
        }
        let config = Config {
            workers: c.workers as usize,
            sq_capacity: c.sq_capacity,
            cq_capacity: c.cq_capacity,
            req_slot_size: c.req_slot_size,
            req_slots: c.req_slots,
            rep_slot_size: c.rep_slot_size,
            rep_slots: c.rep_slots,
            spin: Duration::from_nanos(c.spin_ns),
            handover: None,
        };
        let mut registry = Registry::new();
        tandem_register_handlers(&mut registry);
        match Runtime::new(config, registry) {
            Ok(rt) => {
                // SAFETY: writable per the contract.
                unsafe { layout_out.write(c_layout(&rt)) };
                let boxed = Box::new(tandem_runtime { inner: rt });
                // SAFETY: writable per the contract; ownership passes to the caller.
                unsafe { out.write(Box::into_raw(boxed)) };
                TANDEM_OK
            }
            Err(e) => status_of(&e),
        }
    })
}

/// Starts tokio, runs every handler's init, then every handler's warm-up (each in event-type
/// order), then starts the poller. Fails with `TANDEM_ERR_INIT` when a hook fails or panics;
/// the last error then reads `<init|warm-up> of Rust handler "<name>" failed: <code>:
/// <message>` (the name quoted as Rust's `{:?}` quotes it). A failed start has closed the
/// handlers initialised, in reverse order, and stopped tokio; the runtime cannot start again.
///
/// # Safety
/// `rt` must come from `tandem_runtime_create` and not be freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_runtime_start(rt: *mut tandem_runtime) -> tandem_status {
    guard(|| {
        // SAFETY: a live runtime per the contract; calls on it do not overlap.
        let Some(rt) = (unsafe { rt.as_mut() }) else {
            set_last_error("tandem_runtime_start: null runtime");
            return TANDEM_ERR_INVALID_ARG;
        };
        match rt.inner.start() {
            Ok(()) => TANDEM_OK,
            Err(e) => status_of(&e),
        }
    })
}

/// Drains in-flight events for up to `grace_ns`, cancels the rest (each completes as a
/// retryable "cancelled" error), waits until every completion is published, then stops the
/// poller and tokio. Blocks the calling thread. Idempotent. Reply slots Go releases after this
/// call are taken back by `tandem_runtime_stats`.
///
/// # Safety
/// `rt` must come from `tandem_runtime_create` and not be freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_runtime_shutdown(
    rt: *mut tandem_runtime,
    grace_ns: u64,
) -> tandem_status {
    guard(|| {
        // SAFETY: a live runtime per the contract; calls on it do not overlap.
        let Some(rt) = (unsafe { rt.as_mut() }) else {
            set_last_error("tandem_runtime_shutdown: null runtime");
            return TANDEM_ERR_INVALID_ARG;
        };
        rt.inner.shutdown(Duration::from_nanos(grace_ns));
        TANDEM_OK
    })
}

/// Runs the submission step on the calling thread: for a submitter that published a
/// descriptor and won the submission ring's wake-up duty (its consumer was parked), in place
/// of writing the eventfd. It drains the ring here (an inline handler runs to completion, or
/// to its first wait and then continues as a task; a task handler is spawned on tokio) and
/// re-arms the parked flag for the sleeping poller. Returns, when non-negative, the number of
/// records consumed, plus `TANDEM_KICK_GO_WAKE_OWED` when a completion published during the
/// call found Go's poller parked: the caller must then consume the completion ring itself (or
/// wake its poller). Negative: minus a `TANDEM_ERR_*` status; the caller then writes the
/// eventfd as before. `flags`: `TANDEM_KICK_FREQUENT` when this crossing followed the
/// previous one within the spin window, which may hand the ring back to the poller (one
/// wake) instead; `TANDEM_KICK_HELP` from a submitter that won no duty but saw another
/// crossing in progress: the call drains what it can and re-arms nothing;
/// `TANDEM_KICK_BATCH` when the records are one submitter's batch, which alone then hands
/// nothing over however many they are. Safe from any thread while the runtime runs.
///
/// # Safety
/// `rt` must be a live runtime.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_runtime_kick(rt: *const tandem_runtime, flags: u32) -> i64 {
    guard_value(|| {
        // SAFETY: a live runtime per the contract.
        let Some(rt) = (unsafe { rt.as_ref() }) else {
            set_last_error("tandem_runtime_kick: null runtime");
            return Err(TANDEM_ERR_INVALID_ARG);
        };
        let kicked = if flags & TANDEM_KICK_HELP != 0 {
            rt.inner.help()
        } else {
            rt.inner.kick(
                flags & TANDEM_KICK_FREQUENT != 0,
                flags & TANDEM_KICK_BATCH != 0,
            )
        };
        match kicked {
            Ok(k) => Ok(i64::from(k.drained) | owed_bit(k.go_wake_owed)),
            Err(e) => Err(status_of(&e)),
        }
    })
}

/// Runs the event in request slot `slot` on the calling thread, past the submission ring: for
/// a submitter that waits for the event's outcome (`TANDEM_DELIVERY_WAITED`) and would
/// otherwise publish it and cross. Go wrote the slot's header and envelope (`len` bytes) as
/// for a `TANDEM_SQE_EVENT` descriptor; `token` and `route` are that descriptor's token and
/// flags. The slot is Rust's from the call on. The handler runs as in a kick: to completion,
/// or to its first wait and then as a task. When it finished during the call, and no other
/// record was published on this thread first, the event's completion record is written into
/// `*out` (its `seq` untouched) instead of the completion ring, and the result has
/// `TANDEM_RUN_DONE`: the caller settles the event from it. Otherwise the record comes through
/// the completion ring as ever. `TANDEM_KICK_GO_WAKE_OWED` as for a kick. Negative: minus a
/// `TANDEM_ERR_*` status (`TANDEM_ERR_STATE`: not running), and the slot was not taken: the
/// caller publishes the event through the ring instead. Safe from any thread while the
/// runtime runs.
///
/// # Safety
/// `rt` must be a live runtime and `out` writable for one `tandem_desc` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_runtime_run(
    rt: *const tandem_runtime,
    token: u64,
    slot: u32,
    len: u32,
    route: u32,
    out: *mut tandem_desc,
) -> i64 {
    guard_value(|| {
        // SAFETY: a live runtime per the contract.
        let Some(rt) = (unsafe { rt.as_ref() }) else {
            set_last_error("tandem_runtime_run: null runtime");
            return Err(TANDEM_ERR_INVALID_ARG);
        };
        // SAFETY: null or writable for one cell during the call, per the contract; its fields
        // are atomics, written through a shared reference.
        let Some(out) = (unsafe { out.as_ref() }) else {
            set_last_error("tandem_runtime_run: null out");
            return Err(TANDEM_ERR_INVALID_ARG);
        };
        let ran = rt
            .inner
            .run(token, slot, len, route)
            .map_err(|e| status_of(&e))?;
        let mut r = owed_bit(ran.go_wake_owed);
        if let Some(record) = ran.done {
            record.write(out);
            r |= TANDEM_RUN_DONE;
        }
        Ok(r)
    })
}

/// Fills `*out` with the runtime's counters. After shutdown it first consumes the release
/// records left in the submission ring, so the outstanding counts are final.
///
/// # Safety
/// `rt` must be a live runtime and `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_runtime_stats(
    rt: *const tandem_runtime,
    out: *mut tandem_stats,
) -> tandem_status {
    guard(|| {
        // SAFETY: a live runtime per the contract.
        let (Some(rt), false) = ((unsafe { rt.as_ref() }), out.is_null()) else {
            set_last_error("tandem_runtime_stats: null argument");
            return TANDEM_ERR_INVALID_ARG;
        };
        let s = rt.inner.stats();
        let stats = tandem_stats {
            received: s.received,
            completed: s.completed,
            requests_held: s.requests_held,
            replies_lent: s.replies_lent,
            releases: s.releases,
            violations: s.violations,
            parks: s.parks,
            go_wakeups: s.go_wakeups,
            panics: s.panics,
            emitted: s.emitted,
            local_dispatched: s.local_dispatched,
            local_acked: s.local_acked,
            local_forwarded: s.local_forwarded,
            sq_depth: s.sq_depth,
            cq_depth: s.cq_depth,
            handovers: s.handovers,
            task_wakes: s.task_wakes,
            rescues: s.rescues,
            calls: s.calls,
            calls_pending: s.calls_pending,
            call_replies_held: s.call_replies_held,
            runs: s.runs,
        };
        // SAFETY: writable per the contract.
        unsafe { out.write(stats) };
        TANDEM_OK
    })
}

/// Writes the registered event types, newline-separated, into `buf` (caller-owned, `cap`
/// bytes) and their total length into `*len_out`. Returns `TANDEM_ERR_TOO_SMALL` if `cap` is
/// too small, having written only the length.
///
/// # Safety
/// `rt` must be a live runtime, `buf` valid for `cap` bytes, `len_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_event_types(
    rt: *const tandem_runtime,
    buf: *mut u8,
    cap: usize,
    len_out: *mut usize,
) -> tandem_status {
    guard(|| {
        // SAFETY: a live runtime per the contract.
        let (Some(rt), false) = ((unsafe { rt.as_ref() }), len_out.is_null()) else {
            set_last_error("tandem_event_types: null argument");
            return TANDEM_ERR_INVALID_ARG;
        };
        let joined = rt.inner.event_types().join("\n");
        // SAFETY: writable per the contract.
        unsafe { len_out.write(joined.len()) };
        if joined.len() > cap || (buf.is_null() && !joined.is_empty()) {
            return TANDEM_ERR_TOO_SMALL;
        }
        // SAFETY: `buf` holds `cap` >= len bytes per the contract.
        unsafe { std::ptr::copy_nonoverlapping(joined.as_ptr(), buf, joined.len()) };
        TANDEM_OK
    })
}

/// Names the event types whose emitted events are routed inside Rust instead of going to Go,
/// and the handler each goes to: `types` is newline-separated UTF-8, `len` bytes, read during
/// the call only; each line is `type` (to the handler registered under that type) or
/// `type\thandler` (to the handler registered under `handler`). Each call replaces the whole
/// set, atomically: callable before `tandem_runtime_start` and again while running, from any
/// thread (Go calls it whenever a route's targets change). It returns once every emit after it
/// goes by the new set; events dispatched by the old one finish where they are. On an error
/// (a handler not registered) the set in place stays.
///
/// # Safety
/// `rt` must be a live runtime; `types` valid for `len` bytes (or null with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_set_local_routes(
    rt: *const tandem_runtime,
    types: *const u8,
    len: usize,
) -> tandem_status {
    guard(|| {
        // SAFETY: a live runtime per the contract.
        let Some(rt) = (unsafe { rt.as_ref() }) else {
            set_last_error("tandem_set_local_routes: null runtime");
            return TANDEM_ERR_INVALID_ARG;
        };
        let bytes = if len == 0 {
            &[][..]
        } else if types.is_null() {
            set_last_error("tandem_set_local_routes: null types");
            return TANDEM_ERR_INVALID_ARG;
        } else {
            // SAFETY: readable for `len` bytes per the contract, only during this call.
            unsafe { std::slice::from_raw_parts(types, len) }
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            set_last_error("tandem_set_local_routes: types are not UTF-8");
            return TANDEM_ERR_INVALID_ARG;
        };
        let routes = text
            .split('\n')
            .filter(|line| !line.is_empty())
            .map(|line| line.split_once('\t').unwrap_or((line, line)));
        match rt.inner.set_local_routes_to(routes) {
            Ok(()) => TANDEM_OK,
            Err(e) => status_of(&e),
        }
    })
}

/// Sets the least severe level of the Rust log records forwarded to Go (0 trace, 1 debug,
/// 2 info, 3 warn, 4 error, 5 or more: none). Process-wide, since the records of every
/// runtime go through one subscriber (which hands each to the runtime that produced it). Go
/// calls it at start and whenever its logger's level changes.
#[unsafe(no_mangle)]
pub extern "C" fn tandem_set_log_level(level: u32) {
    let _ = guard(|| {
        crate::logs::set_level(level.min(5) as u8);
        TANDEM_OK
    });
}

/// Shuts the runtime down (as `tandem_runtime_shutdown` with no grace) if still running and
/// frees it with its shared region and eventfds. Null is ignored. After this call no pointer
/// from `tandem_layout` may be used.
///
/// # Safety
/// `rt` must come from `tandem_runtime_create` and not be freed already.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_runtime_free(rt: *mut tandem_runtime) {
    let _ = guard(|| {
        if !rt.is_null() {
            // SAFETY: ownership returns from the caller, exactly once per the contract.
            drop(unsafe { Box::from_raw(rt) });
        }
        TANDEM_OK
    });
}
