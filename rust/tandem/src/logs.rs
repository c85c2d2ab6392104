//! Rust's log records, written with the `tracing` crate by the runtime and by handlers, go to
//! Go's zap logger in batches through the completion ring (`TANDEM_CQE_LOG`), never a callback
//! per record. Each record carries the fields of the spans it was logged in, so a handler's
//! records carry the event's id, correlation id, trace id and attempt (the runtime runs every
//! handler inside an `event` span with those fields).
//!
//! The first runtime installs a global subscriber, unless the process already has one. Records
//! wait in a bounded queue; past its bound they are dropped and counted, and the count travels
//! with the next batch, so Go logs how many were lost: nothing is dropped silently. The level
//! follows Go's: Go sets the least severe level its logger writes.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::completion::{Completion, Completions};
use minicbor::encode::Encoder;
use minicbor::encode::write::Cursor;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Levels as Go numbers them for Rust: 0 trace, 1 debug, 2 info, 3 warn, 4 error, 5 off.
pub(crate) const LEVEL_OFF: u8 = 5;

pub(crate) fn level_number(l: &Level) -> u8 {
    match *l {
        Level::TRACE => 0,
        Level::DEBUG => 1,
        Level::INFO => 2,
        Level::WARN => 3,
        Level::ERROR => 4,
    }
}

/// The records waiting for Go.
const QUEUE_MAX: usize = 8192;

/// One log record.
pub(crate) struct LogRecord {
    level: u8,
    target: &'static str,
    message: String,
    time_ns: u64,
    fields: Vec<(&'static str, String)>,
}

struct Queue {
    records: Mutex<VecDeque<LogRecord>>,
    dropped: AtomicU64,
    min_level: AtomicU8,
    installed: AtomicBool,
}

static QUEUE: Queue = Queue {
    records: Mutex::new(VecDeque::new()),
    dropped: AtomicU64::new(0),
    min_level: AtomicU8::new(LEVEL_OFF),
    installed: AtomicBool::new(false),
};

/// Sets the least severe level forwarded to Go (`LEVEL_OFF` forwards nothing).
#[cfg_attr(not(feature = "exports"), allow(dead_code))]
pub(crate) fn set_level(level: u8) {
    QUEUE.min_level.store(level.min(LEVEL_OFF), Relaxed);
    tracing::callsite::rebuild_interest_cache();
}

/// Installs the forwarding subscriber as the process's global one, once. Returns false if
/// another subscriber was there first (then Rust's records go to it, not to Go).
pub(crate) fn install() -> bool {
    if QUEUE.installed.swap(true, Relaxed) {
        return true;
    }
    let subscriber = tracing_subscriber::registry().with(GoLayer);
    tracing::subscriber::set_global_default(subscriber).is_ok()
}

/// Takes the waiting records (at most `max`) and the count dropped since the last take.
pub(crate) fn take(max: usize) -> (Vec<LogRecord>, u64) {
    let mut q = QUEUE.records.lock().unwrap_or_else(|p| p.into_inner());
    let n = q.len().min(max);
    let batch: Vec<LogRecord> = q.drain(..n).collect();
    drop(q);
    (batch, QUEUE.dropped.swap(0, Relaxed))
}

/// Puts records that did not fit a batch back at the front, oldest first.
pub(crate) fn put_back(records: Vec<LogRecord>) {
    let mut q = QUEUE.records.lock().unwrap_or_else(|p| p.into_inner());
    for r in records.into_iter().rev() {
        q.push_front(r);
    }
}

/// Whether records are waiting.
pub(crate) fn pending() -> bool {
    !QUEUE
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
}

/// Encodes as many records as fit into `out` as a CBOR sequence: first the dropped count
/// (uint), then one map per record {0: level, 1: target, 2: message, 3: time ns, 4: {field:
/// value}}. Returns the bytes used and the records that did not fit.
pub(crate) fn encode(
    records: Vec<LogRecord>,
    dropped: u64,
    out: &mut [u8],
) -> (usize, Vec<LogRecord>) {
    let mut enc = Encoder::new(Cursor::new(out));
    if enc.u64(dropped).is_err() {
        return (0, records);
    }
    let mut used = enc.writer().position();
    let mut rest = Vec::new();
    let mut iter = records.into_iter();
    for rec in iter.by_ref() {
        let ok =
            (|| -> Result<(), minicbor::encode::Error<minicbor::encode::write::EndOfSlice>> {
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
            })();
        if ok.is_err() {
            rest.push(rec);
            break;
        }
        used = enc.writer().position();
    }
    rest.extend(iter);
    (used, rest)
}

/// The fields of a span, kept in its extensions for the records logged inside it.
struct SpanFields(Vec<(&'static str, String)>);

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

struct GoLayer;

impl<S> Layer<S> for GoLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        level_number(meta.level()) >= QUEUE.min_level.load(Relaxed)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut c = Collect::default();
        attrs.record(&mut c);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(c.fields));
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
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    c.fields.extend(f.0.iter().cloned());
                }
            }
        }
        let meta = event.metadata();
        let rec = LogRecord {
            level: level_number(meta.level()),
            target: meta.target(),
            message: c.message,
            time_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            fields: c.fields,
        };
        let mut q = QUEUE.records.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= QUEUE_MAX {
            QUEUE.dropped.fetch_add(1, Relaxed);
            return;
        }
        let first = q.is_empty();
        q.push_back(rec);
        drop(q);
        if first {
            LOGS_WAITING.notify_one();
        }
    }
}

/// Wakes the log forwarder when records wait (set by the logging layer's first record after
/// a drain, and at shutdown).
pub(crate) static LOGS_WAITING: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Forwards Rust's log records to Go in batches, each in a reply slot on the completion ring.
/// It sleeps until records wait, then gathers for a millisecond so a burst travels together.
/// Once `stop` fires it sends what is left and returns.
pub(crate) async fn forward(completions: Arc<Completions>, stop: CancellationToken) {
    loop {
        if !pending() {
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = LOGS_WAITING.notified() => {}
                _ = stop.cancelled() => {}
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (batch, dropped) = take(1024);
        if batch.is_empty() && dropped == 0 {
            continue;
        }
        let mut w = completions.reply().await;
        let (used, rest) = encode(batch, dropped, w.buf());
        put_back(rest);
        let reply = w.lend(used);
        completions.publish(Completion::logs(reply)).await;
    }
}
