//! The shared-memory layout both runtimes read: ring headers and descriptors.
//!
//! Every type here is `#[repr(C)]` and mirrored, field for field, by `ffi/tandem.h` (generated
//! from this file by cbindgen and checked by `tests/header.rs`). Atomics are `AtomicU64` and
//! `AtomicU32`, which have the size, alignment and bit validity of `u64` and `u32`, so C and Go
//! see plain integers; every access from either side is atomic.

use crate::sync::{AtomicU32, AtomicU64};

/// The ABI version of this build. A loader refuses a library whose version differs.
pub const TANDEM_ABI_VERSION: u32 = 6;

/// Size of one cache line on the targets tandem supports; indices sit on lines of their own.
pub const TANDEM_CACHE_LINE: usize = 64;

/// No slot: the `reply_slot` of a completion that carries no reply.
pub const TANDEM_NO_SLOT: u32 = u32::MAX;

/// A wake-probe ping of at least this value (2^32) stops the probe (`Runtime::start_wake_probe`,
/// behind tandem-native's bench-only `tandem_bench_wake_probe`): not ABI, so not in the header.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub const TANDEM_PROBE_STOP: u64 = 4_294_967_296;

/// In the result of `tandem_runtime_kick`: completions published during the call found Go's
/// poller parked, and the caller now holds the duty to consume the completion ring (or wake
/// its poller). The low 32 bits count the submission records the call consumed.
pub const TANDEM_KICK_GO_WAKE_OWED: i64 = 4_294_967_296;

/// In the result of `tandem_runtime_run`: the event's handler finished during the call, and
/// its completion record is in the caller's cell (`out`), not in the completion ring: the
/// caller settles the event from it as from a ring record, and the request slot it names is
/// Go's again. `TANDEM_KICK_GO_WAKE_OWED` may be set beside it, as for a kick.
pub const TANDEM_RUN_DONE: i64 = 1;

/// In the flags of `tandem_runtime_kick`: this crossing came sooner after the previous one
/// than the poller's spin window (a rate at which the poller would have stayed awake). The
/// caller measures the gap, with a clock reading it takes anyway.
pub const TANDEM_KICK_FREQUENT: u32 = 1;

/// In the flags of `tandem_runtime_kick`: the caller won no wake-up duty (another crossing is
/// in progress): drain what the call can, pop by pop while the consumer's role is free, and
/// neither re-arm nor hand over. Its event runs on the caller's thread instead of waiting for
/// the crossing in progress.
pub const TANDEM_KICK_HELP: u32 = 2;

/// In the flags of `tandem_runtime_kick`: the records come from one submitter's batch
/// (Go's `Runtime.Batch`), which crosses once for all of them. However many, they are not
/// concurrent submitters, so their number alone does not hand the ring to the poller.
pub const TANDEM_KICK_BATCH: u32 = 4;

/// Submission descriptor kind: an event in request slot `slot`: a `tandem_delivery` header,
/// then the envelope, `len` bytes.
pub const TANDEM_SQE_EVENT: u32 = 1;
/// Submission descriptor kind: Go hands reply slot `slot` back to Rust.
pub const TANDEM_SQE_RELEASE: u32 = 2;
/// Submission descriptor kind: the final outcome of a Rust handler's call
/// (`TANDEM_CQE_CALL`): `token` is the call's ID, `slot` the reply slot the call lent, handed
/// back holding the reply (`flags` `TANDEM_OUTCOME_ACK`) or the error envelope (`flags`
/// `TANDEM_OUTCOME_TERM`), `len` bytes. Rust owns the slot again from this record on, like a
/// `TANDEM_SQE_RELEASE`, and frees it once the caller drops the reply (at once when the caller
/// is gone). Go publishes it like an event: it wakes or crosses to a parked consumer.
pub const TANDEM_SQE_REPLY: u32 = 3;
/// Submission descriptor kind: the caller of the event Go published with `token` (a delivery
/// flagged `TANDEM_DELIVERY_CANCELLABLE`, the callee of a Rust handler's call) gave up. If its
/// handler is still running, Rust cancels it: its cancellation token fires, it is polled no
/// more, and it completes as retryable with code `cancelled` (Go retries it no more). A token
/// Rust no longer runs is ignored. Releases nothing; Go publishes it like an event.
pub const TANDEM_SQE_CANCEL: u32 = 4;

