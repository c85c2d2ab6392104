//! Rust's log records, written with the `tracing` crate by the runtime and by handlers, go to
//! Go's zap logger in batches through the completion ring (`TANDEM_CQE_LOG`), never a callback
//! per record. Each record carries the fields of the spans it was logged in, and a handler's
//! records carry its event's: the handler, the event's id, type, correlation id, trace id and
//! attempt. Under the process's own subscriber a handler runs inside an `event` span with
//! those fields. Under this module's, a span would cost every event some 0.4 µs (registered,
//! its fields formatted into strings, entered at each poll, closed) whether or not its handler
//! logs, so the handler's future carries its event instead ([`InEvent`]): each poll names it
//! for the thread, and a record logged then, or in a span made then, formats its fields.
//!
//! Each runtime owns its [`LogQueue`] and forwards only its own records, so two runtimes in one
//! process never see each other's logs. The `tracing` subscriber, though, is process-global:
//! the first runtime installs it (unless the process already has one), and it routes each
//! record to the queue of the runtime that produced it. That is decided by where the record is
//! logged: on a runtime's tokio worker threads (handlers, the poller, tasks a handler spawns
//! there) the thread names its runtime, set when tokio starts the thread; on a thread that
//! blocks on a runtime (start's warm-up, a direct call) a scope ([`enter`]) names it while it
//! runs; and a span created in such a context keeps the queue in its extensions, so a record
//! logged inside that span on any other thread still reaches the same runtime. A record with
//! none of these belongs to no runtime and is not forwarded.
//!
//! Records wait in a bounded queue; past its bound they are dropped and counted, and the count
//! travels with the next batch, so Go logs how many were lost: nothing is dropped silently.
//! The level follows Go's: Go sets the least severe level its logger writes. The level stays
//! process-wide (`tandem_set_log_level` names no runtime) because it configures the one
//! subscriber, whose callsite interest cache is process-wide too.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minicbor::encode::Encoder;
use minicbor::encode::write::Cursor;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::completion::{Completion, Completions};
use crate::handler::Event as HandlerEvent;

/// Levels as Go numbers them for Rust: 0 trace, 1 debug, 2 info, 3 warn, 4 error, 5 off.
pub(crate) const LEVEL_OFF: u8 = 5;

fn level_number(l: &Level) -> u8 {
    match *l {
        Level::TRACE => 0,
        Level::DEBUG => 1,
        Level::INFO => 2,
        Level::WARN => 3,
        Level::ERROR => 4,
    }
}

/// The records a queue holds at most.
const QUEUE_MAX: usize = 8192;

/// The least severe level forwarded, for the process's one subscriber.
static MIN_LEVEL: AtomicU8 = AtomicU8::new(LEVEL_OFF);

/// One log record.
pub(crate) struct LogRecord {
    level: u8,
    target: &'static str,
    message: String,
    time_ns: u64,
    fields: Vec<(&'static str, String)>,
}

/// One runtime's records waiting for Go, and the signal that wakes its forwarder. Shared by
/// the subscriber (any thread pushes) and the runtime's forwarder (which takes).
#[derive(Default)]
pub(crate) struct LogQueue {
    records: Mutex<VecDeque<LogRecord>>,
    dropped: AtomicU64,
    waiting: Notify,
}

impl LogQueue {
    fn push(&self, rec: LogRecord) {
        let mut q = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= QUEUE_MAX {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let first = q.is_empty();
        q.push_back(rec);
        drop(q);
        if first {
            self.waiting.notify_one();
        }
    }

    /// Takes the waiting records (at most `max`) and the count dropped since the last take.
    fn take(&self, max: usize) -> (Vec<LogRecord>, u64) {
        let mut q = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.len().min(max);
        let batch: Vec<LogRecord> = q.drain(..n).collect();
        drop(q);
        (batch, self.dropped.swap(0, Relaxed))
    }

    /// Puts records that did not fit a batch back at the front, oldest first.
    fn put_back(&self, records: Vec<LogRecord>) {
        let mut q = self.records.lock().unwrap_or_else(|p| p.into_inner());
        for r in records.into_iter().rev() {
            q.push_front(r);
        }
    }

    fn pending(&self) -> bool {
        !self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

thread_local! {
    /// The queue of the runtime this thread works for, if any.
    static CURRENT: RefCell<Option<Arc<LogQueue>>> = const { RefCell::new(None) };
}

/// Names the runtime a thread works for, for its whole life: tokio's worker threads, from
/// `on_thread_start`.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn work_for(queue: Option<Arc<LogQueue>>) {
    CURRENT.with(|c| *c.borrow_mut() = queue);
}

/// Names the runtime the calling thread works for from now on, and returns the one it worked
/// for until now: a caller's thread that stays inside a runtime (crate::entered).
pub(crate) fn swap(queue: Option<Arc<LogQueue>>) -> Option<Arc<LogQueue>> {
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), queue))
}

