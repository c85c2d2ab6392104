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
            let env = envelope::decode(&bytes);
            let job = prepare(&sh, &env, None, index);
            let finished = run(&sh, &job, 0, None).await;
            match finished.outcome {
                Outcome::Ack | Outcome::Reply(_) => {
                    sh.counters.local_acked.fetch_add(1, Relaxed);
                }
                Outcome::Retry { .. } | Outcome::Term(_) => {
                    sh.completions.forward_failure(&bytes, &finished).await;
                }
            }
            sh.counters
                .unhold(&sh.counters.local_held, &sh.completions.requests);
        });
    }

    /// Runs a called event in the caller's own task: the caller's event is held meanwhile,
    /// so shutdown waits for both, and the caller's cancellation ends both.
    fn call<'a>(
        &'a self,
        bytes: &'a [u8],
        index: u32,
    ) -> std::pin::Pin<Box<dyn Future<Output = Finished<'a>> + Send + 'a>> {
        Box::pin(async move {
            let env = envelope::decode(bytes);
            let job = prepare(self, &env, None, index);
            run(self, &job, 0, None).await
        })
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
        rt.set_local_routes(["echo"]).unwrap();
        // A second call replaces the whole set.
        rt.set_local_routes(["echo", "boom"]).unwrap();
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
    fn local_routes_replaced_while_handlers_emit_lose_nothing() {
        let mut rt = runtime();
        let stop = std::sync::atomic::AtomicBool::new(false);
        // Each relay's follow-up either stays in Rust (acked there) or reaches Go, never both,
        // never neither, while another thread replaces the local routes again and again.
        // At least N relays, and on until both ways were taken.
        const N: u64 = 300;
        let (mut to_go, mut sent) = (0, 0u64);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut local = false;
                while !stop.load(Relaxed) {
                    local = !local;
                    let types: &[&str] = if local { &["echo"] } else { &[] };
                    rt.set_local_routes(types.iter().copied()).unwrap();
                    std::thread::yield_now();
                }
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while sent < N
                || (to_go == 0 || rt.stats().local_dispatched == 0)
                    && std::time::Instant::now() < deadline
            {
                submit(&rt, (sent % 4) as u32, &envelope("relay", b"echo"));
                sent += 1;
                loop {
                    let done = next_completion(&rt);
                    if done.kind == TANDEM_CQE_EMIT {
                        assert_eq!(done.flags, 0, "emitted, not a failure");
                        release(&rt, done.reply_slot);
                        to_go += 1;
                        continue;
                    }
                    assert_eq!(done.kind, TANDEM_OUTCOME_ACK);
                    break;
                }
            }
            stop.store(true, Relaxed);
        });
        wait_until("the local echoes acked", || {
            let st = rt.stats();
            st.local_acked == st.local_dispatched
        });
        let st = assert_whole(&mut rt);
        assert_eq!(st.local_dispatched + to_go, sent);
        assert_eq!(st.emitted, to_go);
        assert!(st.local_dispatched > 0 && to_go > 0, "both ways taken");
    }

    #[test]
    fn a_shadows_copy_emits_nothing() {
        let mut rt = runtime();
        // As a shadow's copy, the relay runs and acks, but its follow-up goes nowhere: not to
        // Go, not to a local route.
        rt.set_local_routes(["echo"]).unwrap();
        let shadow = Delivery {
            shadow: true,
            ..first_delivery()
        };
        for (slot, ty) in [(0, "echo"), (1, "probe")] {
            submit_delivery(&rt, slot, &envelope("relay", ty.as_bytes()), 0, shadow);
            let done = next_completion(&rt);
            assert_eq!(done.kind, TANDEM_OUTCOME_ACK, "the relay acks");
        }
        // The same event, not a shadow's: the follow-up reaches Go.
        let got = relay(&rt, 2, "probe", 1);
        assert_eq!(got.len(), 1);
        release(&rt, got[0].reply_slot);
        let st = assert_whole(&mut rt);
        assert_eq!((st.local_dispatched, st.emitted), (0, 1));
    }

    #[test]
    fn local_routes_name_registered_handlers() {
        let rt = runtime();
        assert!(matches!(
            rt.set_local_routes(["nope"]),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            rt.set_local_routes_to([("echo", "nope")]),
            Err(Error::InvalidConfig(_))
        ));
    }

    /// Relays one event of type `ty` from slot `slot` and returns the completions it made
    /// besides the relay's own ack: the forwarded or emitted follow-up, if it reached Go.
    fn relay(rt: &Runtime, slot: u32, ty: &str, expect: usize) -> Vec<Done> {
        submit(rt, slot, &envelope("relay", ty.as_bytes()));
        let mut out = Vec::new();
        for _ in 0..=expect {
            let done = next_completion(rt);
            if done.kind == TANDEM_CQE_EMIT {
                out.push(done);
            } else {
                assert_eq!(done.kind, TANDEM_OUTCOME_ACK, "the relay acks");
            }
        }
        out
    }

    #[test]
    fn local_routes_change_while_running_and_route_a_type_to_another_handler() {
        let mut rt = runtime();
        // echo stays in Rust, to its own handler: acked there, nothing reaches Go.
        rt.set_local_routes(["echo"]).unwrap();
        assert!(relay(&rt, 0, "echo", 0).is_empty());
        wait_until("the local echo acked", || rt.stats().local_acked == 1);

        // The route moves to another Rust handler: the type echo now runs probe, which
        // fails, so Go gets the event back with probe's error.
        rt.set_local_routes_to([("echo", "probe")]).unwrap();
        let got = relay(&rt, 1, "echo", 1);
        let (event, error) = got[0].reply.split_at(got[0].len as usize);
        let ev = envelope::decode(event).expect("forwarded event");
        let err = envelope::decode_error(error).expect("forwarded error");
        assert_eq!((ev.ty, got[0].flags), ("echo", TANDEM_OUTCOME_TERM));
        assert_eq!((err.message, err.handler), ("attempt 1", "probe"));
        release(&rt, got[0].reply_slot);

        // The route leaves Rust (moved to a Go handler): the event is emitted to Go.
        rt.set_local_routes(std::iter::empty()).unwrap();
        let got = relay(&rt, 2, "echo", 1);
        assert_eq!(got[0].flags, 0, "emitted, not forwarded");
        let ev = envelope::decode(&got[0].reply).expect("emitted event");
        assert_eq!(ev.ty, "echo");
        release(&rt, got[0].reply_slot);

        // A refused set leaves the one in place: still to Go.
        assert!(rt.set_local_routes_to([("echo", "nope")]).is_err());
        let got = relay(&rt, 3, "echo", 1);
        assert_eq!(got[0].flags, 0);
        release(&rt, got[0].reply_slot);
        let st = assert_whole(&mut rt);
        assert_eq!((st.local_dispatched, st.local_acked, st.emitted), (2, 1, 2));
    }
}
