//! Go's part of the ring protocol, played from Rust: an envelope written into a request slot
//! and published, completions taken from the completion ring, reply slots released. The
//! crate's tests drive the runtime with it, and so does the conformance harness (feature
//! `conform`), which judges handlers without Go.

use crate::layout::*;
use crate::runtime::Runtime;
use crate::slots::Delivery;
use crate::sync::Ordering;

/// Writes the header and the envelope into request slot `slot` and pushes its descriptor, as
/// Go publishes, without the wake-up that follows.
pub(crate) fn push_event(rt: &Runtime, slot: u32, bytes: &[u8], route: u32, delivery: Delivery) {
    let s = &rt.shared;
    s.completions.requests.write_as_go(slot, delivery, bytes);
    assert!(s.sq.push(|d| {
        d.kind.store(TANDEM_SQE_EVENT, Ordering::Relaxed);
        d.slot.store(slot, Ordering::Relaxed);
        d.len.store(bytes.len() as u32, Ordering::Relaxed);
        d.token.store(u64::from(slot) | 7 << 32, Ordering::Relaxed);
        d.flags.store(route, Ordering::Relaxed);
    }));
}

/// Publishes `bytes` in request slot `slot` as Go does, with the delivery header beside
/// them, routed to handler `route` (1 + its index in event-type order; 0: by type), and
/// wakes the poller if it sleeps.
pub(crate) fn submit_delivery(
    rt: &Runtime,
    slot: u32,
    bytes: &[u8],
    route: u32,
    delivery: Delivery,
) {
    push_event(rt, slot, bytes, route, delivery);
    if rt.shared.sq.take_wakeup() {
        rt.shared.wake_rust.signal();
    }
}

/// Gives reply slot `reply_slot` back, as Go releases, waking the poller if it sleeps.
pub(crate) fn release(rt: &Runtime, reply_slot: u32) {
    let s = &rt.shared;
    assert!(s.sq.push(|d| {
        d.kind.store(TANDEM_SQE_RELEASE, Ordering::Relaxed);
        d.slot.store(reply_slot, Ordering::Relaxed);
    }));
    if s.sq.take_wakeup() {
        s.wake_rust.signal();
    }
}

/// One completion record as Go reads it, its reply (or error envelope) copied out.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Done {
    pub(crate) kind: u32,
    pub(crate) slot: u32,
    pub(crate) token: u64,
    pub(crate) reply_slot: u32,
    pub(crate) reply: Vec<u8>,
    pub(crate) len: u32,
    pub(crate) flags: u32,
}

/// The next completion record, if one is waiting.
pub(crate) fn try_completion(rt: &Runtime) -> Option<Done> {
    let s = &rt.shared;
    let (kind, slot, token, reply_slot, len, elen, flags) = s.completions.ring().pop(|d| {
        (
            d.kind.load(Ordering::Relaxed),
            d.slot.load(Ordering::Relaxed),
            d.token.load(Ordering::Relaxed),
            d.reply_slot.load(Ordering::Relaxed),
            d.reply_len.load(Ordering::Relaxed),
            d.len.load(Ordering::Relaxed),
            d.flags.load(Ordering::Relaxed),
        )
    })?;
    let reply = if reply_slot == TANDEM_NO_SLOT {
        Vec::new()
    } else {
        s.completions.replies.read_as_go(reply_slot, len)
    };
    Some(Done {
        kind,
        slot,
        token,
        reply_slot,
        reply,
        len: elen,
        flags,
    })
}