/// Names the runtime the calling thread works for until the returned scope drops (a thread
/// blocking on the runtime, e.g. for warm-up).
pub(crate) fn enter(queue: &Arc<LogQueue>) -> Scope {
    Scope(CURRENT.with(|c| c.borrow_mut().replace(queue.clone())))
}

/// Restores the thread's previous runtime when dropped.
pub(crate) struct Scope(Option<Arc<LogQueue>>);

impl Drop for Scope {
    fn drop(&mut self) {
        let prev = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

fn current() -> Option<Arc<LogQueue>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Sets the least severe level forwarded to Go (`LEVEL_OFF` forwards nothing), for every
/// runtime of the process.
#[cfg_attr(not(any(all(test, not(loom)), feature = "exports")), allow(dead_code))]
pub(crate) fn set_level(level: u8) {
    MIN_LEVEL.store(level.min(LEVEL_OFF), Relaxed);
    tracing::callsite::rebuild_interest_cache();
}

/// Installs the forwarding subscriber as the process's global one, once. Returns false if
/// another subscriber was there first (then Rust's records go to it, not to Go).
pub(crate) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let subscriber: Forwarding = tracing_subscriber::registry().with(GoLayer);
        tracing::subscriber::set_global_default(subscriber).is_ok()
    })
}

/// The subscriber [`install`] makes the process's.
type Forwarding = tracing_subscriber::layer::Layered<GoLayer, tracing_subscriber::Registry>;

/// Whether the calling thread's records go to this module's subscriber: then a handler's
/// future carries its event ([`in_event`]) instead of an `event` span.
pub(crate) fn forwarding() -> bool {
    tracing::dispatcher::get_default(|d| d.is::<Forwarding>())
}

/// The `event` span a handler runs inside when another subscriber gets the records.
pub(crate) fn event_span(ev: &HandlerEvent<'_>, handler: &str) -> tracing::Span {
    let f = EventFields::of(ev, handler);
    tracing::info_span!(
        "event",
        runtime = "rust",
        handler = f.handler,
        event_id = f.event_id,
        event_type = f.event_type,
        correlation_id = f.correlation_id,
        trace_id = f.trace_id,
        attempt = f.attempt,
    )
}

/// What a handler's records say of its event, borrowed from it.
struct EventFields<'a> {
    handler: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    correlation_id: &'a str,
    trace_id: &'a str,
    attempt: u32,
}

impl<'a> EventFields<'a> {
    fn of(ev: &'a HandlerEvent<'_>, handler: &'a str) -> Self {
        let env = ev.envelope();
        EventFields {
            handler,
            event_id: env.id,
            event_type: env.ty,
            correlation_id: env.correlationid.unwrap_or(env.id),
            trace_id: env
                .traceparent
                .and_then(|tp| tp.get(3..35))
                .unwrap_or_default(),
            attempt: ev.attempt(),
        }
    }

    /// Appends the fields as the `event` span's would be recorded, in its order.
    fn collect(&self, into: &mut Vec<(&'static str, String)>) {
        into.extend([
            ("runtime", "rust".to_owned()),
            ("handler", self.handler.to_owned()),
            ("event_id", self.event_id.to_owned()),
            ("event_type", self.event_type.to_owned()),
            ("correlation_id", self.correlation_id.to_owned()),
            ("trace_id", self.trace_id.to_owned()),
            ("attempt", self.attempt.to_string()),
        ]);
    }
}

/// An event's handler and the event it runs for, which a thread polling its future names.
struct Running<'a> {
    ev: &'a HandlerEvent<'a>,
    handler: &'a str,
}

