//! What a handler's call ([`Context::call`](crate::Context::call)) ends in: the callee's
//! [`Reply`], or a [`CallError`] saying why there is none.

use std::fmt;

use crate::code;
use crate::envelope;
use crate::slots::ReturnedReply;

/// The callee's reply to a [`Context::call`](crate::Context::call): its payload, read in
/// place. A reply that came through Go lives in a reply slot of the shared region until the
/// `Reply` is dropped, which frees the slot for the next writer; one from a handler that ran
/// inside Rust is the handler's own bytes. Either way nothing is copied until
/// [`Reply::into_vec`] asks for an owned buffer.
///
/// Drop it soon: while it lives it holds one of the runtime's reply slots
/// (`Stats::call_replies_held` counts them). `Send` and `Sync`: it may be read from any task.
pub struct Reply {
    inner: Inner,
}

enum Inner {
    Empty,
    Owned(Vec<u8>),
    Slot(ReturnedReply),
}

impl Reply {
    pub(crate) fn empty() -> Reply {
        Reply {
            inner: Inner::Empty,
        }
    }

    pub(crate) fn owned(data: Vec<u8>) -> Reply {
        Reply {
            inner: Inner::Owned(data),
        }
    }

    pub(crate) fn in_slot(slot: ReturnedReply) -> Reply {
        Reply {
            inner: if slot.bytes().is_empty() {
                Inner::Empty
            } else {
                Inner::Slot(slot)
            },
        }
    }

    /// The payload (empty when the callee acknowledged without one).
    pub fn data(&self) -> &[u8] {
        match &self.inner {
            Inner::Empty => &[],
            Inner::Owned(v) => v,
            Inner::Slot(s) => s.bytes(),
        }
    }

    /// The payload as an owned buffer; a reply in a slot is copied out and its slot freed.
    pub fn into_vec(self) -> Vec<u8> {
        match self.inner {
            Inner::Empty => Vec::new(),
            Inner::Owned(v) => v,
            Inner::Slot(s) => s.bytes().to_vec(),
        }
    }
}

impl AsRef<[u8]> for Reply {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("len", &self.data().len())
            .field("in_slot", &matches!(self.inner, Inner::Slot(_)))
            .finish()
    }
}

/// The callee's error envelope, as the caller of a failed call receives it: owned strings, so
/// it outlives the reply slot it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// The code, from the shared vocabulary ([`code`](crate::code)).
    pub code: String,
    /// A human-readable description.
    pub message: String,
    /// The runtime that produced the error, "go" or "rust".
    pub runtime: String,
    /// The handler that failed ("" when none ran, e.g. no route).
    pub handler: String,
    /// Whether the final outcome was retryable (the runtime stopped before another attempt)
    /// rather than terminal (dead-lettered, or refused).
    pub retryable: bool,
}

impl CallFailure {
    pub(crate) fn from_error_envelope(bytes: &[u8], retryable: bool) -> CallFailure {
        match envelope::decode_error(bytes) {
            Ok(e) => CallFailure {
                code: e.code.to_owned(),
                message: e.message.to_owned(),
                runtime: e.runtime.to_owned(),
                handler: e.handler.to_owned(),
                retryable,
            },
            Err(err) => CallFailure {
                code: code::DECODE.to_owned(),
                message: format!("malformed error envelope: {err}"),
                runtime: "rust".to_owned(),
                handler: String::new(),
                retryable,
            },
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if !self.handler.is_empty() {
            write!(f, " ({} handler {:?})", self.runtime, self.handler)?;
        }
        Ok(())
    }
}

/// Why a [`Context::call`](crate::Context::call) has no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// A required attribute (id, source, type) is empty; nothing was sent.
    Invalid(&'static str),
    /// The encoded event exceeds the reply slot size (`needed` bytes); nothing was sent.
    TooLarge {
        /// The encoded size.
        needed: usize,
    },
    /// No route takes the event's type (Go's error envelope, code `no_route`).
    NoRoute(CallFailure),
    /// The callee failed for good: its error envelope after Go's retries, or the refusal of
    /// one of the route's policies. A dead-lettered call was recorded once, as any event.
    Failed(CallFailure),
    /// The callee's reply did not fit a reply slot (code `reply_too_large`).
    ReplyTooLarge(CallFailure),
    /// Half the request slots or half the reply slots are held by calls waiting on Go already;
    /// nothing was sent. A call never waits for room: a caller waiting would hold its request
    /// slot, and with every slot held by a waiting caller no callee could get one. Retry later.
    Overloaded,
    /// The caller's cancellation token fired while it waited.
    Cancelled,
    /// The caller's deadline (which bounds the callee's) passed before the outcome.
    DeadlineExceeded,
    /// The runtime is shutting down: the call was cut short, or refused (code `cancelled`).
    ShuttingDown,
}

impl CallError {
    /// The callee's error envelope, when the error carries one.
    pub fn failure(&self) -> Option<&CallFailure> {
        match self {
            CallError::NoRoute(f) | CallError::Failed(f) | CallError::ReplyTooLarge(f) => Some(f),
            _ => None,
        }
    }

