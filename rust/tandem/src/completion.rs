//! The completion ring's one producer path: every record Rust publishes (a handler's outcome,
//! a progress record, an emitted event, a local event's failure, a log batch) is a
//! [`Completion`] value, and [`Completions::publish`] is the only code that writes one into
//! the ring.

use std::cell::Cell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::calls::Calls;
use crate::code;
use crate::envelope::{self, Envelope, ErrorEnvelope};
use crate::layout::{
    TANDEM_CQE_CALL, TANDEM_CQE_CALL_CANCEL, TANDEM_CQE_EMIT, TANDEM_CQE_LOG, TANDEM_NO_SLOT,
    TANDEM_OUTCOME_ACK, TANDEM_OUTCOME_IN_PROGRESS, TANDEM_OUTCOME_RETRY, TANDEM_OUTCOME_TERM,
};
use crate::outcome::{EmitError, HandlerError, Outcome};
use crate::reply::{CallError, CallFailure, Reply};
use crate::ring::Ring;
use crate::slots::{LentReply, ReplySlots, ReplyWriter, RequestSlot, RequestSlots, ReturnedReply};
use crate::stats::Counters;
use crate::sync::Ordering;
use crate::wake::EventFd;

/// Unix time in nanoseconds, the unit of deadlines and of the completions' timestamps.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn saturating_ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

thread_local! {
    /// Set while a [`DeferGoWake`] lives on this thread: 0 not deferring; 1 deferring; 2
    /// deferring, and a wake is owed.
    static DEFERRING: Cell<u8> = const { Cell::new(0) };
}

/// While it lives, completions published on this thread that win the duty to wake Go's
/// parked poller leave the duty to the caller instead of writing the eventfd (a kick's
/// caller, which consumes the completion ring itself: crate::kick).
pub(crate) struct DeferGoWake(());

impl DeferGoWake {
    pub(crate) fn begin() -> DeferGoWake {
        DEFERRING.with(|k| k.set(1));
        DeferGoWake(())
    }

    /// Whether a completion published meanwhile left the wake to the caller.
    pub(crate) fn owed(&self) -> bool {
        DEFERRING.with(|k| k.get() == 2)
    }
}

impl Drop for DeferGoWake {
    fn drop(&mut self) {
        DEFERRING.with(|k| k.set(0));
    }
}

/// Called by `publish` when it won the duty to wake Go's poller: true if a [`DeferGoWake`]
/// on this thread takes the duty instead.
fn defer_go_wake() -> bool {
    DEFERRING.with(|k| {
        if k.get() == 0 {
            return false;
        }
        k.set(2);
        true
    })
}

/// One completion record, built per kind of outcome and consumed by [`Completions::publish`].
#[must_use = "a completion does nothing until published"]
pub(crate) struct Completion {
    token: u64,
    kind: u32,
    /// The request slot this record hands back to Go.
    request: Option<RequestSlot>,
    reply: Option<LentReply>,
    started_ns: u64,
    finished_ns: u64,
    aux: u64,
    /// A forwarded local event: its envelope's length, and its outcome.
    event_len: u32,
    flags: u32,
}

impl Completion {
    fn new(kind: u32) -> Completion {
        Completion {
            token: 0,
            kind,
            request: None,
            reply: None,
            started_ns: 0,
            finished_ns: 0,
            aux: 0,
            event_len: 0,
            flags: 0,
        }
    }

    /// The handler is still working on the event of `token`: extend its deadline by
    /// `extend`. Releases nothing.
    pub(crate) fn progress(token: u64, extend: Duration) -> Completion {
        Completion {
            token,
            aux: saturating_ns(extend),
            ..Completion::new(TANDEM_OUTCOME_IN_PROGRESS)
        }
    }

    /// An event a handler emitted, in `reply`, for Go to route.
    pub(crate) fn emitted(reply: LentReply) -> Completion {
        Completion {
            reply: Some(reply),
            ..Completion::new(TANDEM_CQE_EMIT)
        }
    }