thread_local! {
    /// The [`Running`] of the handler whose future this thread polls or drops (null: none).
    /// It points into that future, and only while the future is polled or dropped.
    static RUNNING: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
}

/// Calls `f` with the fields of the event whose handler this thread runs, if any.
fn with_running<R>(f: impl FnOnce(Option<&EventFields<'_>>) -> R) -> R {
    let p = RUNNING.with(Cell::get).cast::<Running<'_>>();
    // SAFETY: non-null only while an `InEvent` on this thread is polled or dropped (`Naming`
    // restores the pointer before either returns or unwinds), and then it points at that
    // `InEvent`'s `Running`, which borrows its event and handler for longer than the
    // `InEvent` lives; nothing here outlives this call.
    let running = unsafe { p.as_ref() };
    f(running.map(|r| EventFields::of(r.ev, r.handler)).as_ref())
}

/// Names a [`Running`] for the thread until dropped, then restores what it named before.
struct Naming(*const ());

impl Naming {
    fn new(running: &Running<'_>) -> Naming {
        let p = std::ptr::from_ref(running).cast::<()>();
        Naming(RUNNING.with(|r| r.replace(p)))
    }
}

impl Drop for Naming {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(self.0));
    }
}

/// A handler's future that names its event to the thread at each poll and at its drop, so
/// its records carry the event's fields (see the module's doc). Formatting them is left to a
/// record actually logged: an event whose handler logs nothing pays two thread-local writes a
/// poll.
pub(crate) struct InEvent<'a, F> {
    running: Running<'a>,
    inner: ManuallyDrop<F>,
}

/// `inner`, run for `ev` by handler `handler` (see [`InEvent`]).
pub(crate) fn in_event<'a, F: Future>(
    ev: &'a HandlerEvent<'a>,
    handler: &'a str,
    inner: F,
) -> InEvent<'a, F> {
    InEvent {
        running: Running { ev, handler },
        inner: ManuallyDrop::new(inner),
    }
}

impl<F: Future> Future for InEvent<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is pinned structurally: nothing moves it out of a pinned `InEvent`,
        // whose Drop drops it in place, and `InEvent` is Unpin only when `F` is.
        let this = unsafe { self.get_unchecked_mut() };
        let _naming = Naming::new(&this.running);
        // SAFETY: as above.
        unsafe { Pin::new_unchecked(&mut *this.inner) }.poll(cx)
    }
}

impl<F> Drop for InEvent<'_, F> {
    fn drop(&mut self) {
        let _naming = Naming::new(&self.running);
        // SAFETY: dropped once, here, in place (it may be pinned), and never used again.
        unsafe { ManuallyDrop::drop(&mut self.inner) }
    }
}