    /// The error a call's error envelope stands for.
    pub(crate) fn of_failure(f: CallFailure) -> CallError {
        match f.code.as_str() {
            code::NO_ROUTE => CallError::NoRoute(f),
            code::REPLY_TOO_LARGE => CallError::ReplyTooLarge(f),
            code::CANCELLED => CallError::ShuttingDown,
            _ => CallError::Failed(f),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Invalid(what) => write!(f, "called event lacks {what}"),
            CallError::TooLarge { needed } => {
                write!(f, "called event of {needed} bytes exceeds the reply slot")
            }
            CallError::NoRoute(e) => write!(f, "no route: {e}"),
            CallError::Failed(e) => write!(f, "the callee failed: {e}"),
            CallError::ReplyTooLarge(e) => write!(f, "the reply is too large: {e}"),
            CallError::Overloaded => write!(f, "too many calls waiting on Go"),
            CallError::Cancelled => write!(f, "the call was cancelled"),
            CallError::DeadlineExceeded => write!(f, "the caller's deadline passed"),
            CallError::ShuttingDown => write!(f, "the runtime is shutting down"),
        }
    }
}

impl std::error::Error for CallError {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::*;

    /// An envelope from Go's side with the facts a call must carry over.
    fn caller_event(calls: &str) -> Vec<u8> {
        envelope::encode_to_vec(&Envelope {
            id: "c1",
            source: "/test",
            ty: "caller",
            specversion: "1.0",
            correlationid: Some("order-7"),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: Some("vendor=1"),
            data: calls.as_bytes(),
            ..Envelope::default()
        })
    }

    fn error_envelope(code: &str, handler: &str) -> Vec<u8> {
        let e = envelope::ErrorEnvelope {
            code,
            message: "no luck",
            runtime: "go",
            handler,
            ..envelope::ErrorEnvelope::default()
        };
        let mut out = vec![0u8; envelope::error_encoded_len(&e)];
        let n = envelope::encode_error_into(&e, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn a_reply_and_a_call_error_may_move_between_tasks() {
        fn sendable<T: Send + Sync + 'static>() {}
        sendable::<Reply>();
        sendable::<CallError>();
    }

    #[test]
    fn a_call_to_a_local_route_runs_inside_rust_and_replies_directly() {
        let mut rt = runtime();
        rt.set_local_routes(["echo"]).unwrap();
        submit(&rt, 0, &caller_event("echo"));
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"ok:ping"[..]),
            "the callee's reply, with no record in between"
        );
        release(&rt, done.reply_slot);
        let st = assert_whole(&mut rt);
        assert_eq!((st.calls, st.local_dispatched, st.local_acked), (0, 1, 1));
    }