    /// A batch of log records in `reply`.
    pub(crate) fn logs(reply: LentReply) -> Completion {
        Completion {
            reply: Some(reply),
            ..Completion::new(TANDEM_CQE_LOG)
        }
    }

    /// An event routed inside Rust that failed: `reply` holds its envelope (`event_len`
    /// bytes) followed by its error envelope; Go retries or dead-letters it.
    pub(crate) fn forwarded(reply: LentReply, event_len: u32, run: &Finished<'_>) -> Completion {
        let (outcome, aux) = run.kind_and_aux();
        Completion {
            reply: Some(reply),
            event_len,
            flags: outcome,
            aux,
            started_ns: run.started_ns,
            finished_ns: run.finished_ns,
            ..Completion::new(TANDEM_CQE_EMIT)
        }
    }
}

/// A completion record's fields (`tandem_desc` but its sequence number), as the runtime
/// writes them into a completion ring cell, or into the caller's cell when a run hands its
/// event's completion back with the call ([`Runtime::run`](crate::Runtime::run)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The submitter's token.
    pub token: u64,
    /// `TANDEM_OUTCOME_*` or `TANDEM_CQE_*`.
    pub kind: u32,
    /// The request slot handed back to Go, or `TANDEM_NO_SLOT`.
    pub slot: u32,
    /// A forwarded local event's envelope length.
    pub len: u32,
    /// A forwarded local event's outcome.
    pub flags: u32,
    /// The reply slot lent to Go, or `TANDEM_NO_SLOT`.
    pub reply_slot: u32,
    /// Bytes used in `reply_slot`.
    pub reply_len: u32,
    /// Handler start, Unix nanoseconds (0: not timed).
    pub started_ns: u64,
    /// Handler end, Unix nanoseconds.
    pub finished_ns: u64,
    /// A retry's delay, or a progress record's extension, in nanoseconds.
    pub aux: u64,
}

impl Record {
    /// Writes the fields into cell `d` (relaxed: the ring's sequence number, or the return of
    /// the call that wrote them, publishes them).
    pub(crate) fn write(&self, d: &crate::layout::tandem_desc) {
        d.token.store(self.token, Ordering::Relaxed);
        d.kind.store(self.kind, Ordering::Relaxed);
        d.slot.store(self.slot, Ordering::Relaxed);
        d.len.store(self.len, Ordering::Relaxed);
        d.flags.store(self.flags, Ordering::Relaxed);
        d.reply_slot.store(self.reply_slot, Ordering::Relaxed);
        d.reply_len.store(self.reply_len, Ordering::Relaxed);
        d.started_ns.store(self.started_ns, Ordering::Relaxed);
        d.finished_ns.store(self.finished_ns, Ordering::Relaxed);
        d.aux.store(self.aux, Ordering::Relaxed);
    }

    /// Whether this is an event's final record: its outcome, handing its request slot back.
    fn is_final(&self) -> bool {
        self.slot != TANDEM_NO_SLOT
            && matches!(
                self.kind,
                TANDEM_OUTCOME_ACK | TANDEM_OUTCOME_RETRY | TANDEM_OUTCOME_TERM
            )
    }
}

/// What a [`Run`] has seen of the records published on its thread.
#[derive(Clone, Copy)]
enum Caught {
    /// No run on this thread.
    Off,
    /// Waiting for the final record of the event with this token.
    Awaiting(u64),
    /// Another record went into the ring first (an emitted event, a log batch, a call): the
    /// final one must follow it there, so that Go reads them in the order they were made.
    Spoiled,
    /// The final record, for the run's caller.
    Final(Record),
}

thread_local! {
    static CAUGHT: Cell<Caught> = const { Cell::new(Caught::Off) };
}

/// While it lives, the final record of the event with its token, published on this thread
/// before any other record, is kept for the caller instead of pushed into the completion ring
/// (crate::kick::run): a Go caller that ran its own event settles it from the call's return,
/// with no ring cell, no consumer's role and no wake on either side. Any other record
/// published meanwhile goes into the ring, and so does the final record after it.
pub(crate) struct Run(());