/// Forwards one runtime's log records to Go in batches, each in a reply slot on the completion
/// ring. It sleeps until records wait, then gathers for a millisecond so a burst travels
/// together. Once `stop` fires it sends what is left and returns.
pub(crate) async fn forward(
    queue: Arc<LogQueue>,
    completions: Arc<Completions>,
    stop: CancellationToken,
) {
    loop {
        if !queue.pending() {
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = queue.waiting.notified() => {}
                _ = stop.cancelled() => {}
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (batch, dropped) = queue.take(1024);
        if batch.is_empty() && dropped == 0 {
            continue;
        }
        let mut w = completions.reply().await;
        let (used, rest) = encode(batch, dropped, w.buf());
        queue.put_back(rest);
        let reply = w.lend(used);
        completions.publish(Completion::logs(reply)).await;
    }
}

/// Encodes as many records as fit into `out` as a CBOR sequence: first the dropped count
/// (uint), then one map per record {0: level, 1: target, 2: message, 3: time ns, 4: {field:
/// value}}. Returns the bytes used and the records that did not fit.
///
/// A record too big for a whole batch (a long message, a backtrace) would wait at the front of
/// the queue forever and hold up every record behind it, so the first record of a batch is cut
/// until it fits: its message and field values shortened, each cut marked with "…".
fn encode(records: Vec<LogRecord>, dropped: u64, out: &mut [u8]) -> (usize, Vec<LogRecord>) {
    let mut enc = Encoder::new(Cursor::new(out));
    if enc.u64(dropped).is_err() {
        return (0, records);
    }
    let start = enc.writer().position();
    let mut used = start;
    let mut rest = Vec::new();
    let mut iter = records.into_iter();
    for mut rec in iter.by_ref() {
        let mut fits = encode_record(&mut enc, &rec).is_ok();
        if !fits && used == start {
            let mut limit = enc.writer().get_ref().len();
            while !fits && limit > 0 {
                limit /= 2;
                rec.cut(limit);
                enc.writer_mut().set_position(used);
                fits = encode_record(&mut enc, &rec).is_ok();
            }
        }
        if !fits {
            rest.push(rec);
            break;
        }
        used = enc.writer().position();
    }
    rest.extend(iter);
    (used, rest)
}

type EncodeResult = Result<(), minicbor::encode::Error<minicbor::encode::write::EndOfSlice>>;

fn encode_record(enc: &mut Encoder<Cursor<&mut [u8]>>, rec: &LogRecord) -> EncodeResult {
    enc.map(5)?;
    enc.u8(0)?.u8(rec.level)?;
    enc.u8(1)?.str(rec.target)?;
    enc.u8(2)?.str(&rec.message)?;
    enc.u8(3)?.u64(rec.time_ns)?;
    enc.u8(4)?.map(rec.fields.len() as u64)?;
    for (k, v) in &rec.fields {
        enc.str(k)?.str(v)?;
    }
    Ok(())
}

impl LogRecord {
    /// Shortens the message and every field value to at most `limit` bytes and a "…". At 0
    /// only the level, the time and "…" are left, which fit the smallest reply slot.
    fn cut(&mut self, limit: usize) {
        cut(&mut self.message, limit);
        for (_, v) in &mut self.fields {
            cut(v, limit);
        }
        if limit == 0 {
            self.target = "";
            self.fields.clear();
        }
    }
}

fn cut(s: &mut String, limit: usize) {
    if s.len() <= limit {
        return;
    }
    let mut at = limit;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    s.push('…');
}

/// The fields of a span, kept in its extensions for the records logged inside it.
struct SpanFields(Vec<(&'static str, String)>);

/// Marks a span made while a handler ran ([`InEvent`]) outside every span that holds its
/// event's fields: its own fields begin with them, so a record logged inside it carries them
/// wherever it is logged, once.
struct HoldsEvent;

#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        if field.name() == "message" {
            self.message = s;
        } else {
            self.fields.push((field.name(), s));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push((field.name(), value.to_owned()));
        }
    }
}

/// The runtime a span was created for, kept in its extensions.
struct SpanQueue(Arc<LogQueue>);

struct GoLayer;