    #[test]
    fn a_call_through_go_carries_the_callers_facts_and_gets_the_reply() {
        let mut rt = runtime();
        let due = now_ns() as i64 + 60_000_000_000;
        let mut delivery = first_delivery();
        delivery.deadline = Some(due);
        submit_delivery(&rt, 0, &caller_event("go.upper"), 0, delivery);
        let call = next_completion(&rt);
        assert_eq!(
            (call.kind, call.slot, call.flags),
            (TANDEM_CQE_CALL, TANDEM_NO_SLOT, 0)
        );
        let ev = envelope::decode(&call.reply).expect("the called event");
        assert_eq!(
            (ev.ty, ev.id, ev.data),
            ("go.upper", "c1/call", &b"ping"[..])
        );
        assert_eq!(
            (ev.correlationid, ev.causationid, ev.deadline),
            (Some("order-7"), Some("c1"), Some(due)),
            "correlation carried over, the caller as cause, the caller's deadline"
        );
        assert_eq!(
            (ev.traceparent, ev.tracestate),
            (
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                Some("vendor=1")
            )
        );
        assert_eq!(rt.stats().calls_pending, 1);
        answer_call(&rt, &call, TANDEM_OUTCOME_ACK, b"PING");
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"ok:PING"[..])
        );
        release(&rt, done.reply_slot);
        let st = assert_whole(&mut rt);
        assert_eq!(
            (st.calls, st.calls_pending, st.call_replies_held),
            (1, 0, 0)
        );
    }

    #[test]
    fn the_callees_error_envelope_reaches_the_caller() {
        let mut rt = runtime();
        submit(&rt, 0, &caller_event("go.fail"));
        let call = next_completion(&rt);
        answer_call(
            &rt,
            &call,
            TANDEM_OUTCOME_TERM,
            &error_envelope("invalid", "fail"),
        );
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"failed:invalid:go:fail");
        release(&rt, done.reply_slot);
        // A type no route takes: Go answers no_route, a typed error.
        submit(&rt, 1, &caller_event("nobody"));
        let call = next_completion(&rt);
        answer_call(
            &rt,
            &call,
            TANDEM_OUTCOME_TERM,
            &error_envelope(code::NO_ROUTE, ""),
        );
        let done = next_completion(&rt);
        assert!(
            done.reply.starts_with(b"err:no route: no_route"),
            "{:?}",
            String::from_utf8_lossy(&done.reply)
        );
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn a_local_callee_that_fails_goes_on_through_go_with_its_failure() {
        let mut rt = runtime();
        rt.set_local_routes(["boom"]).unwrap();
        submit(&rt, 0, &caller_event("boom"));
        let call = next_completion(&rt);
        assert_eq!(
            (call.kind, call.flags),
            (TANDEM_CQE_CALL, TANDEM_OUTCOME_TERM)
        );
        let (event, error) = call.reply.split_at(call.len as usize);
        let ev = envelope::decode(event).expect("the called event");
        assert_eq!((ev.ty, ev.attempt, ev.causationid), ("boom", 1, Some("c1")));
        assert_eq!(envelope::decode_error(error).unwrap().code, code::PANIC);
        // Go dead-letters it and answers with the error envelope.
        answer_call(&rt, &call, TANDEM_OUTCOME_TERM, error);
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"failed:panic:rust:boom");
        release(&rt, done.reply_slot);
        let st = assert_whole(&mut rt);
        assert_eq!(
            (st.local_dispatched, st.local_forwarded, st.calls),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_caller_past_its_deadline_stops_waiting_tells_go_and_a_late_reply_is_freed() {
        let mut rt = runtime();
        submit_delivery(&rt, 0, &caller_event("go.slow"), 0, due_in(300));
        let call = next_completion(&rt);
        let ev = envelope::decode(&call.reply).unwrap();
        assert!(
            ev.deadline.is_some(),
            "the callee is bounded by the caller's deadline"
        );
        // No answer: the caller's deadline passes. Its outcome and the cancel record come, in
        // either order.
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let done = next_completion(&rt);
            if done.kind == TANDEM_CQE_CALL_CANCEL {
                assert_eq!(done.token, call.token, "the cancel names the call");
            } else {
                let said = match done.kind {
                    TANDEM_OUTCOME_RETRY => {
                        envelope::decode_error(&done.reply).unwrap().code.to_owned()
                    }
                    _ => String::from_utf8_lossy(&done.reply).into_owned(),
                };
                assert!(
                    said == code::TIMEOUT || said == "err:the caller's deadline passed",
                    "{said}"
                );
                release(&rt, done.reply_slot);
            }
            kinds.push(done.kind);
        }
        assert!(kinds.contains(&TANDEM_CQE_CALL_CANCEL));
        assert_eq!(rt.stats().calls_pending, 0);
        // Go's answer comes anyway: nobody waits, the slot is free again.
        answer_call(&rt, &call, TANDEM_OUTCOME_ACK, b"late");
        wait_until("the late reply's slot to be taken back", || {
            rt.stats().replies_lent == 0
        });
        assert_whole(&mut rt);
    }

    #[test]
    fn shutdown_cancels_pending_calls_and_go_takes_their_slots_back() {
        let mut rt = runtime();
        submit(&rt, 0, &caller_event("go.forever"));
        submit(&rt, 1, &caller_event("go.forever"));
        let calls = [next_completion(&rt), next_completion(&rt)];
        assert!(calls.iter().all(|c| c.kind == TANDEM_CQE_CALL));
        rt.shutdown(Duration::from_millis(20));
        let mut cancelled = 0;
        for _ in 0..4 {
            let done = next_completion(&rt);
            match done.kind {
                TANDEM_CQE_CALL_CANCEL => cancelled += 1,
                _ => {
                    let said = String::from_utf8_lossy(&done.reply).into_owned();
                    let code = envelope::decode_error(&done.reply).map(|e| e.code.to_owned());
                    assert!(
                        said == "err:the runtime is shutting down"
                            || code.as_deref() == Ok(code::CANCELLED),
                        "{said}"
                    );
                    release(&rt, done.reply_slot);
                }
            }
        }
        assert_eq!(cancelled, 2, "Go hears of both calls");
        // Go, stopped, releases what the calls lent instead of answering.
        release(&rt, calls[0].reply_slot);
        // Or answers anyway (a race with its shutdown): freed as well.
        answer_call(&rt, &calls[1], TANDEM_OUTCOME_ACK, b"late");
        assert_no_buffer_held(&rt);
    }

    #[test]
    fn calls_beyond_half_the_slots_fail_at_once_instead_of_waiting() {
        let mut rt = runtime(); // 4 request slots, 4 reply slots: 2 calls may wait on Go
        let calls: Vec<_> = (0..2)
            .map(|slot| {
                submit(&rt, slot, &caller_event("go.slow"));
                next_completion(&rt)
            })
            .collect();
        assert!(calls.iter().all(|c| c.kind == TANDEM_CQE_CALL));
        submit(&rt, 2, &caller_event("go.slow"));
        let refused = next_completion(&rt);
        assert_eq!(
            (refused.kind, String::from_utf8_lossy(&refused.reply)),
            (
                TANDEM_OUTCOME_ACK,
                "err:too many calls waiting on Go".into()
            ),
            "a third caller would hold a slot a callee may need"
        );
        release(&rt, refused.reply_slot);
        for call in &calls {
            answer_call(&rt, call, TANDEM_OUTCOME_ACK, b"done");
            let done = next_completion(&rt);
            assert_eq!(done.reply, b"ok:done");
            release(&rt, done.reply_slot);
        }
        assert_eq!(assert_whole(&mut rt).calls, 2);
    }

    #[test]
    fn go_cancels_a_callee_whose_caller_gave_up() {
        let mut rt = runtime();
        // A callee Go may cancel, with no deadline: only the cancel ends it.
        let mut callee = first_delivery();
        callee.cancellable = true;
        submit_delivery(&rt, 0, &envelope("forever", b""), 0, callee);
        wait_until("the callee to run", || {
            rt.shared.cancellable.lock().unwrap().len() == 1
        });
        cancel(&rt, 999); // a token Rust does not run: ignored
        cancel(&rt, 7 << 32);
        let done = next_completion(&rt);
        assert_eq!((done.kind, done.token), (TANDEM_OUTCOME_RETRY, 7 << 32));
        let err = envelope::decode_error(&done.reply).unwrap();
        assert_eq!(
            (err.code, err.message),
            (code::CANCELLED, "the caller gave up")
        );
        release(&rt, done.reply_slot);
        assert!(rt.shared.cancellable.lock().unwrap().is_empty());
        // A delivery not flagged cancellable is not registered, and a cancel does nothing.
        submit(&rt, 1, &envelope("echo", b"x"));
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"x");
        release(&rt, done.reply_slot);
        assert_eq!(assert_whole(&mut rt).violations, 0);
    }

    #[test]
    fn a_call_refused_before_it_crosses_sends_nothing() {
        struct Bad;
        impl Handler for Bad {
            async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
                let big = vec![b'x'; 4096];
                let too_large = cx.call(&ev.follow_up("echo", "x", &big)).await;
                let no_type = cx.call(&ev.follow_up("", "x", b"")).await;
                let said = format!("{:?} {:?}", too_large.err(), no_type.err());
                Outcome::Reply(said.into_bytes())
            }
        }
        let mut rt = runtime_with(|reg| {
            reg.register("bad", "bad", Bad);
        });
        submit(&rt, 0, &envelope("bad", b""));
        let done = next_completion(&rt);
        assert_eq!(
            String::from_utf8_lossy(&done.reply),
            format!(
                "{:?} {:?}",
                Some(CallError::TooLarge {
                    needed: envelope::encoded_len(&Envelope {
                        id: "x",
                        source: "/test",
                        ty: "echo",
                        specversion: "1.0",
                        data: &[b'x'; 4096],
                        correlationid: Some("1"),
                        causationid: Some("1"),
                        ..Envelope::default()
                    })
                }),
                Some(CallError::Invalid("a type"))
            )
        );
        release(&rt, done.reply_slot);
        assert_eq!(assert_whole(&mut rt).calls, 0);
    }
}
