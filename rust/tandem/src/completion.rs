//! Reply-slot lending and completion publishing.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::envelope::{self, ErrorEnvelope};
use crate::handler::{Context, HandlerError, Outcome};
use crate::layout::*;
use crate::shared::*;
use crate::sync::Ordering;

pub(crate) fn error_bytes(error: &HandlerError, handler: &str) -> Vec<u8> {
    let env = error_envelope(error, handler);
    let mut out = vec![0u8; envelope::error_encoded_len(&env)];
    let n = envelope::encode_error_into(&env, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

pub(crate) fn error_envelope<'a>(error: &'a HandlerError, handler: &'a str) -> ErrorEnvelope<'a> {
    ErrorEnvelope {
        code: &error.code,
        message: &error.message,
        retry: error.retry,
        runtime: "rust",
        handler,
    }
}

impl Shared {
    /// # Safety
    /// Rust must own request slot `slot` for as long as the returned slice is used.
    pub(crate) unsafe fn request_bytes<'a>(&self, slot: u32, len: u32) -> &'a [u8] {
        let off = self.layout.req_arena + slot as usize * self.layout.req_stride;
        // SAFETY: slot < req_slots and len <= req_slot_size were checked, so the range lies in
        // the region; Go wrote it before publishing the descriptor (release/acquire on seq) and
        // does not touch it until the completion hands it back.
        unsafe { std::slice::from_raw_parts(self.region.base().add(off), len as usize) }
    }

    /// # Safety
    /// Rust must own reply slot `slot` (taken from the free list, not yet published).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn reply_buf<'a>(&self, slot: u32) -> &'a mut [u8] {
        let off = self.layout.rep_arena + slot as usize * self.layout.rep_stride;
        // SAFETY: slot < rep_slots; the slot is exclusively ours until published.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.region.base().add(off),
                self.cfg.rep_slot_size as usize,
            )
        }
    }

    pub(crate) fn release_reply(&self, slot: u32) {
        if slot >= self.cfg.rep_slots
            || self.rep_owner[slot as usize].swap(OWNER_RUST, Ordering::AcqRel) != OWNER_GO
        {
            self.counters.violations.fetch_add(1, Relaxed);
            return;
        }
        self.rep_free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
        self.counters.replies_lent.fetch_sub(1, Relaxed);
        self.counters.releases.fetch_add(1, Relaxed);
        self.rep_permits.add_permits(1);
    }

    /// Takes a reply slot, waiting (without blocking a thread) while all are lent to Go.
    pub(crate) async fn take_reply_slot(&self) -> u32 {
        match self.rep_permits.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => unreachable!("the reply semaphore is never closed"),
        }
        self.rep_free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .expect("a permit guarantees a free reply slot")
    }

    /// Writes the outcome's reply or error envelope into a reply slot, hands the request slot
    /// back to Go and publishes the completion, waking Go if it is parked.
    pub(crate) async fn complete(
        &self,
        token: u64,
        slot: u32,
        outcome: Outcome,
        handler: &str,
        started: u64,
        finished: u64,
    ) {
        let (mut kind, aux) = match &outcome {
            Outcome::Ack | Outcome::Reply(_) => (TANDEM_OUTCOME_ACK, 0),
            Outcome::Retry { after, .. } => (
                TANDEM_OUTCOME_RETRY,
                after.as_nanos().min(u64::MAX as u128) as u64,
            ),
            Outcome::Term(_) => (TANDEM_OUTCOME_TERM, 0),
        };
        let mut reply = (TANDEM_NO_SLOT, 0u32);
        let payload_len = match &outcome {
            Outcome::Reply(v) if !v.is_empty() => Some(v.len()),
            Outcome::Retry { .. } | Outcome::Term(_) => Some(0),
            _ => None,
        };
        if payload_len.is_some() {
            let rs = self.take_reply_slot().await;
            // SAFETY: `rs` came off the free list, so Rust owns it until published below.
            let buf = unsafe { self.reply_buf(rs) };
            let written = match &outcome {
                Outcome::Reply(v) if v.len() <= buf.len() => {
                    buf[..v.len()].copy_from_slice(v);
                    v.len()
                }
                Outcome::Reply(v) => {
                    kind = TANDEM_OUTCOME_TERM;
                    let e = HandlerError::with_code(
                        "reply_too_large",
                        format!(
                            "reply of {} bytes exceeds the {}-byte reply slot",
                            v.len(),
                            buf.len()
                        ),
                    );
                    write_error(buf, &e, handler)
                }
                Outcome::Retry { error, .. } | Outcome::Term(error) => {
                    write_error(buf, error, handler)
                }
                Outcome::Ack => 0,
            };
            self.rep_owner[rs as usize].store(OWNER_GO, Ordering::Release);
            self.counters.replies_lent.fetch_add(1, Relaxed);
            reply = (rs, written as u32);
        }
        if self.req_owner[slot as usize].swap(OWNER_GO, Ordering::AcqRel) != OWNER_RUST {
            self.counters.violations.fetch_add(1, Relaxed);
        }
        self.counters.requests_held.fetch_sub(1, Relaxed);
        self.publish_completion(token, kind, slot, reply, started, finished, aux, (0, 0))
            .await;
        self.counters.completed.fetch_add(1, Relaxed);
    }

    /// Publishes one completion record and wakes Go if its poller is parked.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn publish_completion(
        &self,
        token: u64,
        kind: u32,
        slot: u32,
        reply: (u32, u32),
        started: u64,
        finished: u64,
        aux: u64,
        len_flags: (u32, u32),
    ) {
        loop {
            let pushed = self.cq.push(|d| {
                d.token.store(token, Ordering::Relaxed);
                d.kind.store(kind, Ordering::Relaxed);
                d.slot.store(slot, Ordering::Relaxed);
                d.len.store(len_flags.0, Ordering::Relaxed);
                d.flags.store(len_flags.1, Ordering::Relaxed);
                d.reply_slot.store(reply.0, Ordering::Relaxed);
                d.reply_len.store(reply.1, Ordering::Relaxed);
                d.started_ns.store(started, Ordering::Relaxed);
                d.finished_ns.store(finished, Ordering::Relaxed);
                d.aux.store(aux, Ordering::Relaxed);
            });
            if pushed {
                break;
            }
            // Completions alone never fill the ring (cq_capacity >= req_slots); emitted events
            // can, and then wait here for Go's poller, which never waits on Rust.
            tokio::task::yield_now().await;
        }
        if self.cq.take_wakeup() {
            self.counters.go_wakeups.fetch_add(1, Relaxed);
            self.wake_go.signal();
        }
    }
}

