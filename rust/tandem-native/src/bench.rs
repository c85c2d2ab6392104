//! Bench-only exports: the ways of calling the handlers that `bench/` measures tandem's rings
//! against, and the probe of its idle-wake floor.
//!
//! - `tandem_bench_invoke`: the "direct" contender, one call per event that blocks on tokio
//!   until the handler finishes.
//! - `tandem_bench_spawn_call`: the "spawn plus callback" contender, one call per event that
//!   spawns the handler on tokio and answers through a C → Go callback from a tokio worker.
//! - `tandem_bench_wake_probe`: an eventfd ping-pong with a tokio task, the bare cost of an
//!   idle wake each way.
//!
//! They are **not part of tandem's ABI**: `ffi/tandem.h` does not declare them, no Go package
//! of tandem calls them, and they may change or go away with the benchmarks. They live in this
//! crate (not in `rust/tandem`) because they are ways of calling the handlers that tandem
//! measures itself against, not ones it offers; `bench/native_cgo.go` declares their prototypes
//! itself. They reach the runtime through `tandem`'s `bench-internals` feature, which is not
//! an API either. Unlike tandem's exports they leave `tandem_last_error` alone: the status
//! code is all they report.

use std::panic::{AssertUnwindSafe, catch_unwind};

use std::os::fd::{BorrowedFd, OwnedFd};

use tandem::Error;
use tandem::ffi::{
    TANDEM_ERR_INIT, TANDEM_ERR_INVALID_ARG, TANDEM_ERR_IO, TANDEM_ERR_PANIC, TANDEM_ERR_STATE,
    TANDEM_ERR_TOO_SMALL, TANDEM_OK, tandem_runtime, tandem_status,
};

/// Called once per event, from a tokio worker thread, with the handler's outcome
/// (`TANDEM_OUTCOME_ACK`, `_RETRY` or `_TERM`) and its reply or error envelope. `reply` is
/// valid for `reply_len` bytes during the call only (null when `reply_len` is 0).
pub type BenchDone = extern "C" fn(user: usize, outcome: u32, reply: *const u8, reply_len: usize);

/// Copies the envelope, spawns its handler on the runtime's tokio as a task, and returns at
/// once; when the handler finishes, `cb(user, outcome, reply, reply_len)` runs on the tokio
/// worker that finished it. Returns `TANDEM_OK`, or `TANDEM_ERR_INVALID_ARG` (null runtime or
/// envelope), `TANDEM_ERR_STATE` (the runtime is not running) or `TANDEM_ERR_PANIC`; on an
/// error `cb` is never called. A panic never unwinds into the caller, nor into the tokio
/// worker from `cb`.
///
/// # Safety
/// `rt` must be a started runtime from `tandem_runtime_create`, not shut down or freed until
/// every callback of the calls made on it has returned; `env` must be readable for `len`
/// bytes during this call; `cb` must be safe to call from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_bench_spawn_call(
    rt: *const tandem_runtime,
    env: *const u8,
    len: usize,
    cb: BenchDone,
    user: usize,
) -> i32 {
    let spawned = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: null or a live runtime, per the contract.
        let Some(rt) = (unsafe { rt.as_ref() }) else {
            return TANDEM_ERR_INVALID_ARG;
        };
        if env.is_null() {
            return TANDEM_ERR_INVALID_ARG;
        }
        // SAFETY: `env` is non-null and readable for `len` bytes during this call; it is
        // copied before the call returns.
        let envelope = unsafe { std::slice::from_raw_parts(env, len) }.to_vec();
        let done = move |outcome: u32, reply: Vec<u8>| {
            // A panic here would end the task without answering; cb is foreign code that
            // cannot unwind, but keep the worker safe whatever it is.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let ptr = if reply.is_empty() {
                    std::ptr::null()
                } else {
                    reply.as_ptr()
                };
                cb(user, outcome, ptr, reply.len());
            }));
        };
        match rt.runtime().spawn_call(envelope, done) {
            Ok(()) => TANDEM_OK,
            Err(_) => TANDEM_ERR_STATE,
        }
    }));
    spawned.unwrap_or(TANDEM_ERR_PANIC)
}