/// Completion outcome: the handler acknowledged the event; `reply_slot` may hold a reply.
pub const TANDEM_OUTCOME_ACK: u32 = 0;
/// Completion outcome: retry after `aux` nanoseconds; `reply_slot` holds an error envelope.
pub const TANDEM_OUTCOME_RETRY: u32 = 1;
/// Completion outcome: terminal failure, never retried; `reply_slot` holds an error envelope.
pub const TANDEM_OUTCOME_TERM: u32 = 2;
/// Completion kind: a Rust handler emitted an event: its envelope is in `reply_slot`
/// (`reply_len` bytes), lent to Go until a `TANDEM_SQE_RELEASE`; Go routes it like a
/// submitted one. `token` and `slot` are 0 and `TANDEM_NO_SLOT`: the record releases nothing.
/// With `flags` nonzero it is instead an event routed inside Rust that failed:
/// `flags` is its outcome (`TANDEM_OUTCOME_RETRY` or `_TERM`, retry delay in `aux`), the reply
/// slot holds its envelope (`len` bytes) followed by its error envelope, and Go retries or
/// dead-letters it.
pub const TANDEM_CQE_EMIT: u32 = 4;

/// Completion kind: a batch of Rust log records in `reply_slot` (`reply_len` bytes), lent to
/// Go until a `TANDEM_SQE_RELEASE`: a CBOR sequence of the count of records dropped since the
/// last batch, then one map per record {0: level (0 trace .. 4 error), 1: target, 2: message,
/// 3: time (Unix ns), 4: {field: value}}.
pub const TANDEM_CQE_LOG: u32 = 5;

/// Completion kind: a Rust handler calls (`Context::call`) and waits: `reply_slot` holds the
/// event's envelope (`reply_len` bytes), lent to Go until the `TANDEM_SQE_REPLY` with the
/// call's ID (`token`) hands it back with the final outcome; Go routes the event like a
/// submitted one, retries and dead letters included. With `flags` nonzero the event already
/// ran inside Rust (a local route) and failed:
/// as for `TANDEM_CQE_EMIT`, `flags` is its outcome, `aux` the retry delay, and the slot holds
/// its envelope (`len` bytes) followed by its error envelope. `slot` is `TANDEM_NO_SLOT`.
pub const TANDEM_CQE_CALL: u32 = 6;

/// Completion kind: the caller of call `token` stopped waiting (its future was dropped: its
/// deadline, shutdown, or a `select!` it lost). Go ends the callee's context and settles the
/// call without retrying it; the reply slot still comes back, with a `TANDEM_SQE_RELEASE` or a
/// `TANDEM_SQE_REPLY` Rust drops. Best effort: a record that finds the ring full may be lost,
/// and the callee's deadline (never later than the caller's) bounds it then. Releases nothing.
pub const TANDEM_CQE_CALL_CANCEL: u32 = 7;

/// Completion outcome: the handler is still working; extend the deadline by `aux` nanoseconds.
/// The request slot is not released by this record.
pub const TANDEM_OUTCOME_IN_PROGRESS: u32 = 3;

/// The indices of one ring: a producer cursor and a consumer cursor on cache lines of their own,
/// and the consumer's parked flag (io_uring's NEED_WAKEUP) on a third.
///
/// Owned by Rust (inside the shared region); valid from `tandem_runtime_create` until
/// `tandem_runtime_free`.
#[repr(C)]
pub struct tandem_ring_header {
    /// Next position a producer claims (compare-and-swap by producers).
    pub tail: AtomicU64,
    /// Padding to the end of the cache line.
    pub _pad_tail: [u64; 7],
    /// Next position the single consumer reads.
    pub head: AtomicU64,
    /// Padding to the end of the cache line.
    pub _pad_head: [u64; 7],
    /// 1 while the consumer is parked on its eventfd: the producer that turns it to 0 (by
    /// compare-and-swap) must see the ring consumed: write the eventfd, or cross
    /// (`tandem_runtime_kick`).
    pub parked: AtomicU32,
    /// Submission ring only: Rust writers waiting for a free reply slot. While it is 0 a
    /// release record (`TANDEM_SQE_RELEASE`) is lazy: its producer leaves a parked consumer
    /// asleep and the record is consumed with the next event, so handing a reply back at
    /// idle costs no call and no wake. While it is not 0 a release wakes the consumer like an
    /// event. Rust raises it (sequentially consistent) before it wakes the consumer and waits;
    /// Go reads it after pushing a release.
    pub hungry: AtomicU32,
    /// Padding to the end of the cache line.
    pub _pad_parked: [u32; 14],
}

