//! A bench-only export: the "spawn plus callback" contender of `bench/` (one cgo call per
//! event that spawns the handler on tokio and answers through a C → Go callback from a tokio
//! worker).
//!
//! It is **not part of tandem's ABI**: `ffi/tandem.h` does not declare it, no Go package of
//! tandem calls it, and it may change or go away with the benchmarks. It lives in this crate
//! (not in `rust/tandem`) because it is a way of calling the handlers that tandem measures
//! itself against, not one it offers; `bench/callback_cgo.go` declares its prototype itself.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tandem::ffi::{
    TANDEM_ERR_INVALID_ARG, TANDEM_ERR_PANIC, TANDEM_ERR_STATE, TANDEM_OK, tandem_runtime,
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
