//! Tests' harness: the runtime driven from Rust the way Go drives it: envelopes written into
//! request slots, descriptors pushed on the submission ring, completions popped from the other.

pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::Ordering::Relaxed;
pub(crate) use std::time::{Duration, Instant};

pub(crate) use crate::completion::now_ns;
pub(crate) use crate::config::{Config, Error};
pub(crate) use crate::envelope::{self, Envelope};
pub(crate) use crate::handler::{Context, Event, Handler, Registry};
pub(crate) use crate::layout::*;
pub(crate) use crate::outcome::{HandlerError, Outcome};
pub(crate) use crate::reply::CallError;
pub(crate) use crate::runtime::Runtime;
pub(crate) use crate::slots::Delivery;
pub(crate) use crate::standin::{Done, push_event, release, submit_delivery, try_completion};
pub(crate) use crate::stats::Stats;
pub(crate) use crate::sync::Ordering;

pub(crate) struct Echo;
impl Handler for Echo {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        Outcome::Reply(ev.data().to_vec())
    }
}
pub(crate) struct Boom;
impl Handler for Boom {
    async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
        panic!("boom")
    }
}
pub(crate) struct Forever;
impl Handler for Forever {
    async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
        std::future::pending::<()>().await;
        Outcome::Ack
    }
}
pub(crate) struct ColdStart;
impl Handler for ColdStart {
    async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
        Outcome::Ack
    }
    async fn warm_up(&self) -> Result<(), HandlerError> {
        Err(HandlerError::with_code("unavailable", "cache unreachable"))
    }
}

pub(crate) struct Nap;
impl Handler for Nap {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Outcome::Reply(ev.data().to_vec())
    }
}

pub(crate) struct Fork;
impl Handler for Fork {
    async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
        for i in 0..3 {
            let id = format!("{}/{i}", ev.id());
            if let Err(e) = cx.emit(&ev.follow_up("child", &id, ev.data())).await {
                return Outcome::Term(HandlerError::new(e.to_string()));
            }
        }
        Outcome::Ack
    }
}

/// Tells Go three times that it is still working, each pushing its deadline 10 s past that
/// moment, then outlives the deadline it was given and acks.
pub(crate) struct Patient;
impl Handler for Patient {
    async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
        let given = ev.deadline();
        for _ in 0..3 {
            cx.in_progress(Duration::from_secs(10)).await;
        }
        if let Some(given) = given {
            let left = given.saturating_sub(now_ns() as i64).max(0) as u64;
            tokio::time::sleep(Duration::from_nanos(left) + Duration::from_millis(10)).await;
        }
        Outcome::Ack
    }
}
/// Spawns a task that sets `fired` when the event's cancellation token fires, sets
/// `started`, and never finishes.
pub(crate) struct Watcher {
    pub(crate) started: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) fired: Arc<std::sync::atomic::AtomicBool>,
}
impl Handler for Watcher {
    async fn handle(&self, _ev: &Event<'_>, cx: &Context) -> Outcome {
        let (token, fired) = (cx.cancellation().clone(), self.fired.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            fired.store(true, Relaxed);
        });
        self.started.store(true, Relaxed);
        std::future::pending::<()>().await;
        Outcome::Ack
    }
}

pub(crate) struct Spray;
impl Handler for Spray {
    async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
        for ty in ["echo", "boom"] {
            let id = format!("{}/{ty}", ev.id());
            if let Err(e) = cx.emit(&ev.follow_up(ty, &id, b"local")).await {
                return Outcome::Term(HandlerError::new(e.to_string()));
            }
        }
        Outcome::Ack
    }
}

/// Fails every delivery, terminally, with the message "attempt N": the failure reaches Go
/// with the delivery number the handler saw.
pub(crate) struct Probe;
impl Handler for Probe {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        Outcome::Term(HandlerError::new(format!("attempt {}", ev.attempt())))
    }
}

/// Emits one follow-up, of the type its data names.
pub(crate) struct Relay;
impl Handler for Relay {
    async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
        let ty = std::str::from_utf8(ev.data()).unwrap_or("");
        let id = format!("{}/{ty}", ev.id());
        if let Err(e) = cx.emit(&ev.follow_up(ty, &id, b"")).await {
            return Outcome::Term(HandlerError::new(e.to_string()));
        }
        Outcome::Ack
    }
}

