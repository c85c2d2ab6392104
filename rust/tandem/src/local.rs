//! Rust-to-Rust routing of emitted events.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::completion::*;
use crate::dispatch::*;
use crate::envelope::{self};
use crate::handler::{HandlerError, Outcome};
use crate::layout::*;
use crate::shared::*;
use crate::sync::Ordering;

impl Shared {
    /// Routes an emitted event to a Rust handler inside Rust: no trip through Go. It runs as a
    /// task of its own from an owned copy of its envelope. An ack ends it here; a failure goes
    /// to Go (a `TANDEM_CQE_EMIT` with the outcome in `flags`), where retries and dead letters
    /// live, so both runtimes recover the same way.
    pub(crate) fn dispatch_local(self: &Arc<Self>, ev: &envelope::Envelope<'_>, index: u32) {
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
    pub(crate) async fn forward_failure(
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    pub(crate) fn local_routes_keep_emitted_events_in_rust_and_hand_failures_to_go() {
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
    pub(crate) fn local_routes_name_registered_handlers() {
        let rt = runtime();
        assert!(matches!(
            rt.set_local_routes(["nope"]),
            Err(Error::InvalidConfig(_))
        ));
    }
}