impl Run {
    pub(crate) fn begin(token: u64) -> Run {
        CAUGHT.with(|k| k.set(Caught::Awaiting(token)));
        Run(())
    }

    /// The final record, if it was kept.
    pub(crate) fn finish(self) -> Option<Record> {
        match CAUGHT.with(|k| k.replace(Caught::Off)) {
            Caught::Final(r) => Some(r),
            _ => None,
        }
    }

    /// Called by `publish` for every record: true if a run on this thread keeps it.
    fn caught(r: &Record) -> bool {
        CAUGHT
            .try_with(|k| match k.get() {
                Caught::Awaiting(token) if token == r.token && r.is_final() => {
                    k.set(Caught::Final(*r));
                    true
                }
                Caught::Awaiting(_) => {
                    k.set(Caught::Spoiled);
                    false
                }
                _ => false,
            })
            .unwrap_or(false)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = CAUGHT.try_with(|k| k.set(Caught::Off));
    }
}

/// A handler's run, as a completion reports it.
pub(crate) struct Finished<'a> {
    pub(crate) outcome: Outcome,
    /// The handler's name ("" when none ran), borrowed from its route.
    pub(crate) handler: &'a str,
    pub(crate) started_ns: u64,
    pub(crate) finished_ns: u64,
}

impl Finished<'_> {
    /// The record's outcome code and its `aux` (the retry delay).
    fn kind_and_aux(&self) -> (u32, u64) {
        match &self.outcome {
            Outcome::Ack | Outcome::Reply(_) => (TANDEM_OUTCOME_ACK, 0),
            Outcome::Retry { after, .. } => (TANDEM_OUTCOME_RETRY, saturating_ns(*after)),
            Outcome::Term(_) => (TANDEM_OUTCOME_TERM, 0),
        }
    }
}

/// One writer waiting for a reply slot, counted in the submission ring's header for as long
/// as it waits (also when its future is dropped).
struct Hungry<'a>(&'a Ring);

impl<'a> Hungry<'a> {
    fn new(sq: &'a Ring) -> Hungry<'a> {
        sq.hunger();
        Hungry(sq)
    }
}

impl Drop for Hungry<'_> {
    fn drop(&mut self) {
        self.0.fed();
    }
}

/// The completion record of a finished event in request slot `slot`: its reply, or its
/// error envelope, written into `w` (the reply slot taken for it, if it needs one).
fn completion_of(slot: RequestSlot, run: &Finished<'_>, w: Option<ReplyWriter<'_>>) -> Completion {
    let token = slot.token();
    let (mut kind, aux) = run.kind_and_aux();
    let reply = w.map(|mut w| {
        let buf = w.buf();
        let n = match &run.outcome {
            Outcome::Reply(v) if v.len() <= buf.len() => {
                buf[..v.len()].copy_from_slice(v);
                v.len()
            }
            Outcome::Reply(v) => {
                kind = TANDEM_OUTCOME_TERM;
                let e = HandlerError::with_code(
                    code::REPLY_TOO_LARGE,
                    format!(
                        "reply of {} bytes exceeds the {}-byte reply slot",
                        v.len(),
                        buf.len()
                    ),
                );
                write_error(buf, &e, run.handler)
            }
            Outcome::Retry { error, .. } | Outcome::Term(error) => {
                write_error(buf, error, run.handler)
            }
            Outcome::Ack => 0,
        };
        w.lend(n)
    });
    Completion {
        token,
        request: Some(slot),
        reply,
        started_ns: run.started_ns,
        finished_ns: run.finished_ns,
        aux,
        ..Completion::new(kind)
    }
}