/// Calls the event type its data names (payload "ping") and replies with what came back:
/// "ok:<reply>", "failed:<code>:<runtime>:<handler>", or "err:<the CallError>".
pub(crate) struct Caller;
impl Handler for Caller {
    async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
        let ty = std::str::from_utf8(ev.data()).unwrap_or("");
        let id = format!("{}/call", ev.id());
        // By hand, not with follow_up: the call fills in what this event carries.
        let req = Envelope {
            id: &id,
            source: "/caller",
            ty,
            specversion: "1.0",
            data: b"ping",
            ..Envelope::default()
        };
        let said = match cx.call(&req).await {
            Ok(reply) => [b"ok:", reply.data()].concat(),
            Err(CallError::Failed(f)) => {
                format!("failed:{}:{}:{}", f.code, f.runtime, f.handler).into_bytes()
            }
            Err(e) => format!("err:{e}").into_bytes(),
        };
        Outcome::Reply(said)
    }
}

/// A runtime sized for tests: 4 slots each way, 1 KiB each.
pub(crate) fn small() -> Config {
    Config {
        workers: 2,
        sq_capacity: 16,
        cq_capacity: 8,
        req_slots: 4,
        rep_slots: 4,
        req_slot_size: 1024,
        rep_slot_size: 1024,
        ..Config::default()
    }
}

/// Waits until the test opens the gate (`notify_one`, which may come first), then replies
/// with the event's data.
pub(crate) struct Gate(pub(crate) Arc<tokio::sync::Notify>);
impl Handler for Gate {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        self.0.notified().await;
        Outcome::Reply(ev.data().to_vec())
    }
}

pub(crate) fn runtime() -> Runtime {
    runtime_with(|_| {})
}

/// The test runtime, with more handlers registered by `more`.
pub(crate) fn runtime_with(more: impl FnOnce(&mut Registry)) -> Runtime {
    let mut reg = Registry::new();
    more(&mut reg);
    reg.register("fork", "fork", Fork)
        .register("patient", "patient", Patient)
        .register("spray", "spray", Spray)
        .register("probe", "probe", Probe)
        .register("relay", "relay", Relay)
        .register("caller", "caller", Caller);
    reg.register("echo", "echo", Echo)
        .register("boom", "boom", Boom)
        .register("forever", "forever", Forever)
        .register("nap", "nap", Nap)
        .register_inline("echo.inline", "echo-inline", Echo)
        .register_inline("boom.inline", "boom-inline", Boom)
        .register_inline("nap.inline", "nap-inline", Nap)
        .register_inline("forever.inline", "forever-inline", Forever);
    let cfg = Config {
        spin: Duration::from_micros(20),
        ..small()
    };
    let mut rt = Runtime::new(cfg, reg).expect("runtime");
    rt.start().expect("start");
    rt
}

pub(crate) fn envelope(ty: &str, data: &[u8]) -> Vec<u8> {
    envelope::encode_to_vec(&Envelope {
        id: "1",
        source: "/test",
        ty,
        specversion: "1.0",
        data,
        ..Envelope::default()
    })
}

/// Plays Go's part: writes `bytes` into request slot `slot` and publishes it.
pub(crate) fn submit(rt: &Runtime, slot: u32, bytes: &[u8]) {
    submit_to(rt, slot, bytes, 0)
}

/// As `submit`, naming the handler (1 + its index in event-type order; 0: by type).
pub(crate) fn submit_to(rt: &Runtime, slot: u32, bytes: &[u8], route: u32) {
    submit_delivery(rt, slot, bytes, route, first_delivery())
}

/// The header Go writes for a first delivery with no deadline.
pub(crate) fn first_delivery() -> Delivery {
    Delivery {
        attempt: 1,
        deadline: None,
        waited: false,
        timed: true,
        shadow: false,
        cancellable: false,
    }
}

/// A first delivery due `ms` milliseconds from now.
pub(crate) fn due_in(ms: i64) -> Delivery {
    Delivery {
        attempt: 1,
        deadline: Some(now_ns() as i64 + ms * 1_000_000),
        waited: false,
        timed: true,
        shadow: false,
        cancellable: false,
    }
}

/// Plays Go's answer to a call (`TANDEM_CQE_CALL` record `call`): writes `bytes` into the
/// call's reply slot and hands it back with the outcome.
pub(crate) fn answer_call(rt: &Runtime, call: &Done, outcome: u32, bytes: &[u8]) {
    let s = &rt.shared;
    s.completions.replies.write_as_go(call.reply_slot, bytes);
    assert!(s.sq.push(|d| {
        d.kind.store(TANDEM_SQE_REPLY, Ordering::Relaxed);
        d.token.store(call.token, Ordering::Relaxed);
        d.slot.store(call.reply_slot, Ordering::Relaxed);
        d.len.store(bytes.len() as u32, Ordering::Relaxed);
        d.flags.store(outcome, Ordering::Relaxed);
    }));
    if s.sq.take_wakeup() {
        s.wake_rust.signal();
    }
}

