//! Rust-to-Rust routing of emitted events: an event emitted to a type Go routes to a Rust
//! handler (with no policy of Go's own) runs here, with no trip through Go. An ack ends it
//! here; a failure goes to Go, where retries and dead letters live, so both runtimes recover
//! the same way.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::completion::{Finished, LocalDispatch};
use crate::dispatch::{prepare, run};
use crate::envelope::{self, Envelope};
use crate::outcome::Outcome;
use crate::shared::Shared;

impl LocalDispatch for Shared {
    /// Runs the event as a task of its own, from an owned copy of its envelope (the emitter's
    /// borrows end when `emit` returns). A failure reaches Go as a `TANDEM_CQE_EMIT` with the
    /// outcome in `flags`.
    fn dispatch(self: Arc<Self>, ev: &Envelope<'_>, index: u32) {
        let mut first = *ev;
        first.attempt = first.attempt.max(1); // attempt counts deliveries, from 1
        let bytes: Box<[u8]> = envelope::encode_to_vec(&first).into_boxed_slice();
        self.counters.local_dispatched.fetch_add(1, Relaxed);
        self.counters.hold(&self.counters.local_held);
        let sh = self.clone();
        self.tracker.spawn(async move {
            // The task owns the bytes; the event borrows them inside it.
            let finished = run(&sh, prepare(&sh, &bytes, None, index), 0, None).await;
            match finished.outcome {
                Outcome::Ack | Outcome::Reply(_) => {
                    sh.counters.local_acked.fetch_add(1, Relaxed);
                }
                Outcome::Retry { .. } | Outcome::Term(_) => {
                    sh.completions.forward_failure(&bytes, &finished).await;
                }
            }
            sh.counters.unhold(&sh.counters.local_held);
        });
    }

    /// Runs a called event in the caller's own task: the caller's event is held meanwhile,
    /// so shutdown waits for both, and the caller's cancellation ends both.
    fn call<'a>(
        self: Arc<Self>,
        bytes: &'a [u8],
        index: u32,
    ) -> std::pin::Pin<Box<dyn Future<Output = Finished> + Send + 'a>> {
        Box::pin(async move { run(&self, prepare(&self, bytes, None, index), 0, None).await })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::code;
    use crate::testing::*;

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
        assert_eq!((err.code, done.flags), (code::PANIC, TANDEM_OUTCOME_TERM));
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
    fn a_handler_sees_attempt_1_on_the_first_delivery_from_go_or_from_rust() {
        let mut rt = runtime();
        rt.set_local_routes(["probe"]).unwrap();
        // From Go: the first delivery's header says 1.
        submit(&rt, 0, &envelope("probe", b""));
        let done = next_completion(&rt);
        let err = envelope::decode_error(&done.reply).expect("error envelope");
        assert_eq!((done.kind, err.message), (TANDEM_OUTCOME_TERM, "attempt 1"));
        release(&rt, done.reply_slot);
        // Emitted and routed inside Rust: no header, and the envelope sets no attempt.
        submit(&rt, 1, &envelope("relay", b"probe"));
        let mut forwarded = None;
        for _ in 0..2 {
            let done = next_completion(&rt);
            if done.kind == TANDEM_CQE_EMIT {
                forwarded = Some(done);
            } else {
                assert_eq!(done.kind, TANDEM_OUTCOME_ACK, "the relay acks");
            }
        }
        let done = forwarded.expect("the probe's failure reaches Go");
        let (_, error) = done.reply.split_at(done.len as usize);
        let err = envelope::decode_error(error).expect("forwarded error");
        assert_eq!(err.message, "attempt 1");
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn local_routes_name_registered_handlers() {
        let rt = runtime();
        assert!(matches!(
            rt.set_local_routes(["nope"]),
            Err(Error::InvalidConfig(_))
        ));
    }
}