/// Routes emitted events to a Rust handler without a trip through Go; implemented by the
/// runtime, held weakly so the completions do not keep the runtime alive.
pub(crate) trait LocalDispatch: Send + Sync {
    /// Runs `ev` in the handler at `index` (1 + its place in event-type order).
    fn dispatch(self: Arc<Self>, ev: &Envelope<'_>, index: u32);

    /// Runs the event encoded in `bytes` in the handler at `index`, in the caller's task,
    /// and returns how it ended (a call routed inside Rust).
    fn call<'a>(
        &'a self,
        bytes: &'a [u8],
        index: u32,
    ) -> std::pin::Pin<Box<dyn Future<Output = Finished<'a>> + Send + 'a>>;
}

/// A call's outcome as Go hands it back: the reply slot, and whether it holds the reply
/// (`TANDEM_OUTCOME_ACK`) or an error envelope.
pub(crate) struct CallOutcome {
    slot: ReturnedReply,
    outcome: u32,
}

/// The event types whose emitted events stay in Rust, and the handler each goes to.
pub(crate) struct LocalRoutes {
    pub(crate) by_type: HashMap<String, u32>,
    pub(crate) to: Weak<dyn LocalDispatch>,
}

/// The completion ring with the reply slots its records lend and the request slots they hand
/// back. Shared by every task of a runtime (`&self` methods, safe from any thread).
pub(crate) struct Completions {
    cq: Ring,
    wake_go: EventFd,
    /// The submission ring and its consumer's eventfd, for a writer waiting on a reply slot:
    /// Go's releases come back through that ring.
    sq: Ring,
    wake_rust: Arc<EventFd>,
    /// The runtime's cancellation token: what a handler's context watches when its event
    /// has no deadline (and so no token of its own).
    cancel: CancellationToken,
    pub(crate) requests: Arc<RequestSlots>,
    pub(crate) replies: Arc<ReplySlots>,
    counters: Arc<Counters>,
    /// Replaced whole by Go whenever a route's targets change; read by every emit and call.
    local: RwLock<Option<LocalRoutes>>,
    /// The calls waiting for their outcome from Go.
    calls: Calls<CallOutcome>,
    /// Bounds the calls waiting on Go to half the request slots and half the reply slots. A
    /// waiting caller holds its request slot and the call's reply slot; a callee through Go
    /// needs a request slot of its own (a Rust route) and a reply slot (its reply): with half
    /// of each left to events that finish by themselves, callees always get theirs.
    call_permits: tokio::sync::Semaphore,
}

impl Completions {
    pub(crate) fn new(
        cq: Ring,
        wake_go: EventFd,
        (sq, wake_rust): (Ring, Arc<EventFd>),
        cancel: CancellationToken,
        requests: RequestSlots,
        replies: ReplySlots,
        counters: Arc<Counters>,
    ) -> Completions {
        let call_permits =
            tokio::sync::Semaphore::new((replies.count().min(requests.count()) / 2).max(1));
        Completions {
            calls: Calls::new(),
            call_permits,
            cq,
            wake_go,
            sq,
            wake_rust,
            cancel,
            requests: Arc::new(requests),
            replies: Arc::new(replies),
            counters,
            local: RwLock::new(None),
        }
    }

    /// The runtime's cancellation token.
    pub(crate) fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    pub(crate) fn wake_go(&self) -> &EventFd {
        &self.wake_go
    }

    pub(crate) fn depth(&self) -> u64 {
        self.cq.len()
    }

    /// Whether Go's completion poller is parked (a snapshot).
    pub(crate) fn go_parked(&self) -> bool {
        self.cq.is_parked()
    }

    /// The completion ring, for tests and the conformance harness playing Go's poller.
    #[cfg(all(not(loom), any(test, feature = "conform")))]
    pub(crate) fn ring(&self) -> &Ring {
        &self.cq
    }

    /// Replaces the local routes. It returns once no emit is dispatching by the old set (an
    /// emit holds the read lock from its look-up until its task is spawned): every emit
    /// after it goes by the new one, and the dispatches already made finish where they are.
    pub(crate) fn set_local(&self, routes: LocalRoutes) {
        // A panic cannot poison the lock: nothing in its sections panics short of an
        // allocation failure, which aborts. Recover the value anyway.
        *self.local.write().unwrap_or_else(|e| e.into_inner()) = Some(routes);
    }