/// Plays Go's cancel of the delivery it published with `token` (`TANDEM_SQE_CANCEL`).
pub(crate) fn cancel(rt: &Runtime, token: u64) {
    let s = &rt.shared;
    assert!(s.sq.push(|d| {
        d.kind.store(TANDEM_SQE_CANCEL, Ordering::Relaxed);
        d.token.store(token, Ordering::Relaxed);
    }));
    if s.sq.take_wakeup() {
        s.wake_rust.signal();
    }
}

/// Releases like Go: lazily, waking the consumer only while a writer waits for a reply slot.
/// True if it woke the consumer.
pub(crate) fn release_lazily(rt: &Runtime, reply_slot: u32) -> bool {
    let s = &rt.shared;
    assert!(s.sq.push(|d| {
        d.kind.store(TANDEM_SQE_RELEASE, Ordering::Relaxed);
        d.slot.store(reply_slot, Ordering::Relaxed);
    }));
    let wake = s.sq.is_hungry() && s.sq.take_wakeup();
    if wake {
        s.wake_rust.signal();
    }
    wake
}

/// The next completion that is not a log batch (Go's poller hands those to its logger; a
/// test running beside one that enables logs may see them). Log batches are released.
pub(crate) fn next_completion(rt: &Runtime) -> Done {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_completion(rt) {
            Some(done) if done.kind == TANDEM_CQE_LOG => release(rt, done.reply_slot),
            Some(done) => return done,
            None => {
                assert!(Instant::now() < deadline, "no completion within 10 s");
                std::thread::yield_now();
            }
        }
    }
}

/// Waits, up to 10 s, until `cond` holds; fails naming `what` it waited for.
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "after 10 s, still waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// Takes the next completion, which must be a retryable "cancelled" (a handler stopped at
/// shutdown), and releases its reply slot.
pub(crate) fn expect_cancelled(rt: &Runtime) {
    let done = next_completion(rt);
    assert_eq!(done.kind, TANDEM_OUTCOME_RETRY);
    assert_eq!(
        crate::envelope::decode_error(&done.reply).unwrap().code,
        crate::code::CANCELLED
    );
    release(rt, done.reply_slot);
}

/// The next completion of any kind, log batches included.
pub(crate) fn next_any(rt: &Runtime) -> Done {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(done) = try_completion(rt) {
            return done;
        }
        assert!(Instant::now() < deadline, "no completion within 10 s");
        std::thread::yield_now();
    }
}

/// Decodes a log batch as Go does: the dropped count, then one map per record.
pub(crate) fn log_messages(batch: &[u8]) -> Vec<String> {
    log_records(batch).into_iter().map(|r| r.message).collect()
}

/// One log record as Go reads it.
pub(crate) struct LogLine {
    pub(crate) level: u8,
    pub(crate) message: String,
    pub(crate) fields: Vec<(String, String)>,
}

impl LogLine {
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes a log batch's records, level, message and fields.
pub(crate) fn log_records(batch: &[u8]) -> Vec<LogLine> {
    let mut d = minicbor::Decoder::new(batch);
    d.u64().expect("dropped count");
    let mut out = Vec::new();
    while d.position() < batch.len() {
        let n = d.map().expect("record").expect("definite map");
        let mut line = LogLine {
            level: 0,
            message: String::new(),
            fields: Vec::new(),
        };
        for _ in 0..n {
            match d.u8().expect("key") {
                0 => line.level = d.u8().expect("level"),
                2 => line.message = d.str().expect("message").to_owned(),
                4 => {
                    let m = d.map().expect("fields").expect("definite map");
                    for _ in 0..m {
                        let k = d.str().expect("field name").to_owned();
                        line.fields
                            .push((k, d.str().expect("field value").to_owned()));
                    }
                }
                _ => d.skip().expect("value"),
            }
        }
        out.push(line);
    }
    out
}

/// Asserts every slot came back to its owner, with no protocol violation.
pub(crate) fn assert_no_buffer_held(rt: &Runtime) -> Stats {
    // Log batches published at shutdown go back as Go's poller would release them.
    while let Some(done) = try_completion(rt) {
        assert_eq!(done.kind, TANDEM_CQE_LOG, "a completion nobody consumed");
        release(rt, done.reply_slot);
    }
    let st = rt.stats();
    assert_eq!(
        (
            st.requests_held,
            st.replies_lent,
            st.violations,
            st.calls_pending,
            st.call_replies_held
        ),
        (0, 0, 0, 0, 0),
        "{st:?}"
    );
    st
}

pub(crate) fn assert_whole(rt: &mut Runtime) -> Stats {
    rt.shutdown(Duration::from_secs(1));
    assert_no_buffer_held(rt)
}