impl Context {
    /// Tells the runtime the handler is still working: pushes the event's deadline back to
    /// `extend` from now (never earlier than it was), and tells Go with a progress record.
    /// Without a deadline (no route timeout, none from the submitter) there is nothing to
    /// extend and only the record is sent.
    pub async fn in_progress(&self, extend: Duration) {
        if let Some(deadline) = &self.deadline {
            let until =
                (now_ns() as i64).saturating_add(extend.as_nanos().min(i64::MAX as u128) as i64);
            deadline.fetch_max(until, Relaxed);
        }
        if self.token != 0 {
            let aux = extend.as_nanos().min(u64::MAX as u128) as u64;
            self.shared
                .publish_completion(
                    self.token,
                    TANDEM_OUTCOME_IN_PROGRESS,
                    TANDEM_NO_SLOT,
                    (TANDEM_NO_SLOT, 0),
                    0,
                    0,
                    aux,
                    (0, 0),
                )
                .await;
        }
    }

    /// Emits a follow-up event (see [`Event::follow_up`]): it goes to Go in a reply slot on
    /// the completion ring, and Go routes it like a submitted one, to a handler in either
    /// runtime, with retries and dead letters. Waits (without blocking a thread) while every
    /// reply slot is lent to Go: emitters are throttled, never dropped. Returns once the event
    /// is published.
    pub async fn emit(&self, ev: &envelope::Envelope<'_>) -> Result<(), crate::handler::EmitError> {
        use crate::handler::EmitError;
        for (what, v) in [("an id", ev.id), ("a source", ev.source), ("a type", ev.ty)] {
            if v.is_empty() {
                return Err(EmitError::Invalid(what));
            }
        }
        let sh = &self.shared;
        let needed = envelope::encoded_len(ev);
        if needed > sh.cfg.rep_slot_size as usize {
            return Err(EmitError::TooLarge { needed });
        }
        if let Some(&index) = sh.local.get().and_then(|m| m.get(ev.ty)) {
            sh.dispatch_local(ev, index);
            return Ok(());
        }
        let rs = sh.take_reply_slot().await;
        // SAFETY: `rs` came off the free list, so Rust owns it until published below.
        let buf = unsafe { sh.reply_buf(rs) };
        let n = envelope::encode_into(ev, buf).unwrap_or(0);
        sh.rep_owner[rs as usize].store(OWNER_GO, Ordering::Release);
        sh.counters.replies_lent.fetch_add(1, Relaxed);
        sh.counters.emitted.fetch_add(1, Relaxed);
        sh.publish_completion(
            0,
            TANDEM_CQE_EMIT,
            TANDEM_NO_SLOT,
            (rs, n as u32),
            0,
            0,
            0,
            (0, 0),
        )
        .await;
        Ok(())
    }
}
/// Encodes an error envelope into a reply slot, shortening the message if it does not fit.
pub(crate) fn write_error(buf: &mut [u8], error: &HandlerError, handler: &str) -> usize {
    let mut env = error_envelope(error, handler);
    loop {
        if let Ok(n) = envelope::encode_error_into(&env, buf) {
            return n;
        }
        if env.message.is_empty() {
            env.handler = "";
            return envelope::encode_error_into(&env, buf).unwrap_or(0);
        }
        let mut cut = env.message.len() / 2;
        while !env.message.is_char_boundary(cut) {
            cut -= 1;
        }
        env.message = &env.message[..cut];
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    pub(crate) fn emitted_events_reach_go_before_their_parents_completion() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("fork", b"payload"));
        let mut ids = Vec::new();
        for _ in 0..3 {
            let done = next_completion(&rt);
            assert_eq!(done.kind, TANDEM_CQE_EMIT);
            assert_eq!(
                done.slot, TANDEM_NO_SLOT,
                "an emit record releases no request slot"
            );
            let child = envelope::decode(&done.reply).expect("emitted envelope");
            assert_eq!((child.ty, child.data), ("child", &b"payload"[..]));
            assert_eq!(
                (child.causationid, child.correlationid),
                (Some("1"), Some("1"))
            );
            ids.push(child.id.to_owned());
            release(&rt, done.reply_slot);
        }
        assert_eq!(ids, ["1/0", "1/1", "1/2"]);
        let done = next_completion(&rt);
        assert_eq!((done.kind, done.slot), (TANDEM_OUTCOME_ACK, 0));
        let st = assert_whole(&mut rt);
        assert_eq!((st.emitted, st.releases), (3, 3));
    }

    #[test]
    pub(crate) fn in_progress_pushes_the_deadline_back_and_tells_go() {
        let mut rt = runtime();
        // 3 × 20 ms of work against a 30 ms deadline, extended by 60 ms after each step.
        submit(&rt, 0, &with_deadline("patient", 30));
        for _ in 0..3 {
            let done = next_completion(&rt);
            assert_eq!(done.kind, TANDEM_OUTCOME_IN_PROGRESS);
            assert_eq!(done.token, 7 << 32, "the progress record names the event");
        }
        assert_eq!(next_completion(&rt).kind, TANDEM_OUTCOME_ACK);
        assert_whole(&mut rt);
    }
}