    /// Takes a reply slot to write into, waiting while every slot is lent to Go. Go hands a
    /// slot back lazily while no writer waits (its release record stays in the submission
    /// ring until the next event), so a writer about to wait says so in the ring's header
    /// (`hungry`: from then on every release wakes the consumer) and wakes the consumer for
    /// the releases already there.
    pub(crate) async fn reply(&self) -> ReplyWriter<'_> {
        if let Some(w) = self.replies.try_take() {
            return w;
        }
        let _hungry = Hungry::new(&self.sq);
        if self.sq.take_wakeup() {
            self.wake_rust.signal();
        }
        self.replies.take().await
    }

    /// Publishes one record: hands its request slot back to Go, pushes it, and wakes Go if its
    /// poller is parked. The only writer of the completion ring. The final record of the event
    /// a run is running on this thread goes back with the run's call instead (see [`Run`]).
    pub(crate) async fn publish(&self, c: Completion) {
        if let Some(record) = self.try_publish(c) {
            self.push_waiting(record).await;
        }
    }

    /// [`Completions::publish`] up to the push: the record back when the ring is full.
    fn try_publish(&self, mut c: Completion) -> Option<Record> {
        let request = c.request.take().map(RequestSlot::give_back);
        let (reply_slot, reply_len) = c.reply.map_or((TANDEM_NO_SLOT, 0), |r| (r.slot, r.len));
        let record = Record {
            token: c.token,
            kind: c.kind,
            slot: request.unwrap_or(TANDEM_NO_SLOT),
            len: c.event_len,
            flags: c.flags,
            reply_slot,
            reply_len,
            started_ns: c.started_ns,
            finished_ns: c.finished_ns,
            aux: c.aux,
        };
        if Run::caught(&record) {
            return None;
        }
        if !self.cq.push(|d| record.write(d)) {
            return Some(record);
        }
        self.wake_go_if_parked();
        None
    }

    /// Pushes a record the full ring refused. Completions alone never fill the ring
    /// (cq_capacity >= req_slots); emitted events can, and then wait here for Go's poller,
    /// which never waits on Rust.
    async fn push_waiting(&self, record: Record) {
        loop {
            tokio::task::yield_now().await;
            if self.cq.push(|d| record.write(d)) {
                break;
            }
        }
        self.wake_go_if_parked();
    }

    /// Wakes Go's poller if it is parked and this thread won the duty. On a kicking thread the
    /// duty goes back to the Go caller instead, which consumes the ring itself (crate::kick).
    fn wake_go_if_parked(&self) {
        if self.cq.take_wakeup() && !defer_go_wake() {
            self.counters.go_wakeups.fetch_add(1, Relaxed);
            self.wake_go.signal();
        }
    }

    /// Completes the event in request slot `slot`: writes its reply or error envelope into a
    /// reply slot and publishes the outcome, handing the slot back.
    ///
    /// It does so before the future it returns is first polled, unless it must wait for a
    /// reply slot or for room in the ring: only then is the rest of the work boxed into the
    /// future. Every event's future holds this one, and is moved whole (into its task, or the
    /// box an inline run polls it in): it would otherwise carry the state of every wait this
    /// step might make, some 900 bytes copied for every event.
    pub(crate) fn finish<'f>(
        &'f self,
        slot: RequestSlot,
        run: Finished<'f>,
    ) -> impl Future<Output = ()> + Send + 'f {
        let needs_reply = match &run.outcome {
            Outcome::Ack => false,
            Outcome::Reply(v) => !v.is_empty(),
            Outcome::Retry { .. } | Outcome::Term(_) => true,
        };
        let writer = if needs_reply {
            self.replies.try_take()
        } else {
            None
        };
        let rest: Option<Pin<Box<dyn Future<Output = ()> + Send + 'f>>> =
            if needs_reply && writer.is_none() {
                Some(Box::pin(async move {
                    let w = self.reply().await;
                    self.publish(completion_of(slot, &run, Some(w))).await;
                }))
            } else {
                self.try_publish(completion_of(slot, &run, writer))
                    .map(|r| Box::pin(self.push_waiting(r)) as Pin<Box<_>>)
            };
        async move {
            if let Some(rest) = rest {
                rest.await;
            }
        }
    }

    /// Emits `ev`: to the Rust handler of its type if it has a local route, else to Go in a
    /// reply slot. Waits while every reply slot is lent to Go.
    pub(crate) async fn emit(&self, ev: &Envelope<'_>) -> Result<(), EmitError> {
        let needed = envelope::encoded_len(ev);
        if needed > self.replies.size() {
            return Err(EmitError::TooLarge { needed });
        }
        {
            let local = self.local.read().unwrap_or_else(|e| e.into_inner());
            if let Some(routes) = local.as_ref() {
                if let Some(&index) = routes.by_type.get(ev.ty) {
                    if let Some(to) = routes.to.upgrade() {
                        to.dispatch(ev, index);
                    }
                    return Ok(());
                }
            }
        }
        let mut w = self.reply().await;
        let n = envelope::encode_into(ev, w.buf()).unwrap_or(0);
        let reply = w.lend(n);
        self.counters.emitted.fetch_add(1, Relaxed);
        self.publish(Completion::emitted(reply)).await;
        Ok(())
    }

    /// Calls `ev` (already carrying the caller's deadline, correlation, causation and trace)
    /// and waits for the callee's outcome: in the Rust handler of a local route, run in this
    /// task; otherwise, or when that run fails, through Go, which runs the whole delivery
    /// (retries, dead letters, policies, a handler in either runtime) and hands back its final
    /// outcome. Dropping the future ends the wait and tells Go (`TANDEM_CQE_CALL_CANCEL`).
    pub(crate) async fn call(self: &Arc<Self>, ev: &Envelope<'_>) -> Result<Reply, CallError> {
        let needed = envelope::encoded_len(ev);
        if needed > self.replies.size() {
            return Err(CallError::TooLarge { needed });
        }
        let local = {
            let routes = self.local.read().unwrap_or_else(|e| e.into_inner());
            routes.as_ref().and_then(|routes| {
                let index = *routes.by_type.get(ev.ty)?;
                Some((index, routes.to.upgrade()?))
            })
        };
        let Some((index, to)) = local else {
            return self.call_through_go(ev, None).await;
        };
        let mut first = *ev;
        first.attempt = first.attempt.max(1);
        let bytes = envelope::encode_to_vec(&first);
        self.counters.local_dispatched.fetch_add(1, Relaxed);
        let finished = to.call(&bytes, index).await;
        match finished.outcome {
            Outcome::Ack => {
                self.counters.local_acked.fetch_add(1, Relaxed);
                Ok(Reply::empty())
            }
            Outcome::Reply(v) => {
                self.counters.local_acked.fetch_add(1, Relaxed);
                Ok(Reply::owned(v))
            }
            Outcome::Retry { .. } | Outcome::Term(_) => {
                // Retries and dead letters live in Go: the call goes on there, carrying this
                // first attempt's failure, as an emitted local event's failure does.
                self.counters.local_forwarded.fetch_add(1, Relaxed);
                self.call_through_go(ev, Some((&bytes, &finished))).await
            }
        }
    }

    /// The crossing half of [`Completions::call`]: lends a reply slot holding the event
    /// (and, for a local run that failed, its error envelope) to Go with a `TANDEM_CQE_CALL`
    /// and waits for the `TANDEM_SQE_REPLY` that hands it back.
    async fn call_through_go(
        self: &Arc<Self>,
        ev: &Envelope<'_>,
        failed: Option<(&[u8], &Finished<'_>)>,
    ) -> Result<Reply, CallError> {
        // Never waits: a caller waiting here would hold its request slot too, and with every
        // slot held by a waiting caller no callee could get one.
        let _permit = self
            .call_permits
            .try_acquire()
            .map_err(|_| CallError::Overloaded)?;
        let mut w = Some(self.reply().await);
        let (n, event_len, flags, aux) = {
            let buf = w.as_mut().map(ReplyWriter::buf).unwrap_or_default();
            match failed {
                None => {
                    let n = envelope::encode_into(ev, buf).unwrap_or(0);
                    (n, 0, 0, 0)
                }
                Some((bytes, run)) => {
                    let error = match &run.outcome {
                        Outcome::Retry { error, .. } | Outcome::Term(error) => error,
                        Outcome::Ack | Outcome::Reply(_) => unreachable!("only failures go on"),
                    };
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    let m = write_error(&mut buf[n..], error, run.handler);
                    let (outcome, aux) = run.kind_and_aux();
                    (n + m, n as u32, outcome, aux)
                }
            }
        };
        // Registered before it is published: the outcome may come back at once.
        let mut pending = CallGuard {
            completions: self,
            pending: self.calls.register(),
            published: false,
        };
        let id = pending.pending.id();
        loop {
            // The slot is lent inside the push: a future dropped while the ring is full frees
            // its writer instead of leaving a slot lent to Go that no record names.
            let pushed = self.cq.push(|d| {
                let r = w.take().map(|w| w.lend(n)).expect("lent once");
                d.token.store(id, Ordering::Relaxed);
                d.kind.store(TANDEM_CQE_CALL, Ordering::Relaxed);
                d.slot.store(TANDEM_NO_SLOT, Ordering::Relaxed);
                d.len.store(event_len, Ordering::Relaxed);
                d.flags.store(flags, Ordering::Relaxed);
                d.reply_slot.store(r.slot, Ordering::Relaxed);
                d.reply_len.store(r.len, Ordering::Relaxed);
                d.started_ns.store(0, Ordering::Relaxed);
                d.finished_ns.store(0, Ordering::Relaxed);
                d.aux.store(aux, Ordering::Relaxed);
            });
            if pushed {
                break;
            }
            tokio::task::yield_now().await;
        }
        pending.published = true;
        self.counters.calls.fetch_add(1, Relaxed);
        self.counters.calls_pending.fetch_add(1, Relaxed);
        self.wake_go_if_parked();
        let CallOutcome { slot, outcome } = (&mut pending.pending).await;
        if outcome == TANDEM_OUTCOME_ACK {
            return Ok(Reply::in_slot(slot));
        }
        let failure =
            CallFailure::from_error_envelope(slot.bytes(), outcome == TANDEM_OUTCOME_RETRY);
        Err(CallError::of_failure(failure))
    }

    /// Takes back the reply slot of call `id` from Go, holding its outcome, for the caller
    /// waiting on it; a slot nobody waits for any more is freed at once.
    pub(crate) fn call_replied(&self, id: u64, slot: u32, len: u32, outcome: u32) {
        if let Some(slot) = self.replies.take_back(slot, len) {
            // Err: the caller is gone; dropping the outcome frees the slot.
            let _ = self.calls.deliver(id, CallOutcome { slot, outcome });
        }
    }

    /// Tells Go that the caller of call `id` stopped waiting. From a destructor, so without
    /// waiting: a ring found full leaves the record to a task, or, outside tokio, drops it
    /// (the callee's deadline, never later than the caller's, bounds it then).
    fn cancel_call(self: &Arc<Self>, id: u64) {
        let record = |d: &crate::layout::tandem_desc| {
            d.token.store(id, Ordering::Relaxed);
            d.kind.store(TANDEM_CQE_CALL_CANCEL, Ordering::Relaxed);
            d.slot.store(TANDEM_NO_SLOT, Ordering::Relaxed);
            d.len.store(0, Ordering::Relaxed);
            d.flags.store(0, Ordering::Relaxed);
            d.reply_slot.store(TANDEM_NO_SLOT, Ordering::Relaxed);
            d.reply_len.store(0, Ordering::Relaxed);
            d.started_ns.store(0, Ordering::Relaxed);
            d.finished_ns.store(0, Ordering::Relaxed);
            d.aux.store(0, Ordering::Relaxed);
        };
        if self.cq.push(record) {
            self.wake_go_if_parked();
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = self.clone();
            rt.spawn(async move {
                me.publish(Completion {
                    token: id,
                    ..Completion::new(TANDEM_CQE_CALL_CANCEL)
                })
                .await
            });
        }
    }

    /// Hands a failed local event to Go: its envelope followed by its error envelope, in one
    /// reply slot.
    pub(crate) async fn forward_failure(&self, event: &[u8], run: &Finished<'_>) {
        let error = match &run.outcome {
            Outcome::Retry { error, .. } | Outcome::Term(error) => error,
            Outcome::Ack | Outcome::Reply(_) => return,
        };
        let mut w = self.reply().await;
        let buf = w.buf();
        let n = event.len().min(buf.len());
        buf[..n].copy_from_slice(&event[..n]);
        let m = write_error(&mut buf[n..], error, run.handler);
        let reply = w.lend(n + m);
        self.counters.local_forwarded.fetch_add(1, Relaxed);
        self.publish(Completion::forwarded(reply, n as u32, run))
            .await;
    }
}