/// The direct-call path: runs the handler for one envelope on the calling thread, blocking on
/// the runtime's tokio until it finishes, and copies the reply or error envelope into `reply`
/// (caller-owned, `cap` bytes). One call per event, and the calling thread is held for the
/// handler's whole run. `*outcome_out` receives a `TANDEM_OUTCOME_*` code and `*reply_len` the
/// reply's length; `TANDEM_ERR_TOO_SMALL` says it exceeds `cap` (the handler has run: calling
/// again runs it again). Returns `TANDEM_OK`, or `TANDEM_ERR_INVALID_ARG` (a null argument),
/// `TANDEM_ERR_STATE` (the runtime is not running) or `TANDEM_ERR_PANIC`. Any number of calls
/// may run at once on one runtime, from any threads.
///
/// # Safety
/// `rt` must be a started runtime from `tandem_runtime_create`, not shut down or freed during
/// the call; `env` must be readable for `len` bytes and `reply` writable for `cap` bytes (or
/// null with `cap` 0) during the call; `reply_len` and `outcome_out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_bench_invoke(
    rt: *const tandem_runtime,
    env: *const u8,
    len: usize,
    reply: *mut u8,
    cap: usize,
    reply_len: *mut usize,
    outcome_out: *mut u32,
) -> tandem_status {
    let invoked = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: null or a live runtime, per the contract.
        let Some(rt) = (unsafe { rt.as_ref() }) else {
            return TANDEM_ERR_INVALID_ARG;
        };
        if env.is_null() || reply_len.is_null() || outcome_out.is_null() {
            return TANDEM_ERR_INVALID_ARG;
        }
        // SAFETY: `env` is non-null and readable for `len` bytes during this call, which is
        // as long as the handler borrows it (invoke returns after the handler).
        let envelope = unsafe { std::slice::from_raw_parts(env, len) };
        match rt.runtime().invoke(envelope) {
            Ok((outcome, out)) => {
                // SAFETY: both are non-null and writable, per the contract.
                unsafe {
                    reply_len.write(out.len());
                    outcome_out.write(outcome);
                }
                if out.len() > cap || (reply.is_null() && !out.is_empty()) {
                    return TANDEM_ERR_TOO_SMALL;
                }
                // SAFETY: `reply` is writable for `cap` >= out.len() bytes (non-null when
                // out is not empty), and Rust's `out` cannot overlap the caller's buffer.
                unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), reply, out.len()) };
                TANDEM_OK
            }
            Err(e) => status_of(&e),
        }
    }));
    invoked.unwrap_or(TANDEM_ERR_PANIC)
}

/// Starts the wake probe: a tokio task of this runtime waits on eventfd `ping_fd` through
/// tokio's reactor and answers each wake by writing 1 to eventfd `pong_fd`; a ping of 2^32 or
/// more stops it. The library duplicates both fds, so the caller keeps and closes its own. With
/// both sides parked before each ping, one ping and its pong time the bare cost of an idle wake
/// each way: the floor under an idle round trip over the rings. Returns `TANDEM_OK`, or
/// `TANDEM_ERR_INVALID_ARG` (a null runtime, or an fd that cannot be duplicated),
/// `TANDEM_ERR_STATE` (the runtime is not running), `TANDEM_ERR_IO` or `TANDEM_ERR_PANIC`.
///
/// # Safety
/// `rt` must be a started runtime from `tandem_runtime_create`, not shut down or freed during
/// the call; both fds must be open eventfds during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tandem_bench_wake_probe(
    rt: *const tandem_runtime,
    ping_fd: i32,
    pong_fd: i32,
) -> tandem_status {
    let started = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: null or a live runtime, per the contract.
        let Some(rt) = (unsafe { rt.as_ref() }) else {
            return TANDEM_ERR_INVALID_ARG;
        };
        if ping_fd < 0 || pong_fd < 0 {
            return TANDEM_ERR_INVALID_ARG; // a BorrowedFd must never hold -1
        }
        let dup = |fd: i32| -> std::io::Result<OwnedFd> {
            // SAFETY: `fd` is not negative and the caller keeps it open during this call; it
            // is only duplicated.
            unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
        };
        let (Ok(ping), Ok(pong)) = (dup(ping_fd), dup(pong_fd)) else {
            return TANDEM_ERR_INVALID_ARG;
        };
        match rt.runtime().start_wake_probe(ping, pong) {
            Ok(()) => TANDEM_OK,
            Err(e) => status_of(&e),
        }
    }));
    started.unwrap_or(TANDEM_ERR_PANIC)
}

/// The status of a runtime error, as tandem's own exports report it.
fn status_of(e: &Error) -> tandem_status {
    match e {
        Error::InvalidConfig(_) => TANDEM_ERR_INVALID_ARG,
        Error::Io(_) => TANDEM_ERR_IO,
        Error::Init { .. } => TANDEM_ERR_INIT,
        Error::State(_) => TANDEM_ERR_STATE,
    }
}
