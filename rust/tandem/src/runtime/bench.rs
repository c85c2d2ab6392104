//! Ways into a runtime that bypass the rings, for tandem's own benchmarks only (the cargo
//! feature `bench-internals`, not an API): the direct call, the wake probe and the
//! spawn-and-callback call that bench/ measures the rings against.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

use super::Runtime;
use crate::completion::{Finished, error_bytes};
use crate::config::Error;
use crate::dispatch::{prepare, run};
use crate::layout::{
    TANDEM_OUTCOME_ACK, TANDEM_OUTCOME_RETRY, TANDEM_OUTCOME_TERM, TANDEM_PROBE_STOP,
};
use crate::outcome::Outcome;

impl Runtime {
    /// Runs the handler for one encoded envelope on this thread, blocking until it finishes:
    /// the direct-call path (one FFI call per event), kept for comparison and for tiny
    /// synchronous handlers. Returns the outcome code, and the reply or error envelope bytes.
    #[doc(hidden)]
    pub fn invoke(&self, envelope_bytes: &[u8]) -> Result<(u32, Vec<u8>), Error> {
        let Some(rt) = self.tokio.as_ref() else {
            return Err(Error::State("not running"));
        };
        let shared = self.shared.clone();
        let bytes = envelope_bytes;
        let _logs = crate::logs::enter(&self.log_queue);
        let outcome = rt.block_on(async {
            let Finished {
                outcome, handler, ..
            } = run(
                &shared,
                &prepare(&shared, &crate::envelope::decode(bytes), None, 0),
                0,
                None,
            )
            .await;
            (outcome, handler)
        });
        let (outcome, handler) = outcome;
        Ok(match outcome {
            Outcome::Ack => (TANDEM_OUTCOME_ACK, Vec::new()),
            Outcome::Reply(v) => (TANDEM_OUTCOME_ACK, v),
            Outcome::Retry { error, .. } => (TANDEM_OUTCOME_RETRY, error_bytes(&error, handler)),
            Outcome::Term(error) => (TANDEM_OUTCOME_TERM, error_bytes(&error, handler)),
        })
    }
}

impl Runtime {
    /// Starts the wake probe: a task that waits on eventfd `ping` through tokio's reactor and
    /// answers each wake by writing 1 to eventfd `pong`, until a value of at least
    /// `TANDEM_PROBE_STOP` arrives. It measures the bare cost of waking this runtime and being woken
    /// back, the floor under an idle round trip over the rings. The task owns both fds.
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
            let view = &envelope_bytes[..];
            let Finished {
                outcome, handler, ..
            } = run(
                &shared,
                &prepare(&shared, &crate::envelope::decode(view), None, 0),
                0,
                None,
            )
            .await;
            let (code, out) = match outcome {
                Outcome::Ack => (TANDEM_OUTCOME_ACK, Vec::new()),
                Outcome::Reply(v) => (TANDEM_OUTCOME_ACK, v),
                Outcome::Retry { error, .. } => {
                    (TANDEM_OUTCOME_RETRY, error_bytes(&error, handler))
                }
                Outcome::Term(error) => (TANDEM_OUTCOME_TERM, error_bytes(&error, handler)),
            };
            done(code, out);
        });
        Ok(())
    }
}