/// A call in flight: leaving it (the caller's future dropped) before its outcome tells Go.
struct CallGuard<'a> {
    completions: &'a Arc<Completions>,
    pending: crate::calls::Pending<'a, CallOutcome>,
    /// The `TANDEM_CQE_CALL` is in the ring: Go knows the call.
    published: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.published {
            return; // Pending's own drop takes it off the table; Go never saw it
        }
        self.completions
            .counters
            .calls_pending
            .fetch_sub(1, Relaxed);
        if self.pending.leave() {
            self.completions.cancel_call(self.pending.id());
        }
    }
}

/// An error envelope of Rust's, as its own bytes (the direct-call paths).
#[cfg(feature = "bench-internals")]
pub(crate) fn error_bytes(error: &HandlerError, handler: &str) -> Vec<u8> {
    let env = error_envelope(error, handler);
    let mut out = vec![0u8; envelope::error_encoded_len(&env)];
    let n = envelope::encode_error_into(&env, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

fn error_envelope<'a>(error: &'a HandlerError, handler: &'a str) -> ErrorEnvelope<'a> {
    ErrorEnvelope {
        code: &error.code,
        message: &error.message,
        retry: error.retry,
        runtime: "rust",
        handler,
    }
}

/// Encodes an error envelope into a reply slot, shortening the message if it does not fit.
fn write_error(buf: &mut [u8], error: &HandlerError, handler: &str) -> usize {
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
    fn emitted_events_reach_go_before_their_parents_completion() {
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
    fn in_progress_pushes_the_deadline_back_and_tells_go() {
        let mut rt = runtime();
        // The handler extends its deadline as it starts, then works past the one it was given.
        // It must start before that one: on a loaded machine it may not, and then the event
        // times out without running, and it is tried again with a deadline four times as far.
        let mut ms = 30;
        loop {
            submit_delivery(&rt, 0, &envelope("patient", b""), 0, due_in(ms));
            let done = next_completion(&rt);
            if done.kind == TANDEM_OUTCOME_RETRY {
                assert_eq!(
                    envelope::decode_error(&done.reply).unwrap().code,
                    crate::code::TIMEOUT
                );
                release(&rt, done.reply_slot);
                ms *= 4;
                assert!(ms <= 8_000, "the handler never started before its deadline");
                continue;
            }
            assert_eq!(done.kind, TANDEM_OUTCOME_IN_PROGRESS);
            assert_eq!(done.token, 7 << 32, "the progress record names the event");
            break;
        }
        for _ in 1..3 {
            let done = next_completion(&rt);
            assert_eq!(done.kind, TANDEM_OUTCOME_IN_PROGRESS);
            assert_eq!(done.token, 7 << 32, "the progress record names the event");
        }
        assert_eq!(next_completion(&rt).kind, TANDEM_OUTCOME_ACK);
        assert_whole(&mut rt);
    }
}