/// One ring cell: a sequence number (Vyukov's bounded queue) and a fixed-size descriptor.
///
/// The producer that claimed position `p` fills the fields with relaxed stores, then publishes
/// with a release store `seq = p + 1`; the consumer reads them after an acquire load sees
/// `seq == p + 1`, then frees the cell with a release store `seq = p + capacity`.
#[repr(C)]
pub struct tandem_desc {
    /// Cell sequence number, see above.
    pub seq: AtomicU64,
    /// The submitter's token, echoed unchanged in the completion.
    pub token: AtomicU64,
    /// Submission: `TANDEM_SQE_*`. Completion: `TANDEM_OUTCOME_*`.
    pub kind: AtomicU32,
    /// Submission event: the request slot. Submission release: the reply slot returned.
    /// Completion: the request slot this record releases back to Go.
    pub slot: AtomicU32,
    /// Submission event: envelope length in bytes (the `tandem_delivery` header before it not
    /// counted).
    pub len: AtomicU32,
    /// Submission event: 0 to route by the envelope's type, or 1 + the index of the handler to
    /// run (in `tandem_event_types` order), so Go's routing table (wildcards, aliases) picks
    /// it. Completion: reserved (0).
    pub flags: AtomicU32,
    /// Completion: reply slot (reply payload on ACK, error envelope on RETRY/TERM) or
    /// `TANDEM_NO_SLOT`. Ownership of that slot passes to Go until a `TANDEM_SQE_RELEASE`.
    pub reply_slot: AtomicU32,
    /// Completion: bytes used in `reply_slot`.
    pub reply_len: AtomicU32,
    /// Completion: handler start, Unix nanoseconds (0 when no handler ran).
    pub started_ns: AtomicU64,
    /// Completion: handler end, Unix nanoseconds.
    pub finished_ns: AtomicU64,
    /// Completion: RETRY: delay in nanoseconds; IN_PROGRESS: deadline extension in nanoseconds.
    pub aux: AtomicU64,
}

/// Per-delivery facts Go writes at the start of a request slot, beside the envelope (which
/// follows at offset sizeof(tandem_delivery) and is never rewritten between deliveries).
#[repr(C)]
pub struct tandem_delivery {
    /// The delivery's deadline, Unix nanoseconds; 0: none. Authoritative over the envelope's.
    pub deadline_ns: u64,
    /// The delivery number, from 1. Authoritative over the envelope's attempt.
    pub attempt: u32,
    /// `TANDEM_DELIVERY_*` bits; the others are reserved, 0.
    pub flags: u32,
    /// Where the envelope's fields lie, written with the envelope (not per delivery).
    pub fields: tandem_fields,
}

/// The fields of the envelope in a request slot as its writer laid them out, so that the
/// reader finds each one without parsing the CBOR: Go's encoder records them as it writes
/// the envelope, at no cost it would not pay anyway. The envelope stays the event's bytes;
/// this only says where its items are. A reader checks every span against the envelope's
/// length and every text span for UTF-8, and decodes the envelope itself when the index is
/// absent (`present` 0) or does not hold.
#[repr(C)]
pub struct tandem_fields {
    /// Bit k: the envelope holds its key k (`TANDEM_KEY_*` numbering, 0 to 18); 0: no index,
    /// the envelope is to be decoded. Bit 0 (the version) is set in every index.
    pub present: u32,
    /// Key 13, the attempt the envelope carries, when present.
    pub attempt: u32,
    /// Key 5, the event's time in Unix nanoseconds, when present.
    pub time: i64,
    /// Key 14, the envelope's deadline in Unix nanoseconds, when present.
    pub deadline: i64,
    /// By key: the field's bytes in the envelope, for each text key (a string's UTF-8 bytes,
    /// after its head), for data (key 18, the payload after its head) and for extensions (key
    /// 17, the whole map item, head included). Unused for keys 0, 5, 13 and 14.
    pub at: [tandem_span; 19],
}

/// A byte range of an envelope: `len` bytes from offset `off`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct tandem_span {
    /// Where the range starts, from the envelope's first byte.
    pub off: u32,
    /// How many bytes it holds.
    pub len: u32,
}

/// In `tandem_delivery.flags`: the submitter blocks until this delivery's outcome (a Call).
/// A crossing (`tandem_runtime_kick`) may then run the handler on the submitter's thread until
/// its first wait, whether it was registered inline or as a task: that thread waits anyway,
/// and a task would cost a thread wake.
pub const TANDEM_DELIVERY_WAITED: u32 = 1;

/// In `tandem_delivery.flags`: Go records this delivery's handler time (metrics or tracing
/// are on): the completion carries `started_ns` and `finished_ns`. Without it they are 0 and
/// the handler runs with no clock read.
pub const TANDEM_DELIVERY_TIMED: u32 = 2;

/// In `tandem_delivery.flags`: this delivery is a shadow's copy of an event (Go compares its
/// result with the primary's and discards it). The handler runs as ever, but the events it
/// emits are discarded: a shadow must not send follow-ups the primary sends too.
/// `Context::is_shadow` tells the handler, which may skip other side effects.
pub const TANDEM_DELIVERY_SHADOW: u32 = 8;
/// In `tandem_delivery.flags`: Go may cancel this delivery with a `TANDEM_SQE_CANCEL` naming its
/// token (the callee of a Rust handler's call, whose caller may give up).
pub const TANDEM_DELIVERY_CANCELLABLE: u32 = 4;

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<tandem_desc>() == TANDEM_CACHE_LINE);
const _: () = assert!(core::mem::size_of::<tandem_delivery>() == 192);
const _: () = assert!(core::mem::size_of::<tandem_fields>() == 176);
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<tandem_ring_header>() == 3 * TANDEM_CACHE_LINE);