impl<S> Layer<S> for GoLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        level_number(meta.level()) >= MIN_LEVEL.load(Relaxed)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut c = Collect::default();
        if let Some(span) = ctx.span(id) {
            // Its ancestors are read only when a handler runs: most spans are made outside one.
            let holds = with_running(|ev| {
                let Some(f) = ev else { return false };
                let inherits = span
                    .scope()
                    .skip(1)
                    .any(|s| s.extensions().get::<HoldsEvent>().is_some());
                if !inherits {
                    f.collect(&mut c.fields);
                }
                !inherits
            });
            attrs.record(&mut c);
            let mut ext = span.extensions_mut();
            ext.insert(SpanFields(c.fields));
            if holds {
                ext.insert(HoldsEvent);
            }
            if let Some(q) = current() {
                ext.insert(SpanQueue(q));
            }
        }
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let mut c = Collect::default();
        values.record(&mut c);
        if let Some(span) = ctx.span(id) {
            if let Some(f) = span.extensions_mut().get_mut::<SpanFields>() {
                f.0.extend(c.fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut c = Collect::default();
        event.record(&mut c);
        let mut queue = None;
        let (mut spans, mut held) = (Vec::new(), false);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<SpanFields>() {
                    spans.extend(f.0.iter().cloned());
                }
                if let Some(q) = ext.get::<SpanQueue>() {
                    queue = Some(q.0.clone()); // the innermost span's runtime wins
                }
                held |= ext.get::<HoldsEvent>().is_some();
            }
        }
        // A running handler's event, unless a span above holds its fields already: the
        // outermost fields, as a span's around the handler would be.
        if !held {
            with_running(|ev| ev.map(|f| f.collect(&mut c.fields)));
        }
        c.fields.append(&mut spans);
        let Some(queue) = queue.or_else(current) else {
            return; // logged outside every runtime: nobody to forward it to
        };
        let meta = event.metadata();
        queue.push(LogRecord {
            level: level_number(meta.level()),
            target: meta.target(),
            message: c.message,
            time_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            fields: c.fields,
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::testing::*;

    struct Chatty(&'static str);
    impl Handler for Chatty {
        async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
            let who = self.0;
            tracing::info!("{who} in its handler");
            // A task the handler spawns runs on the same runtime's workers.
            let _ = tokio::spawn(async move { tracing::info!("{who} in a task") }).await;
            Outcome::Ack
        }
    }

    struct Verbose;
    impl Handler for Verbose {
        async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
            tracing::info!(detail = "d".repeat(3000), "{}", "m".repeat(4000));
            tracing::info!("after the long one");
            Outcome::Ack
        }
    }

    /// Logs directly, in a span of its own, after a wait, in a task inside a span it made,
    /// and in a task outside every span.
    struct Nested;
    impl Handler for Nested {
        async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
            use tracing::Instrument as _;
            tracing::info!(own = "o", "direct");
            tracing::info_span!("step", step = "one").in_scope(|| tracing::info!("in a span"));
            tokio::task::yield_now().await;
            tracing::info!("after a wait");
            let spanned = async { tracing::info!("in a task's span") };
            let _ = tokio::spawn(spanned.instrument(tracing::info_span!("work"))).await;
            let _ = tokio::spawn(async { tracing::info!("in a task") }).await;
            Outcome::Ack
        }
    }

    #[test]
    fn a_handlers_records_carry_its_event_once_wherever_they_are_logged() {
        super::set_level(2); // info
        let mut reg = Registry::new();
        reg.register("nested", "nested", Nested);
        let mut rt = Runtime::new(small(), reg).unwrap();
        rt.start().unwrap();
        submit(&rt, 0, &envelope("nested", b""));
        let (mut acked, mut seen) = (false, Vec::new());
        while !acked || seen.len() < 5 {
            let done = next_any(&rt);
            match done.kind {
                TANDEM_CQE_LOG => seen.extend(log_records(&done.reply)),
                TANDEM_OUTCOME_ACK => acked = true,
                other => panic!("unexpected completion kind {other}"),
            }
            if done.reply_slot != TANDEM_NO_SLOT {
                release(&rt, done.reply_slot);
            }
        }
        let event = [
            ("runtime", "rust"),
            ("handler", "nested"),
            ("event_id", "1"),
            ("event_type", "nested"),
            ("correlation_id", "1"),
            ("trace_id", ""),
            ("attempt", "1"),
        ];
        let record = |m: &str| {
            let found: Vec<_> = seen.iter().filter(|r| r.message == m).collect();
            assert_eq!(found.len(), 1, "records {m:?}");
            found[0]
        };
        for (m, first, last) in [
            ("direct", vec![("own", "o")], vec![]),
            ("in a span", vec![], vec![("step", "one")]),
            ("after a wait", vec![], vec![]),
            ("in a task's span", vec![], vec![]),
        ] {
            let want: Vec<(String, String)> = first
                .into_iter()
                .chain(event)
                .chain(last)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(record(m).fields, want, "the fields of {m:?}");
        }
        assert!(
            record("in a task").fields.is_empty(),
            "a task the handler spawned outside every span is not the handler: {:?}",
            record("in a task").fields
        );
        assert_whole(&mut rt);
    }

    /// The event is named to the thread while its future is polled or dropped, and only then.
    #[test]
    fn an_event_is_named_only_while_its_future_runs() {
        struct Probe(std::rc::Rc<std::cell::Cell<bool>>);
        impl Drop for Probe {
            fn drop(&mut self) {
                self.0.set(super::with_running(|f| {
                    f.is_some_and(|f| f.event_id == "1")
                }));
            }
        }
        let bytes = envelope("probe", b"");
        let env = crate::envelope::decode(&bytes).unwrap();
        let delivery = crate::slots::Delivery::of_envelope(&env);
        let ev = Event::new(&env, delivery);
        let dropped_inside = std::rc::Rc::new(std::cell::Cell::new(false));
        let probe = Probe(dropped_inside.clone());
        let mut polled = 0;
        let inner = std::future::poll_fn(move |_| {
            let _ = &probe; // dropped with the future
            polled += 1;
            assert!(super::with_running(|f| f.is_some_and(|f| f.handler == "h")));
            if polled < 2 {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        });
        let mut fut = Box::pin(super::in_event(&ev, "h", inner));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(super::with_running(|f| f.is_none()), "named after a poll");
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        drop(fut);
        assert!(dropped_inside.get(), "not named while its future dropped");
        assert!(super::with_running(|f| f.is_none()), "named after its drop");
    }

    fn chatty(who: &'static str) -> Runtime {
        let mut reg = Registry::new();
        reg.register("chatty", "chatty", Chatty(who));
        let mut rt = Runtime::new(small(), reg).unwrap();
        rt.start().unwrap();
        rt
    }

    #[test]
    fn two_runtimes_never_see_each_others_logs() {
        super::set_level(2); // info
        let (mut a, mut b) = (chatty("a"), chatty("b"));
        for rt in [&a, &b] {
            submit(rt, 0, &envelope("chatty", b""));
        }
        for (rt, who) in [(&a, "a"), (&b, "b")] {
            let (mut acked, mut seen) = (false, Vec::new());
            while !acked || seen.len() < 2 {
                let done = next_any(rt);
                match done.kind {
                    TANDEM_CQE_LOG => seen.extend(log_messages(&done.reply)),
                    TANDEM_OUTCOME_ACK => acked = true,
                    other => panic!("unexpected completion kind {other}"),
                }
                if done.reply_slot != TANDEM_NO_SLOT {
                    release(rt, done.reply_slot);
                }
            }
            seen.sort();
            assert_eq!(
                seen,
                [format!("{who} in a task"), format!("{who} in its handler")]
            );
        }
        assert_whole(&mut a);
        assert_whole(&mut b);
    }

    #[test]
    fn a_record_bigger_than_a_reply_slot_is_cut_not_stuck() {
        super::set_level(2); // info
        let mut reg = Registry::new();
        reg.register("verbose", "verbose", Verbose);
        let mut rt = Runtime::new(small(), reg).unwrap(); // 1 KiB reply slots
        rt.start().unwrap();
        submit(&rt, 0, &envelope("verbose", b""));
        let (mut acked, mut seen) = (false, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !acked || seen.len() < 2 {
            if Instant::now() >= deadline {
                // Not dropped: shutting down would wait for the stuck forwarder forever.
                std::mem::forget(rt);
                panic!(
                    "after 10 s: acked {acked}, {} records (a record stuck at the front?)",
                    seen.len()
                );
            }
            let done = next_any(&rt);
            match done.kind {
                TANDEM_CQE_LOG => {
                    assert!(done.reply.len() <= 1024);
                    seen.extend(log_records(&done.reply));
                }
                TANDEM_OUTCOME_ACK => acked = true,
                other => panic!("unexpected completion kind {other}"),
            }
            if done.reply_slot != TANDEM_NO_SLOT {
                release(&rt, done.reply_slot);
            }
        }
        let long = &seen[0];
        assert!(
            long.message.starts_with("mmm") && long.message.ends_with('…'),
            "{}",
            long.message
        );
        assert!(long.field("detail").is_some_and(|d| d.ends_with('…')));
        assert_eq!(seen[1].message, "after the long one");
        assert_whole(&mut rt);
    }
}
